"""Deliver claimed outbox rows: check, render, send, record. One row's failure never stops
the others, and every outcome is recorded on its row (nothing is dropped silently)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.db import Database
from engine.errors import NurtureError
from engine.journeys.decide import Status
from engine.journeys.models import Enrollment
from engine.leads.models import Lead
from engine.programs.store import program_at
from engine.sending import outbox
from engine.sending.bounces import record_bounce
from engine.sending.compose import Signing, compose
from engine.sending.models import Delivery, OutboxMessage
from engine.sending.policy import FrequencyCap, SendFacts, check_send
from engine.sending.suppression import suppressed_reasons
from engine.sending.throttle import RedisThrottle
from engine.sending.transport import Transport

RETRY_DELAYS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15),
                timedelta(hours=1), timedelta(hours=4), timedelta(hours=12))
GIVE_UP_AFTER = timedelta(hours=48)  # marketing mail: past this, a late send does more harm


@dataclass
class DeliveryReport:
    counts: Counter = field(default_factory=Counter)  # by outcome: sent, held, skipped, ...

    def __str__(self) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items())) or "nothing due"


@dataclass(frozen=True)
class DeliveryOptions:
    cap: FrequencyCap = field(default_factory=FrequencyCap)
    require_consent: bool = False
    lease: timedelta = outbox.LEASE  # renewed before each send: it covers one send, not a batch
    throttle: RedisThrottle | None = None  # global and per-domain rates; None: unlimited
    signing: Signing = field(default_factory=Signing)  # tokens and tracked links


DEFAULTS = DeliveryOptions()


def deliver_due(*, db: Database, transport: Transport, worker: str,
                clock: Callable[[], datetime], limit: int = 100,
                options: DeliveryOptions = DEFAULTS) -> DeliveryReport:
    """Claim up to `limit` due rows and deliver each; safe to run in many workers at once.
    A row whose claim was lost meanwhile is left to the worker that took it over."""
    report = DeliveryReport()
    with db.session() as session:
        claimed = [row.id for row in outbox.claim_due(session=session, worker=worker,
                                                      now=clock(), limit=limit,
                                                      lease=options.lease)]
    for row_id in claimed:
        outcome = _deliver(db=db, transport=transport, row_id=row_id, worker=worker, clock=clock,
                           options=options)
        report.counts[outcome] += 1
    return report


def _deliver(*, db: Database, transport: Transport, row_id: int, worker: str, clock,
             options: DeliveryOptions) -> str:
    cap, require_consent, lease = options.cap, options.require_consent, options.lease
    now = clock()
    with db.session() as session:
        row = session.get(OutboxMessage, row_id)
        lead = session.get(Lead, row.lead_id)
        program = program_at(session, row.program_id, row.program_version)
        verdict = check_send(_facts(session, row, lead, program, now), window=program.send_window,
                             cap=cap, now=now, require_consent=require_consent)
        if verdict.action == "skip":
            outbox.mark_skipped(session=session, row_id=row_id, worker=worker, now=now,
                                reason=verdict.reason)
            return "skipped"
        if verdict.action == "hold":
            outbox.mark_held(session=session, row_id=row_id, worker=worker, now=now,
                             until=verdict.until, reason=verdict.reason)
            return "held"
        try:
            composed = compose(session=session, row=row, lead=lead, program=program, now=now,
                               signing=options.signing)
        except NurtureError as exc:  # content the sandbox refused: a marketer must fix it
            outbox.mark_permanent_failure(session=session, row_id=row_id, worker=worker, now=now,
                                          error=f"render: {exc}")
            return "failed_perm"
        recipient = lead.email
    domain = recipient.rpartition("@")[2]
    wait = options.throttle.acquire(domain, now) if options.throttle else None
    if wait is not None:
        with db.session() as session:
            outbox.mark_held(session=session, row_id=row_id, worker=worker, now=now, until=wait,
                             reason=f"throttled: {domain}")
        return "held"
    with db.session() as session:  # its own short write transaction, right before the send
        if not outbox.renew_lease(session=session, row_id=row_id, worker=worker, now=clock(),
                                  lease=lease, links=composed.links,
                                  asset_version_id=composed.asset_version_id):
            return "lost_claim"  # another worker took the row over after our lease expired
    result = transport.send(composed.message)  # outside any transaction: SMTP may take seconds
    now = clock()
    with db.session() as session:
        if result.sent:
            outbox.mark_sent(session=session, row_id=row_id, worker=worker, now=now)
            return "sent"
        error = f"{result.code or ''} {result.text}".strip()
        row = session.get(OutboxMessage, row_id)
        if result.permanent:
            outbox.mark_permanent_failure(session=session, row_id=row_id, worker=worker, now=now,
                                          error=error)
            if result.hard_bounces:
                record_bounce(session=session, email=recipient, kind="hard", now=now,
                              source=f"smtp: {error}"[:200], reason=error)
            return "failed_perm"
        if now - row.created_at >= GIVE_UP_AFTER:
            outbox.mark_permanent_failure(session=session, row_id=row_id, worker=worker, now=now,
                                          error=f"gave up after {row.attempts} attempts: {error}")
            return "failed_perm"
        retry_at = now + RETRY_DELAYS[min(row.attempts, len(RETRY_DELAYS)) - 1]
        if result.throttled and options.throttle:  # the domain asked us to slow down
            retry_at = max(retry_at, options.throttle.back_off(domain, now))
        outbox.mark_temporary_failure(session=session, row_id=row_id, worker=worker, now=now,
                                      error=error, retry_at=retry_at)
        return "failed_temp"


def _facts(session: Session, row: OutboxMessage, lead: Lead, program, now: datetime) -> SendFacts:
    enrollment = session.get(Enrollment, row.enrollment_id)
    recent = session.scalars(select(OutboxMessage.sent_at).where(
        OutboxMessage.lead_id == lead.id, OutboxMessage.status == Delivery.SENT,
        OutboxMessage.sent_at > now - timedelta(days=31)))
    return SendFacts(
        suppressed_reason=suppressed_reasons(session=session, emails=[lead.email]).get(lead.email),
        consent=lead.consent,
        enrollment_exited=enrollment.status == Status.EXITED,
        timezone=lead.timezone or program.timezone,
        recent_sends=tuple(recent),
    )
