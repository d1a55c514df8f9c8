"""The outbox: a row per (enrollment, step), written with the decision, claimed with a lease."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from launching import launch_all
from sqlalchemy import func, select

from engine.flows.leads import upsert_lead
from engine.journeys.service import run_due
from engine.leads.importer import import_leads
from engine.programs.service import load_program
from engine.sending.models import Delivery, OutboxMessage, SentEmail
from engine.sending.outbox import (
    claim_due,
    insert_rows,
    mark_permanent_failure,
    mark_refused,
    mark_sent,
    mark_skipped,
    mark_temporary_failure,
    renew_claims,
    renew_lease,
)
from engine.tracking.models import TrackingEvent

MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # 09:00 in Paris: inside the window


def setup_leads(db, directory, count=3, now=MONDAY):
    with db.session() as s:
        load_program(session=s, directory=directory, now=now)
        launch_all(s)
        for i in range(count):
            upsert_lead(session=s, fields={"email": f"lead{i}@globex.example", "title": "CIO",
                                           "timezone": "Europe/Paris"},
                        now=now, actor="test", program="acme-nurture")


def outbox(db):
    with db.session() as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_sends_are_written_to_the_outbox_with_a_stable_message_id(db, sample_program):
    setup_leads(db, sample_program, count=2)
    rows = outbox(db)
    assert [(r.step, r.status, r.due_at) for r in rows] == [("welcome_it", "pending", MONDAY)] * 2
    assert rows[0].message_id == f"<{rows[0].enrollment_id}.welcome_it.acme-nurture@acme.example>"
    with db.session() as s:
        run_due(session=s, now=MONDAY + timedelta(days=3))
    assert [r.step for r in outbox(db)] == ["welcome_it"] * 2 + ["guide_it"] * 2


def test_a_step_is_queued_once_per_enrollment(db, sample_program):
    setup_leads(db, sample_program, count=1)
    [row] = outbox(db)
    duplicate = {c.key: getattr(row, c.key) for c in OutboxMessage.__table__.columns if c.key != "id"}
    with db.session() as s:
        insert_rows(s, [duplicate])
    assert len(outbox(db)) == 1


def test_import_queues_the_first_step_of_new_leads(db, sample_program, tmp_path):
    with db.session() as s:
        load_program(session=s, directory=sample_program, now=MONDAY)
        launch_all(s)
    path = tmp_path / "leads.csv"
    path.write_text("email,title,timezone\nann@x.example,CIO,Europe/Paris\nbo@x.example,CFO,Asia/Tokyo\n")
    import_leads(db=db, path=path, program="acme-nurture", now=MONDAY)
    # 09:00 in Paris is 17:00 in Tokyo, after its window: only Paris sends now
    assert [(r.step, r.due_at) for r in outbox(db)] == [("welcome_it", MONDAY)]
    import_leads(db=db, path=path, program="acme-nurture", now=MONDAY + timedelta(hours=1))
    assert len(outbox(db)) == 1


def test_claims_hold_a_lease_and_expired_leases_are_claimed_again(db, sample_program):
    setup_leads(db, sample_program, count=3)
    with db.session() as s:
        first = claim_due(session=s, worker="w1", now=MONDAY, limit=2)
    assert len(first) == 2 and all(r.status == Delivery.SENDING for r in first)
    assert {r.attempts for r in first} == {0}  # a claim is no attempt
    with db.session() as s:
        second = claim_due(session=s, worker="w2", now=MONDAY + timedelta(minutes=1))
    assert [r.id for r in second] == [r.id for r in outbox(db) if r.id not in {f.id for f in first}]
    with db.session() as s:  # w1 begins sending first[1], then stalls
        assert renew_lease(session=s, row_id=first[1].id, worker="w1", now=MONDAY)
        assert mark_sent(session=s, row_id=first[0].id, worker="w1", now=MONDAY) == 1
    later = MONDAY + timedelta(minutes=10)  # w1's lease on first[1] has expired
    with db.session() as s:
        again = claim_due(session=s, worker="w3", now=later)
    assert {r.id for r in again} == {first[1].id, second[0].id}
    assert {r.attempts for r in again} == {0}
    unknown = {r.id: r.delivery_unknown for r in again}
    assert unknown == {first[1].id: True, second[0].id: False}  # w1 may have sent first[1]
    with db.session() as s:  # the worker that lost its claim cannot keep or fail it any more
        assert not renew_lease(session=s, row_id=first[1].id, worker="w1", now=later)
        assert renew_claims(session=s, row_ids=[first[1].id], worker="w1", now=later) == 0
        assert not mark_temporary_failure(session=s, row_id=first[1].id, worker="w1", now=later,
                                          error="451", retry_at=later)
    statuses = {r.id: r.status for r in outbox(db)}
    assert statuses[first[0].id] == "sent" and statuses[first[1].id] == "sending"
    with db.session() as s:  # ...but its 250 is recorded: the message left
        assert mark_sent(session=s, row_id=first[1].id, worker="w1", now=later) == 1
        assert mark_sent(session=s, row_id=first[1].id, worker="w3", now=later) == 2
    row = next(r for r in outbox(db) if r.id == first[1].id)
    assert (row.status, row.deliveries, row.attempts, row.delivery_unknown) == (
        "sent", 2, 2, True)  # a duplicate, counted and marked


def test_a_refusal_is_recorded_whoever_holds_the_claim_but_never_undoes_a_send(
        db, sample_program):
    setup_leads(db, sample_program, count=2)
    with db.session() as s:
        stalled, done = claim_due(session=s, worker="w1", now=MONDAY, limit=2)
    later = MONDAY + timedelta(minutes=10)  # w1's leases expired: w2 took both rows over
    with db.session() as s:
        assert len(claim_due(session=s, worker="w2", now=later)) == 2
        mark_sent(session=s, row_id=done.id, worker="w2", now=later)
    with db.session() as s:  # w1's 550s arrive late
        mark_refused(session=s, row_id=stalled.id, worker="w1", now=later, error="550 5.1.1")
        mark_refused(session=s, row_id=done.id, worker="w1", now=later, error="550 5.1.1")
    rows = {r.id: r for r in outbox(db)}
    assert (rows[stalled.id].status, rows[stalled.id].attempts, rows[stalled.id].last_error) == (
        "failed_perm", 1, "550 5.1.1")  # not left for w2 to find suppressed and skip
    assert rows[done.id].status == "sent"


def test_an_email_that_went_out_is_recorded_once_with_what_happened_before_it_was_marked(
        db, sample_program):
    """sent_emails, what reports read: the first 250 (a duplicate adds nothing), a refusal (a
    hard bounce), giving up (a soft one); a scanner's click stored before the 250 was recorded
    counts. Not the renderer's refusal, nor a skip: nothing reached a mail server."""
    setup_leads(db, sample_program, count=5)
    later = MONDAY + timedelta(minutes=1)
    with db.session() as s:
        sent, refused, gave_up, unrendered, skipped = claim_due(session=s, worker="w", now=MONDAY)
        for number, (kind, bot) in enumerate([("click", True), ("open", False)]):
            s.add(TrackingEvent(event_key=f"k{number}", kind=kind, lead_id=sent.lead_id,
                                outbox_id=sent.id, at=MONDAY, bot=bot))
        s.flush()
        mark_sent(session=s, row_id=sent.id, worker="w", now=MONDAY)
        mark_sent(session=s, row_id=sent.id, worker="w", now=later)  # a duplicate
        mark_refused(session=s, row_id=refused.id, worker="w", now=later, error="550 5.1.1")
        mark_permanent_failure(session=s, row_id=gave_up.id, worker="w", now=later,
                               error="gave up after 6 attempts: 451 try later")
        mark_permanent_failure(session=s, row_id=unrendered.id, worker="w", now=later,
                               error="render: undefined field", attempted=False)
        mark_skipped(session=s, row_id=skipped.id, worker="w", now=later, reason="suppressed")
    with db.session() as s:
        found = {row.outbox_id: (row.out_at, row.opened, row.clicked, row.bot_clicks,
                                 row.hard_bounced, row.soft_bounced, row.persona)
                 for row in s.scalars(select(SentEmail))}
    assert found == {sent.id: (MONDAY, True, False, 1, False, False, "it_manager"),
                     refused.id: (later, False, False, 0, True, False, "it_manager"),
                     gave_up.id: (later, False, False, 0, False, True, "it_manager")}


def test_concurrent_workers_never_claim_a_row_twice(db, sample_program):
    setup_leads(db, sample_program, count=60)
    claimed: list[list[int]] = [[] for _ in range(4)]

    def work(index: int) -> None:
        while True:
            with db.session() as s:
                rows = claim_due(session=s, worker=f"w{index}", now=MONDAY, limit=5)
            if not rows:
                return
            claimed[index] += [r.id for r in rows]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [row_id for ids in claimed for row_id in ids]
    assert len(everything) == len(set(everything)) == 60
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(OutboxMessage)
                        .where(OutboxMessage.status == "sending")) == 60
