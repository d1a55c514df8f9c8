"""The outbox: one row per (enrollment, step), claimed by workers with a lease.

RQ only carries wake-ups; this table is the source of truth. A send is written here in the same
transaction as the decision that made it, claimed atomically (FOR UPDATE SKIP LOCKED on
PostgreSQL; on SQLite one UPDATE ... RETURNING, which holds the write lock for the whole claim),
and marked right after the SMTP reply. A worker keeps its claims alive while it works
(`renew_claims`); a claim whose lease expired (its worker died or stalled) is claimed again.

`attempts` counts SMTP attempts, never claims or holds, and the retry ladder climbs with it. A
250 is always recorded, whoever holds the claim by then (`deliveries` counts them: more than
one is a duplicate, sent by a worker that had lost its claim). A connection that dropped after
DATA was sent leaves the row `delivery_unknown`, kept after a later success: the server may
have had it, so a duplicate is possible, and visible.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from engine.db import insert_new
from engine.errors import Invalid
from engine.journeys.decide import ActionKind, Decision
from engine.journeys.models import Enrollment
from engine.programs.models import ProgramRecord
from engine.programs.spec import Program
from engine.render.message import sender_domain
from engine.sending.models import Delivery, OutboxMessage
from engine.sending.responses import record_out
from engine.tracking.service import count_tracked_sends

LEASE = timedelta(minutes=5)
_OUTBOX = OutboxMessage.__table__


def message_id(*, enrollment_id: int, step: str, program: Program) -> str:
    """Stable for a (enrollment, step): a resend after a crash carries the same Message-ID. Its
    domain is the sender's; a program version stored before a sender was required has none,
    and gets the reserved .invalid domain (compose refuses to send it, saying why)."""
    try:
        domain = sender_domain(program.sender)
    except Invalid:
        domain = "nurture.invalid"
    return f"<{enrollment_id}.{step}.{program.slug}@{domain}>"


def outbox_rows(*, enrollment_id: int, lead_id: int, program_id: int, program: Program,
                decision: Decision, now: datetime) -> list[dict]:
    """The outbox rows for the send actions of one decision."""
    return [
        {"enrollment_id": enrollment_id, "lead_id": lead_id, "program_id": program_id,
         "program_version": program.version, "step": action.asset, "status": Delivery.PENDING,
         "due_at": action.at, "attempts": 0, "deliveries": 0, "delivery_unknown": False,
         "send_started": False, "persona": decision.state.persona,
         "created_at": now, "updated_at": now,
         "message_id": message_id(enrollment_id=enrollment_id, step=action.asset, program=program)}
        for action in decision.actions if action.kind is ActionKind.SEND
    ]


def fill_personas(connection) -> None:
    """Set the persona of sends stored without one (before migration 0015, or written in bulk)
    from their enrollment as it is now."""
    chosen = (select(Enrollment.state["persona"].as_string())
              .where(Enrollment.id == _OUTBOX.c.enrollment_id).scalar_subquery())
    connection.execute(update(_OUTBOX).where(_OUTBOX.c.persona.is_(None)).values(persona=chosen))


def insert_rows(session: Session, rows: list[dict]) -> None:
    """Insert outbox rows; one that exists already for its (enrollment, step) is left as it is."""
    if not rows:
        return
    session.execute(insert_new(session, _OUTBOX), rows)


def adopt_launched_version(*, session: Session, program_id: int, program: Program,
                           launched_versions: set[int], now: datetime) -> None:
    """At a launch: rows still waiting under another version of the program take the launched
    one when it still has their email (its subject and sender go out, checked by the gate);
    a row whose email it no longer has and whose version was never launched is skipped,
    saying so (nothing unchecked goes out)."""
    waiting = and_(_OUTBOX.c.program_id == program_id,
                   _OUTBOX.c.program_version != program.version,
                   _OUTBOX.c.status.in_([Delivery.PENDING, Delivery.FAILED_TEMP]))
    steps = list(program.emails)
    session.execute(update(_OUTBOX).where(waiting, _OUTBOX.c.step.in_(steps))
                    .values(program_version=program.version, updated_at=now))
    session.execute(update(_OUTBOX).where(
        waiting, _OUTBOX.c.step.not_in(steps),
        _OUTBOX.c.program_version.not_in(sorted(launched_versions))).values(
            status=Delivery.SKIPPED, updated_at=now,
            skip_reason=f"not in launched version {program.version} of the program"))


def due_clause(now: datetime):
    """Rows a worker may claim: pending or temporarily failed rows whose time has come, and
    rows whose claim's lease has expired (their worker died or stalled) — of launched programs
    only: a program's rows wait, unsent, until `nurture launch` lets it out."""
    launched = select(ProgramRecord.id).where(ProgramRecord.live_version.is_not(None))
    return and_(_OUTBOX.c.program_id.in_(launched), or_(
        and_(_OUTBOX.c.status.in_([Delivery.PENDING, Delivery.FAILED_TEMP]), _OUTBOX.c.due_at <= now),
        and_(_OUTBOX.c.status == Delivery.SENDING, _OUTBOX.c.lease_until < now),
    ))


