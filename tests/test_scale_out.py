"""Scale-out as the README describes it: one `nurture scheduler` and two `nurture worker`
processes on PostgreSQL and Redis deliver 5,000 due emails to the sink, each exactly once, and
stop cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter

import pytest
from live_sending import leads_due_now, nurture, sent_count
from redis_server import RedisServer
from sqlalchemy import select

from engine.db import Database
from engine.sending.models import OutboxMessage
from engine.sending.sink import Sink

EMAILS = 5000
WORKERS = 2
TIME_LIMIT = 300  # seconds; CI's PostgreSQL takes well under a minute


def test_two_workers_and_a_scheduler_deliver_5000_emails_exactly_once(
        postgres_only_url, sample_program, tmp_path):
    db = Database(postgres_only_url)
    leads_due_now(db, sample_program, tmp_path, EMAILS)

    redis = RedisServer(tmp_path)
    sink = Sink(tmp_path / "sink")
    processes: list[subprocess.Popen] = []
    try:
        sink.start()
        redis.start()
        env = {**os.environ, "DATABASE_URL": postgres_only_url, "REDIS_URL": redis.url,
               "SMTP_URL": sink.url, "NURTURE_INSTANCE": str(tmp_path / "instance"),
               "SECRET_KEY": "scale-out-test"}
        for name, args in [("scheduler", ("scheduler", "--interval", "0.5"))] + [
                (f"worker-{n}", ("worker",)) for n in range(WORKERS)]:
            with open(tmp_path / f"{name}.log", "wb") as log:
                processes.append(subprocess.Popen(nurture(*args), env=env, stdout=log,
                                                  stderr=subprocess.STDOUT, cwd=tmp_path))
        begin = time.monotonic()
        while sent_count(db) < EMAILS:
            assert all(p.poll() is None for p in processes), "a process exited"
            if time.monotonic() - begin > TIME_LIMIT:
                pytest.fail(f"{sent_count(db)} of {EMAILS} sent after {TIME_LIMIT}s "
                            f"(logs in {tmp_path})")
            time.sleep(0.5)
        elapsed = time.monotonic() - begin
        for process in processes:
            process.send_signal(signal.SIGTERM)
        exits = [process.wait(timeout=30) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        redis.stop_for_good()
        sink.stop()

    with db.session() as s:
        rows = s.execute(select(OutboxMessage.message_id, OutboxMessage.status,
                                OutboxMessage.claimed_by, OutboxMessage.delivery_unknown)).all()
    db.dispose()
    assert exits == [0] * (1 + WORKERS)  # the scheduler and the workers stop cleanly on SIGTERM
    assert Counter(row.status for row in rows) == {"sent": EMAILS}
    arrived = Counter(stored.message_id for stored in sink.messages())
    assert arrived == Counter(row.message_id for row in rows)  # each exactly once
    assert not any(row.delivery_unknown for row in rows)
    by_worker = Counter(row.claimed_by.rpartition(":")[2] for row in rows)
    assert len(by_worker) == WORKERS  # both worked
    print(f"\nscale-out: {EMAILS} emails by {WORKERS} workers in {elapsed:.1f}s "
          f"({EMAILS / elapsed:.0f}/s), split {sorted(by_worker.values())}")


