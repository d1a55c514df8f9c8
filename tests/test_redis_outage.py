"""`nurture scheduler` and `nurture worker` outlive Redis: killed while a send job runs and
again while the worker is idle, both processes carry on, say once when each outage starts and
once when it ends, and every due email arrives once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from flaky_smtp import FlakyServer
from live_sending import leads_due_now, nurture, sent_count
from redis_server import RedisServer
from sqlalchemy import select

from engine.sending.models import OutboxMessage
from worker.outage import FIRST_WAIT, LONGEST_WAIT, Outage, wait_for

EMAILS = 300
MORE = 50
OUTAGE_SECONDS = 3
TIME_LIMIT = 120



def _wait_until(condition, what: str, limit: float = TIME_LIMIT) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_the_scheduler_and_a_worker_outlive_two_redis_outages_mid_send(
        db, database_url, sample_program, tmp_path):
    leads_due_now(db, sample_program, tmp_path, EMAILS)

    redis = RedisServer(tmp_path)
    processes: dict[str, subprocess.Popen] = {}
    with FlakyServer() as smtp:
        smtp.handler.data_delay = 0.02  # about 40 a second: the job runs through the outages
        try:
            redis.start()
            env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis.url,
                   "SMTP_URL": f"smtp://127.0.0.1:{smtp.port}?timeout=5",
                   "NURTURE_INSTANCE": str(tmp_path / "instance"), "SECRET_KEY": "outage-test"}
            for name, args in (("scheduler", ("scheduler", "--interval", "0.3")),
                               ("worker", ("worker", "--queues", "send"))):
                with open(tmp_path / f"{name}.log", "wb") as log:
                    processes[name] = subprocess.Popen(nurture(*args), env=env, stdout=log,
                                                       stderr=subprocess.STDOUT, cwd=tmp_path)
            worker_log, scheduler_log = tmp_path / "worker.log", tmp_path / "scheduler.log"

            def both_said(times: int) -> bool:
                return all(_said(log, "Redis reachable again") >= times
                           for log in (worker_log, scheduler_log))

            # 1. Mid-job: Redis dies while the send job runs and is still down when it ends.
            _wait_until(lambda: sent_count(db) >= 20, "sending to get under way")
            redis.stop()
            _wait_until(lambda: sent_count(db) == EMAILS, "the job to send everything without Redis")
            time.sleep(1)  # the job ends: RQ cannot record it and its worker quits
            redis.start()
            _wait_until(lambda: both_said(1), "both processes to see Redis again", limit=60)
            # 2. Idle: the worker waits for a job in RQ's own reconnect loop.
            redis.stop()
            time.sleep(OUTAGE_SECONDS)
            redis.start()
            _wait_until(lambda: both_said(2), "both processes to see Redis again", limit=60)
            # Both carry on: new leads are sent.
            leads_due_now(db, sample_program, tmp_path, MORE, prefix="late")
            _wait_until(lambda: sent_count(db) == EMAILS + MORE, "the new leads' emails")
            alive = {name: process.poll() is None for name, process in processes.items()}
            for process in processes.values():
                process.send_signal(signal.SIGTERM)  # a stop request still stops them
            exits = {name: process.wait(timeout=20) for name, process in processes.items()}
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)
            redis.stop_for_good()
        received = Counter(smtp.handler.received)

    assert alive == {"scheduler": True, "worker": True}
    assert exits == {"scheduler": 0, "worker": 0}  # SIGTERM still stops both cleanly
    for log in (scheduler_log, worker_log):  # once when each outage starts, once when it ends
        assert _said(log, "Redis unreachable") == _said(log, "Redis reachable again") == 2
    assert _said(worker_log, "started with PID") == 2  # a new RQ worker after the mid-job one
    assert "Traceback" not in worker_log.read_text(encoding="utf-8", errors="replace")
    assert "could not connect to Redis" not in worker_log.read_text(encoding="utf-8")
    with db.session() as s:
        expected = Counter(s.scalars(select(OutboxMessage.message_id)))
    assert received == expected and len(expected) == EMAILS + MORE  # each once


def _said(log: Path, text: str) -> int:
    return log.read_text(encoding="utf-8", errors="replace").count(text)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_said_once_when_it_starts_and_once_when_it_ends_with_back_off():
    said: list[str] = []
    clock = _Clock()
    outage = Outage("Redis", said.append, clock=clock)
    error = ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    outage.noticed(error)  # a watcher saw it first
    waits = [outage.failed(error) for _ in range(9)]
    assert waits[0] == FIRST_WAIT and waits == sorted(waits) and waits[-1] == LONGEST_WAIT
    assert said == [("Redis unreachable (Error 111 connecting to 127.0.0.1:6379. Connection "
                     f"refused.): retrying with back-off up to {LONGEST_WAIT:g}s; the rows wait "
                     "in the database")]
    clock.now += 42
    outage.recovered()
    outage.recovered()
    assert said[1:] == ["Redis reachable again after 42s"]
    assert outage.failed(error) == FIRST_WAIT  # a new outage starts over
    assert len(said) == 3


def test_waiting_for_redis_retries_with_growing_pauses_until_it_answers():
    import redis.exceptions

    said: list[str] = []
    pauses: list[float] = []
    answers = iter([redis.exceptions.ConnectionError("refused")] * 4 + [True])

    def ping():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    wait_for(ping, Outage("Redis", said.append), redis.exceptions.TimeoutError("timed out"),
             sleep=pauses.append)
    assert pauses == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert [line.split(" (")[0] for line in said] == ["Redis unreachable",
                                                     "Redis reachable again after 0s"]


def test_one_tick_with_redis_down_fails_with_a_clear_message(cli, monkeypatch):
    from engine.sending.sink import free_port

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nobody listens
    result = cli("scheduler", "--once")
    assert result.exit_code == 1
    assert "tick failed: Error 111 connecting to 127.0.0.1" in result.output


@pytest.fixture
def fresh_job_settings():
    """The jobs read their settings once per process: this test's must not stay behind."""
    from worker import jobs

    cached = (jobs._database, jobs._transport, jobs._delivery_options)
    for function in cached:
        function.cache_clear()
    yield
    for function in cached:
        function.cache_clear()


def test_a_worker_refuses_a_lease_shorter_than_the_smtp_timeout(cli, monkeypatch,
                                                                fresh_job_settings):
    monkeypatch.setenv("SMTP_URL", "smtp://127.0.0.1:2525?timeout=30")
    monkeypatch.setenv("NURTURE_SEND_LEASE_SECONDS", "10")
    result = cli("worker", "--queues", "send", "--burst")
    assert result.exit_code == 1
    assert "NURTURE_SEND_LEASE_SECONDS=10 is shorter than the SMTP timeout (30 s)" in result.output


def test_advisory_calls_skip_redis_for_a_moment_after_it_failed():
    import redis.exceptions

    from engine.redis_breaker import ShortCircuit

    calls: list[str] = []

    class Flaky:
        down = True

        def get(self, key):
            calls.append(key)
            if self.down:
                raise redis.exceptions.ConnectionError("refused")
            return b"1"

    clock = _Clock()
    client = Flaky()
    guarded = ShortCircuit(client, pause=2.0, clock=clock)
    for _ in range(3):
        with pytest.raises(redis.exceptions.ConnectionError):
            guarded.get("k")
    assert calls == ["k"]  # tried once, then skipped without waiting for a timeout
    client.down = False
    clock.now += 2.0
    assert guarded.get("k") == b"1" and len(calls) == 2