def claim_due(*, session: Session, worker: str, now: datetime, limit: int = 100,
              lease: timedelta = LEASE) -> list[OutboxMessage]:
    """Claim up to `limit` due rows for `worker`; no row is ever held by two live claims.

    Due: pending or temporarily failed rows whose due_at has come, and rows whose lease expired.
    Costs in proportion to the due rows (index on status, due_at), not to all enrollments.
    """
    # the first due first; among rows due at once, the first queued
    candidates = (select(_OUTBOX.c.id).where(due_clause(now))
                  .order_by(_OUTBOX.c.due_at, _OUTBOX.c.id).limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    claimed = session.execute(
        update(_OUTBOX).where(_OUTBOX.c.id.in_(candidates.scalar_subquery())).values(
            status=Delivery.SENDING, claimed_by=worker, lease_until=now + lease, updated_at=now,
            # taken over from a worker that had begun sending it: the server may have it
            delivery_unknown=or_(_OUTBOX.c.delivery_unknown,
                                 and_(_OUTBOX.c.status == Delivery.SENDING,
                                      _OUTBOX.c.send_started)),
            send_started=False,
        ).returning(_OUTBOX.c.id)
    ).scalars().all()
    if not claimed:
        return []
    rows = session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(claimed))
                           .order_by(OutboxMessage.due_at, OutboxMessage.id)
                           .execution_options(populate_existing=True))
    return list(rows)


def _held_by(row_id: int, worker: str):
    return and_(_OUTBOX.c.id == row_id, _OUTBOX.c.status == Delivery.SENDING,
                _OUTBOX.c.claimed_by == worker)


def _finish(session: Session, row_id: int, worker: str, now: datetime, *, attempted: bool,
            **values) -> bool:
    """Record an outcome, only while `worker` still holds the claim (a stale worker is ignored);
    an SMTP attempt counts when `attempted`."""
    if attempted:
        values["attempts"] = _OUTBOX.c.attempts + 1
    result = session.execute(update(_OUTBOX).where(_held_by(row_id, worker))
                             .values(lease_until=None, send_started=False, updated_at=now,
                                     **values))
    return result.rowcount == 1


def renew_lease(*, session: Session, row_id: int, worker: str, now: datetime,
                lease: timedelta = LEASE, links: list[str] | None = None,
                asset_version_id: int | None = None) -> bool:
    """Extend `worker`'s claim on a row just before sending it, storing the tracked links'
    destinations and the asset version sent (a click can arrive before the send is marked),
    and that the send began. False when the claim was lost (its lease expired and another
    worker took the row over): the row must not be sent."""
    extra = {"links": links, "send_started": True} if links else {"send_started": True}
    if asset_version_id is not None:
        extra["asset_version_id"] = asset_version_id
    result = session.execute(update(_OUTBOX).where(_held_by(row_id, worker))
                             .values(lease_until=now + lease, updated_at=now, **extra))
    return result.rowcount == 1


