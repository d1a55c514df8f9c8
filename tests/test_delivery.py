"""Delivering the outbox through the real SMTP transport into the real local sink."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from launching import launch_all
from smtp_sink import REPLIES
from sqlalchemy import select

from engine.flows.leads import upsert_lead
from engine.journeys.models import Enrollment
from engine.leads.models import Lead
from engine.programs.service import load_program
from engine.sending.delivery import deliver_due
from engine.sending.inbox import read_message
from engine.sending.models import OutboxMessage, Suppression
from engine.sending.sink import Sink
from engine.sending.suppression import suppress

MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # 09:00 in Paris


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def sink(tmp_path):
    with Sink(tmp_path / "sink", replies=REPLIES) as server:
        yield server


@pytest.fixture
def transport(sink):
    transport = sink.transport()
    yield transport
    transport.close()


def add(db, email, first_name="Ada", **fields):
    with db.session() as s:
        upsert_lead(session=s, fields={"email": email, "first_name": first_name, "title": "CIO",
                                       "timezone": "Europe/Paris", **fields},
                    now=MONDAY, actor="test", program="acme-nurture")


@pytest.fixture
def program(db, sample_program):
    with db.session() as s:
        load_program(session=s, directory=sample_program, now=MONDAY)
        launch_all(s)


def rows(db):
    with db.session() as s:
        return {r.lead_id: r for r in s.scalars(select(OutboxMessage))}


def test_due_sends_arrive_personalised_once_with_the_outbox_message_id(db, program, sink, transport):
    add(db, "ada@globex.example")
    add(db, "bo@initech.example", first_name="Bo")
    clock = Clock(MONDAY + timedelta(seconds=5))
    report = deliver_due(db=db, transport=transport, worker="w1", clock=clock)
    assert report.counts == {"sent": 2}
    again = deliver_due(db=db, transport=transport, worker="w2", clock=clock)
    assert not again.counts  # a job that runs twice sends once
    [stored] = sink.messages(to="ada@globex.example")
    assert stored.subject == "Welcome, Ada"
    message = read_message(sink.directory, stored)
    with db.session() as s:  # ada's email (bo got the same step)
        ada = s.scalar(select(Lead.id).where(Lead.email == "ada@globex.example"))
    assert message["Message-ID"] == rows(db)[ada].message_id
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert {r.status for r in rows(db).values()} == {"sent"}


def test_hard_bounce_suppresses_the_address_and_ends_its_journey(db, program, transport):
    add(db, "bounce@globex.example")
    report = deliver_due(db=db, transport=transport, worker="w1", clock=Clock(MONDAY))
    assert report.counts == {"failed_perm": 1}
    with db.session() as s:
        assert s.scalar(select(Suppression.reason)) == "bounced"
        assert s.scalar(select(Enrollment.status)) == "exited"
        assert s.scalar(select(OutboxMessage.last_error)).startswith("550")


def test_temporary_failures_are_retried_with_backoff(db, program, transport):
    add(db, "later@globex.example")
    clock = Clock(MONDAY)
    assert deliver_due(db=db, transport=transport, worker="w1", clock=clock).counts == {"failed_temp": 1}
    [row] = rows(db).values()
    assert row.status == "failed_temp" and row.due_at == MONDAY + timedelta(minutes=1)
    assert not deliver_due(db=db, transport=transport, worker="w1", clock=clock).counts
    clock.now = MONDAY + timedelta(minutes=2)
    deliver_due(db=db, transport=transport, worker="w1", clock=clock)
    [row] = rows(db).values()
    assert row.attempts == 2 and row.due_at == clock.now + timedelta(minutes=5)


def test_suppressed_and_unconsented_leads_are_skipped_and_nothing_is_sent(db, program, sink, transport):
    add(db, "gone@globex.example")
    add(db, "nope@globex.example", consent="no")
    with db.session() as s:
        suppress(session=s, email="GONE@globex.example", reason="unsubscribed", source="test", now=MONDAY)
    report = deliver_due(db=db, transport=transport, worker="w1", clock=Clock(MONDAY))
    assert report.counts == {"skipped": 2}
    assert sorted(r.skip_reason for r in rows(db).values()) == [
        "consent withdrawn", "suppressed: unsubscribed"]
    assert sink.messages() == []


def test_a_send_claimed_after_hours_is_held_to_the_next_morning(db, program, sink, transport):
    add(db, "ada@globex.example")
    evening = datetime(2026, 11, 2, 18, 0, tzinfo=UTC)  # 19:00 in Paris
    report = deliver_due(db=db, transport=transport, worker="w1", clock=Clock(evening))
    assert report.counts == {"held": 1}
    [row] = rows(db).values()
    assert row.status == "pending" and row.due_at == datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
    assert row.last_error == "held: outside the send window"
    assert sink.messages() == []


@pytest.fixture
def throttle(tmp_path):
    from engine.config import Settings, redis_connection
    from engine.sending.throttle import RedisThrottle

    redis = redis_connection(Settings.from_env({"NURTURE_INSTANCE": str(tmp_path / "r"),
                                                "SECRET_KEY": "x"}))
    return RedisThrottle(redis, global_per_minute=3, per_domain_per_minute=2)


def test_throttles_hold_sends_past_the_per_domain_and_global_rates(db, program, sink, transport,
                                                                    throttle):
    from engine.sending.delivery import DeliveryOptions

    for name in ("a", "b", "c"):
        add(db, f"{name}@globex.example")
    add(db, "d@initech.example")
    add(db, "e@initech.example")
    clock = Clock(MONDAY + timedelta(seconds=5))
    options = DeliveryOptions(throttle=throttle)
    report = deliver_due(db=db, transport=transport, worker="w1", clock=clock, options=options)
    assert report.counts == {"sent": 3, "held": 2}  # 2 for globex, 1 for initech, then global
    held = [r for r in rows(db).values() if r.status == "pending"]
    assert {r.due_at for r in held} == {MONDAY + timedelta(minutes=1)}
    assert {r.last_error for r in held} >= {"held: throttled: globex.example"}
    clock.now = MONDAY + timedelta(minutes=1, seconds=5)
    report = deliver_due(db=db, transport=transport, worker="w1", clock=clock, options=options)
    assert report.counts == {"sent": 2}
    assert len(sink.messages()) == 5


def test_a_throttling_reply_backs_off_the_domain(db, program, sink, transport, throttle):
    from engine.sending.delivery import DeliveryOptions

    add(db, "gmail-throttle@mail.example")
    add(db, "second@mail.example")
    options = DeliveryOptions(throttle=throttle)
    clock = Clock(MONDAY)
    report = deliver_due(db=db, transport=transport, worker="w1", clock=clock, options=options,
                         limit=1)
    assert report.counts == {"failed_temp": 1}
    [row] = [r for r in rows(db).values() if r.status == "failed_temp"]
    assert row.due_at == MONDAY + timedelta(minutes=5)  # the back-off, longer than the 1 min retry
    report = deliver_due(db=db, transport=transport, worker="w1", clock=clock, options=options)
    assert report.counts == {"held": 1}  # mail.example is backed off: the other lead waits too
    assert sink.messages() == []


def test_with_redis_down_set_limits_hold_sends_and_no_limits_let_them_go(db, program, sink,
                                                                         transport):
    from engine.config import Settings, redis_connection
    from engine.sending.delivery import DeliveryOptions
    from engine.sending.sink import free_port
    from engine.sending.throttle import UNCHECKED_RETRY, RedisThrottle

    down = redis_connection(Settings.from_env({  # nobody listens; as the worker's, no retries
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "SECRET_KEY": "x"}), timeout=0.5)
    add(db, "ada@globex.example")
    clock = Clock(MONDAY + timedelta(seconds=5))
    limited = DeliveryOptions(throttle=RedisThrottle(down, global_per_minute=100))
    report = deliver_due(db=db, transport=transport, worker="w1", clock=clock, options=limited)
    assert report.counts == {"held": 1}  # the shared limit cannot be checked: it waits
    [row] = rows(db).values()
    assert (row.status, row.attempts, row.due_at) == ("pending", 0, clock.now + UNCHECKED_RETRY)
    clock.now += UNCHECKED_RETRY
    unlimited = DeliveryOptions(throttle=RedisThrottle(down))
    report = deliver_due(db=db, transport=transport, worker="w1", clock=clock, options=unlimited)
    assert report.counts == {"sent": 1} and len(sink.messages()) == 1


def test_list_unsubscribe_carries_a_signed_one_click_url_only(db, program, sink, transport):
    from engine.sending.compose import Signing
    from engine.sending.delivery import DeliveryOptions
    from engine.tracking.tokens import verify

    add(db, "ada@globex.example")
    options = DeliveryOptions(signing=Signing(secret_key="s3cret"))
    deliver_due(db=db, transport=transport, worker="w1", clock=Clock(MONDAY), options=options)
    [stored] = sink.messages()
    message = read_message(sink.directory, stored)
    header = message["List-Unsubscribe"].strip()
    assert header.startswith("<") and header.endswith(">") and "," not in header  # no mailto
    https = header.strip("<>")
    assert https.startswith("http://localhost:5000/u/")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = https.rsplit("/", 1)[1]
    [row] = rows(db).values()
    assert verify("s3cret", "unsubscribe", token) == {"l": row.lead_id, "o": row.id}
    assert verify("other-secret", "unsubscribe", token) is None
    assert verify("s3cret", "unsubscribe", token[:-2] + "xx") is None
    assert verify("s3cret", "page", token) is None  # a token is good for its purpose only
    body = read_message(sink.directory, stored).get_body(("plain",)).get_content()
    assert f"/u/{token}" in body  # the link in the email is the same signed one
