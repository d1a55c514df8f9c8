"""What the send runs did, and what the next hours will send: read-only views of the outbox."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.journeys.decide import Status
from engine.journeys.models import Enrollment
from engine.leads.models import Lead
from engine.sending.models import Delivery, OutboxMessage
from engine.sending.suppression import suppressed_reasons

HELD_PREFIX = "held: "


@dataclass
class SendRun:
    """The sends scheduled in one hour, and what became of them. `unknown`: rows whose
    delivery is uncertain (the server may have had an earlier try, see engine/sending/outbox);
    `duplicates`: 250s beyond the first (a message the recipient got twice)."""

    hour: datetime
    counts: Counter = field(default_factory=Counter)  # due, sent, held, failed, skipped, ...
    reasons: Counter = field(default_factory=Counter)


def _bucket(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _outcome(row: OutboxMessage) -> tuple[str, str | None]:
    if row.status == Delivery.SENT:
        return "sent", None
    if row.status == Delivery.SKIPPED:
        return "skipped", row.skip_reason
    if row.status in (Delivery.FAILED_TEMP, Delivery.FAILED_PERM):
        return "failed", row.last_error
    if row.last_error and row.last_error.startswith(HELD_PREFIX):
        return "held", row.last_error.removeprefix(HELD_PREFIX)
    return str(row.status), None


def send_runs(*, session: Session, since: datetime, until: datetime) -> list[SendRun]:
    """Outbox rows created in [since, until), grouped by the hour they were first due."""
    runs: dict[datetime, SendRun] = {}
    rows = session.scalars(select(OutboxMessage).where(OutboxMessage.created_at >= since,
                                                       OutboxMessage.created_at < until)
                           .execution_options(yield_per=1000))
    for row in rows:
        hour = _bucket(row.created_at)
        run = runs.setdefault(hour, SendRun(hour))
        outcome, reason = _outcome(row)
        run.counts["due"] += 1
        run.counts[outcome] += 1
        run.counts["unknown"] += row.delivery_unknown
        run.counts["duplicates"] += max(0, row.deliveries - 1)
        if reason:
            run.reasons[f"{outcome}: {reason[:120]}"] += 1
    return [runs[hour] for hour in sorted(runs)]


@dataclass(frozen=True)
class ForecastLine:
    hour: datetime
    email: str
    sends: int
    suppressed: int  # would be skipped at send time


def forecast(*, session: Session, now: datetime, hours: int) -> list[ForecastLine]:
    """What the next `hours` would send: queued outbox rows, and journey steps falling due.

    Nothing is sent or changed. Journey steps are counted at their due time, once each: a step
    that a stage change or an exit cancels before then is not known yet.
    """
    until = now + timedelta(hours=hours)
    planned: list[tuple[datetime, str, str]] = []  # (when, email key, address)
    queued = session.execute(
        select(OutboxMessage.due_at, OutboxMessage.step, Lead.email)
        .join(Lead, Lead.id == OutboxMessage.lead_id)
        .where(OutboxMessage.status.in_([Delivery.PENDING, Delivery.FAILED_TEMP]),
               OutboxMessage.due_at < until))
    planned += [(max(due, now), step, email) for due, step, email in queued]
    steps = session.execute(
        select(Enrollment.due_at, Enrollment.state, Lead.email)
        .join(Lead, Lead.id == Enrollment.lead_id)
        .where(Enrollment.status == Status.ACTIVE, Enrollment.due_at < until))
    planned += [(max(due, now), state["next_email"], email) for due, state, email in steps]
    suppressed = set(suppressed_reasons(session=session, emails=sorted({p[2] for p in planned})))
    lines: dict[tuple[datetime, str], list[int]] = defaultdict(lambda: [0, 0])
    for when, email_key, address in planned:
        line = lines[(_bucket(when), email_key)]
        line[0] += 1
        line[1] += address in suppressed
    return [ForecastLine(hour, key, sends, blocked)
            for (hour, key), (sends, blocked) in sorted(lines.items())]