def renew_claims(*, session: Session, row_ids: list[int], worker: str, now: datetime,
                 lease: timedelta = LEASE) -> int:
    """Keep `worker`'s claims alive (its batch, while it works through it): how many it still
    holds. A claim already taken over stays with the worker that took it."""
    if not row_ids:
        return 0
    result = session.execute(update(_OUTBOX).where(
        _OUTBOX.c.id.in_(row_ids), _OUTBOX.c.status == Delivery.SENDING,
        _OUTBOX.c.claimed_by == worker).values(lease_until=now + lease))
    return result.rowcount


def mark_sent(*, session: Session, row_id: int, worker: str, now: datetime) -> int:
    """A 250: recorded whoever holds the claim now (the message left; throwing the reply away
    would send it again). Returns how many 250s the row has had: more than one is a duplicate."""
    session.execute(update(_OUTBOX).where(_OUTBOX.c.id == row_id).values(
        status=Delivery.SENT, sent_at=func.coalesce(_OUTBOX.c.sent_at, now), lease_until=None,
        last_error=None, attempts=_OUTBOX.c.attempts + 1, send_started=False,
        deliveries=_OUTBOX.c.deliveries + 1, claimed_by=worker, updated_at=now))
    _went_out(session, row_id)
    return session.scalar(select(_OUTBOX.c.deliveries).where(_OUTBOX.c.id == row_id))


def mark_temporary_failure(*, session: Session, row_id: int, worker: str, now: datetime,
                           error: str, retry_at: datetime, unknown: bool = False) -> bool:
    """A temporary failure of an SMTP attempt; `unknown`: the connection dropped after DATA."""
    extra = {"delivery_unknown": True} if unknown else {}
    return _finish(session, row_id, worker, now, attempted=True, status=Delivery.FAILED_TEMP,
                   due_at=retry_at, last_error=error[:2000], **extra)


def mark_permanent_failure(*, session: Session, row_id: int, worker: str, now: datetime,
                           error: str, attempted: bool = True) -> bool:
    """Failed for good: refused by the server (an attempt), or unsendable (not one)."""
    finished = _finish(session, row_id, worker, now, attempted=attempted,
                       status=Delivery.FAILED_PERM, last_error=error[:2000])
    if finished:
        _went_out(session, row_id)
    return finished


def mark_refused(*, session: Session, row_id: int, worker: str, now: datetime,
                 error: str) -> None:
    """A permanent refusal from the server: like a 250, recorded whoever holds the claim now
    (unless the row was sent meanwhile), so the address it suppresses and the row agree."""
    session.execute(update(_OUTBOX).where(_OUTBOX.c.id == row_id,
                                          _OUTBOX.c.status != Delivery.SENT).values(
        status=Delivery.FAILED_PERM, lease_until=None, last_error=error[:2000],
        attempts=_OUTBOX.c.attempts + 1, send_started=False, claimed_by=worker, updated_at=now))
    _went_out(session, row_id)


def _went_out(session: Session, row_id: int) -> None:
    """The row's sent email, if it went out (a refusal by the renderer did not), with what its
    events did before it was marked (a scanner can click within the second)."""
    if record_out(session, row_id):  # not again for a duplicate 250
        count_tracked_sends(session, row_id)


def mark_skipped(*, session: Session, row_id: int, worker: str, now: datetime, reason: str) -> bool:
    return _finish(session, row_id, worker, now, attempted=False, status=Delivery.SKIPPED,
                   skip_reason=reason[:200])


def release_held(*, session: Session, reason: str, now: datetime) -> int:
    """Rows held for `reason` (a relay that did not answer) are due now."""
    result = session.execute(update(_OUTBOX).where(
        _OUTBOX.c.status == Delivery.PENDING, _OUTBOX.c.due_at > now,
        _OUTBOX.c.last_error.startswith(f"held: {reason}", autoescape=True))
        .values(due_at=now, updated_at=now))
    return result.rowcount


def mark_held(*, session: Session, row_id: int, worker: str, now: datetime, until: datetime,
              reason: str) -> bool:
    """Back to pending, due again at `until` (send window, frequency cap, a relay that does not
    answer), with the reason; no attempt is charged."""
    return _finish(session, row_id, worker, now, attempted=False, status=Delivery.PENDING,
                   due_at=until, last_error=f"held: {reason}"[:2000])
