"""Sales notifications reach a person: each MQL, trigger and SLA escalation is emailed (through a
real SMTP sink) to the lead's owner, `sla.escalate_to` or NURTURE_SALES_EMAIL, as operational
mail: no tracking, no suppression or frequency cap. Delivery is an outbox: marked sent only
after the 250, retried after a temporary failure, sent once however many workers run."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from responses import response
from sqlalchemy import select

from engine.flows.leads import upsert_lead
from engine.leads.models import Lead
from engine.programs.service import load_program
from engine.sales.models import NotificationStatus, SalesNotification
from engine.sales.notify import MAX_ATTEMPTS, NotifyOptions, claim, deliver_due
from engine.sales.service import accept
from engine.sales.sla import check_slas
from engine.sending.inbox import read_message
from engine.sending.models import OutboxMessage
from engine.sending.sink import Sink
from engine.sending.suppression import suppress

MONDAY = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # 11:00 in Paris, inside the send window
DAY = timedelta(days=1)
SALES = "sales@acme.example"
ESCALATE_TO = "sales-manager@acme.example"  # the sample's sla.escalate_to
OPTIONS = NotifyOptions(sales_email=SALES, base_url="https://nurture.acme.example")


@pytest.fixture
def sink(tmp_path):
    with Sink(tmp_path / "sink", replies={"later@": "451 4.3.0 Try again later",
                                          "nobody@": "550 5.1.1 No such user"}) as server:
        yield server


@pytest.fixture
def world(db, sample_program):
    with db.session() as s:
        load_program(session=s, directory=sample_program, now=MONDAY - DAY)
    return db


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def mql(db, email: str = "ada@globex.example", now: datetime = MONDAY, **fields) -> int:
    """A lead made an MQL by its score at `now` (fit 15, two clicks and a pricing visit 43)."""
    with db.session() as s:
        lead, _ = upsert_lead(session=s, now=now, actor="test", program="acme-nurture",
                              fields={"email": email, "title": "IT Director",
                                      "company": "Globex", **fields})
        for kind, detail in (("click", "welcome_it"), ("click", "guide_it"),
                             ("page_view", "pricing")):
            response(s, lead, kind, detail, now)
        assert lead.stage == "mql"
        return lead.id


def deliver(db, sink, now: datetime = MONDAY, options: NotifyOptions = OPTIONS,
            worker: str = "w1") -> dict:
    transport = sink.transport()
    try:
        return dict(deliver_due(db=db, transport=transport, worker=worker, clock=Clock(now),
                                options=options))
    finally:
        transport.close()


def notes(db) -> list[SalesNotification]:
    with db.session() as s:
        return list(s.scalars(select(SalesNotification).order_by(SalesNotification.id)))


def mail(sink, to: str):
    [stored] = sink.messages(to=to)
    return read_message(sink.directory, stored)


def test_an_mql_is_emailed_to_the_sales_address_saying_what_happened(world, sink):
    lead_id = mql(world, company="Globex\nInc")  # a line break must not reach a header
    assert deliver(world, sink) == {"sent": 1}
    message = mail(sink, SALES)
    assert message["Subject"] == "New MQL: ada@globex.example (Globex Inc), score 58"
    assert message["From"] == "Acme Cloud <hello@acme.example>"  # the program's sender
    assert message["Auto-Submitted"] == "auto-generated"
    [note] = notes(world)
    assert message["Message-ID"] == f"<sales-notification.{note.id}@acme.example>"
    body = message.get_content()
    assert "A lead qualified (MQL) and is handed to sales." in body
    assert "Lead:    ada@globex.example" in body and "Company: Globex Inc" in body
    assert "Score:   58 now" in body
    assert "What:    score 58 reached the MQL threshold 55" in body
    assert "nurture leads explain ada@globex.example" in body
    assert f"https://nurture.acme.example/api/v1/leads/{lead_id}/explain" in body
    assert "nurture sales accept ada@globex.example --by YOU" in body
    # Operational mail: plain text, nothing tracked, no unsubscribe.
    assert not message.is_multipart() and message.get_content_type() == "text/plain"
    assert message["List-Unsubscribe"] is None
    assert "/c/" not in body and "/o/" not in body
    assert (note.status, note.recipient, note.sent_at, note.attempts, note.last_error) == (
        NotificationStatus.SENT, SALES, MONDAY, 1, None)
    assert deliver(world, sink) == {}  # sent: never again
    assert len(sink.messages()) == 1


def test_an_escalation_goes_to_sla_escalate_to(world, sink):
    mql(world)
    deliver(world, sink)
    with world.session() as s:
        check_slas(session=s, now=MONDAY + 15 * DAY)
    assert deliver(world, sink, MONDAY + 15 * DAY) == {"sent": 1}
    message = mail(sink, ESCALATE_TO)
    assert message["Subject"] == "SLA escalation: ada@globex.example (Globex), MQL unanswered"
    body = message.get_content()
    assert "Nobody has answered this MQL within the SLA" in body
    assert "What:    MQL unanswered for 15 days (SLA 14 days)" in body
    assert "Score:   " in body and "nurture sales reject ada@globex.example" in body
    assert [(n.kind, n.recipient) for n in notes(world)] == [("mql", SALES),
                                                              ("escalation", ESCALATE_TO)]


def test_a_trigger_on_an_owned_lead_goes_to_its_owner(world, sink):
    lead_id = mql(world)
    with world.session() as s:
        lead = s.get(Lead, lead_id)
        accept(session=s, lead=lead, actor="rita@acme.example", now=MONDAY + DAY)
        response(s, lead, "form_submitted", "demo", MONDAY + 2 * DAY)  # a demo request
    assert deliver(world, sink, MONDAY + 2 * DAY) == {"sent": 2}
    message = mail(sink, "rita@acme.example")
    assert message["Subject"] == ("Sales alert: ada@globex.example (Globex): trigger "
                                  "form_submitted page demo: route to sales")
    body = message.get_content()
    assert "Stage:   sal" in body and "Owner:   rita@acme.example" in body
    assert "nurture sales accept" not in body  # only an MQL is answered


def test_an_owner_that_is_not_an_address_falls_back_to_the_sales_address(world, sink):
    lead_id = mql(world)
    with world.session() as s:
        accept(session=s, lead=s.get(Lead, lead_id), actor="sam", now=MONDAY + DAY)
        response(s, s.get(Lead, lead_id), "form_submitted", "demo", MONDAY + 2 * DAY)
    deliver(world, sink, MONDAY + 2 * DAY)
    assert [(n.kind, n.owner, n.recipient) for n in notes(world)] == [
        ("mql", None, SALES), ("trigger", "sam", SALES)]


def test_suppression_and_the_frequency_cap_do_not_apply(world, sink):
    with world.session() as s:
        for address in (SALES, "ada@globex.example"):
            suppress(session=s, email=address, reason="unsubscribed", source="test",
                     now=MONDAY)
    mql(world)
    with world.session() as s:  # the lead had its cap of marketing mail this week
        lead = s.scalar(select(Lead))
        for n in range(3):
            s.add(OutboxMessage(enrollment_id=1, lead_id=lead.id, program_id=1,
                                program_version=1, step=f"extra{n}", status="sent",
                                due_at=MONDAY, sent_at=MONDAY, attempts=1, created_at=MONDAY,
                                updated_at=MONDAY, message_id=f"<x{n}@acme.example>"))
    assert deliver(world, sink) == {"sent": 1}
    assert len(sink.messages(to=SALES)) == 1


def test_nobody_to_send_it_to_is_recorded_and_listed(world, sink, cli):
    mql(world)
    assert deliver(world, sink, options=NotifyOptions()) == {"skipped": 1}
    [note] = notes(world)
    assert note.status == NotificationStatus.SKIPPED
    assert note.last_error == "nobody owns the lead, and NURTURE_SALES_EMAIL is not set"
    assert sink.messages() == []
    assert deliver(world, sink) == {}  # skipped for good: not sent once an address is set
    out = cli("sales", "notifications").stdout
    assert "  not emailed: nobody owns the lead, and NURTURE_SALES_EMAIL is not set" in out


def test_a_bad_sales_address_is_named(world, sink):
    mql(world)
    assert deliver(world, sink, options=NotifyOptions(sales_email="sales team")) == {
        "skipped": 1}
    assert notes(world)[0].last_error == (
        "nobody owns the lead, and NURTURE_SALES_EMAIL 'sales team' is not one either")


def test_a_temporary_failure_is_retried_later_and_then_sent(world, sink, cli):
    mql(world)
    later = NotifyOptions(sales_email="later@acme.example")
    assert deliver(world, sink, options=later) == {"retry": 1}
    [note] = notes(world)
    assert (note.status, note.attempts, note.recipient, note.retry_at) == (
        NotificationStatus.PENDING, 1, "later@acme.example", MONDAY + timedelta(minutes=1))
    assert note.last_error == "451 4.3.0 Try again later"
    out = cli("sales", "notifications").stdout
    assert ("waiting to be emailed: attempt 1 to later@acme.example failed (451 4.3.0 Try "
            "again later), next try 2026-11-02T10:01") in out
    assert deliver(world, sink, MONDAY + timedelta(seconds=30), options=later) == {}  # not yet
    sink.handler.replies.clear()  # the server is back
    assert deliver(world, sink, MONDAY + timedelta(minutes=1), options=later) == {"sent": 1}
    [note] = notes(world)
    assert (note.status, note.attempts, note.last_error) == (NotificationStatus.SENT, 2, None)
    assert len(sink.messages(to="later@acme.example")) == 1
    assert "  emailed to later@acme.example at 2026-11-02T10:01" in cli(
        "sales", "notifications").stdout


def test_temporary_failures_give_up_after_max_attempts(world, sink):
    mql(world)
    later = NotifyOptions(sales_email="later@acme.example")
    now = MONDAY
    for _ in range(MAX_ATTEMPTS):
        assert len(deliver(world, sink, now, options=later)) == 1
        now = notes(world)[0].retry_at or now
    [note] = notes(world)
    assert (note.status, note.attempts) == (NotificationStatus.FAILED, MAX_ATTEMPTS)
    assert note.last_error == f"gave up after {MAX_ATTEMPTS} attempts: 451 4.3.0 Try again later"
    assert deliver(world, sink, now + 30 * DAY, options=later) == {}


def test_a_permanent_refusal_is_recorded_and_not_retried(world, sink, cli):
    mql(world)
    refused = NotifyOptions(sales_email="nobody@acme.example")
    assert deliver(world, sink, options=refused) == {"failed": 1}
    [note] = notes(world)
    assert (note.status, note.last_error) == (NotificationStatus.FAILED,
                                              "550 5.1.1 No such user")
    assert deliver(world, sink, MONDAY + DAY, options=refused) == {}
    assert ("  not emailed to nobody@acme.example: 550 5.1.1 No such user"
            in cli("sales", "notifications").stdout)


def test_workers_running_at_once_send_each_notification_once(world, sink):
    for n in range(6):
        mql(world, f"lead{n}@globex.example")
    start = threading.Barrier(3)
    results: list[dict] = []

    def worker(name: str) -> None:
        start.wait()
        results.append(deliver(world, sink, worker=name))

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(r.get("sent", 0) for r in results) == 6
    assert len(sink.messages()) == 6
    assert all(n.status == NotificationStatus.SENT for n in notes(world))


def test_a_dead_workers_claim_is_taken_over_after_its_lease_and_its_late_answer_ignored(
        world, sink):
    mql(world)
    [note] = notes(world)
    with world.session() as s:  # w1 claims it, then dies before sending
        assert claim(session=s, notification_id=note.id, worker="w1", now=MONDAY)
    assert deliver(world, sink, MONDAY + timedelta(minutes=4), worker="w2") == {}  # leased
    assert deliver(world, sink, MONDAY + timedelta(minutes=6), worker="w2") == {"sent": 1}
    [note] = notes(world)
    assert (note.status, note.claimed_by, note.attempts) == (NotificationStatus.SENT, "w2", 2)
    with world.session() as s:  # w1 wakes up: it holds no claim any more
        assert not claim(session=s, notification_id=note.id, worker="w1",
                         now=MONDAY + timedelta(minutes=7))
    assert len(sink.messages()) == 1
