"""Deliver claimed outbox rows: check, render, send, record. One row's failure never stops
the others, and every outcome is recorded on its row (nothing is dropped silently).

A worker claims no more rows than it sends within its lease at its recent pace, and keeps its
claims alive while it works (a slow reply never hands a row to a second worker). A relay that
cannot be reached costs no attempt, and once it is down no row is claimed until a probe finds
it answering (engine/sending/relay.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
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
from engine.sending.relay import RelayHealth, RelayState
from engine.sending.suppression import suppressed_reasons
from engine.sending.throttle import RedisThrottle
from engine.sending.transport import Stage, Transport

RETRY_DELAYS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15),
                timedelta(hours=1), timedelta(hours=4), timedelta(hours=12))
GIVE_UP_AFTER = timedelta(hours=48)  # marketing mail: past this, a late send does more harm
UNREACHABLE_RETRY = timedelta(seconds=30)  # a relay that did not answer once: soon again
log = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    counts: Counter = field(default_factory=Counter)  # by outcome: sent, held, skipped, ...
    full: bool = False  # it claimed as many rows as it asked for: more may be due

    def __str__(self) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items())) or "nothing due"


@dataclass
class Pace:
    """How long this worker takes per row, smoothed: how many rows fit in a lease."""

    seconds_per_row: float = 0.2
    weight: float = 0.2  # of the newest batch

    def rows_within(self, lease: timedelta, limit: int) -> int:
        return max(1, min(limit, int(lease.total_seconds() * 0.5 / self.seconds_per_row)))

    def observe(self, seconds: float, rows: int) -> None:
        if rows:
            self.seconds_per_row += self.weight * (seconds / rows - self.seconds_per_row)


@dataclass(frozen=True)
class DeliveryOptions:
    cap: FrequencyCap = field(default_factory=FrequencyCap)
    require_consent: bool = False
    lease: timedelta = outbox.LEASE  # kept alive while the worker works through its batch
    throttle: RedisThrottle | None = None  # global and per-domain rates; None: unlimited
    signing: Signing = field(default_factory=Signing)  # tokens and tracked links
    relay: RelayHealth = field(default_factory=RelayHealth)  # shared when it has a Redis
    pace: Pace = field(default_factory=Pace)


DEFAULTS = DeliveryOptions()


def check_lease(lease: timedelta, transport: Transport) -> None:
    """Refuse a lease shorter than one SMTP reply may take: a worker waiting on a slow server
    would lose its claim to another, and the message would go out twice."""
    timeout = getattr(transport, "timeout", None)
    if timeout is not None and lease.total_seconds() < timeout:
        raise ValueError(f"NURTURE_SEND_LEASE_SECONDS={lease.total_seconds():g} is shorter than "
                         f"the SMTP timeout ({timeout:g} s): a send could outlive the worker's "
                         f"claim on it; set at least {timeout:g} (or lower the timeout with "
                         "SMTP_URL's ?timeout=)")


def deliver_due(*, db: Database, transport: Transport, worker: str,
                clock: Callable[[], datetime], limit: int = 100,
                options: DeliveryOptions = DEFAULTS) -> DeliveryReport:
    """Claim due rows (at most `limit`, and no more than fit in the lease at this worker's
    pace) and deliver each; safe to run in many workers at once. A row whose claim was lost
    meanwhile is left to the worker that took it over. Nothing is claimed while the relay is
    down (`relay_down` in the report), but the one probe."""
    report = DeliveryReport()
    state = options.relay.state(clock())
    if state is RelayState.DOWN:
        report.counts["relay_down"] = 0
        return report
    batch = 1 if state is RelayState.PROBE else options.pace.rows_within(options.lease, limit)
    with db.session() as session:
        claimed = [row.id for row in outbox.claim_due(session=session, worker=worker,
                                                      now=clock(), limit=batch,
                                                      lease=options.lease)]
    report.full = len(claimed) == batch and state is RelayState.UP
    started = time.monotonic()
    with _claims_kept_alive(db, claimed, worker, clock, options.lease):
        for row_id in claimed:
            if options.relay.down(clock()):  # it went down during this batch
                outcome = _release(db, row_id, worker, clock(), options.relay)
            else:
                outcome = _deliver(db=db, transport=transport, row_id=row_id, worker=worker,
                                   clock=clock, options=options)
            report.counts[outcome] += 1
    options.pace.observe(time.monotonic() - started, len(claimed))
    return report


@contextmanager
def _claims_kept_alive(db: Database, row_ids: list[int], worker: str, clock,
                       lease: timedelta) -> Iterator[None]:
    """Renew the batch's claims every third of the lease while the worker works through it."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease.total_seconds() / 3):
            try:
                with db.session() as session:
                    outbox.renew_claims(session=session, row_ids=row_ids, worker=worker,
                                        now=clock(), lease=lease)
            except SQLAlchemyError:  # the database hiccuped: the next renewal may work
                log.warning("could not renew %d claims of %s", len(row_ids), worker,
                            exc_info=True)

    thread = threading.Thread(target=renew, name=f"lease-{worker}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _release(db: Database, row_id: int, worker: str, now: datetime,
             relay: RelayHealth) -> str:
    """The relay is down: the row waits for the next probe, charged nothing."""
    with db.session() as session:
        outbox.mark_held(session=session, row_id=row_id, worker=worker, now=now,
                         until=relay.next_probe(now), reason=f"{relay.held_reason} is down")
    return "held"


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
                                          error=f"render: {exc}", attempted=False)
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
    if result.stage is Stage.CONNECT and not result.sent:
        return _unreachable(db, row_id, worker, now, options.relay, result)
    if options.relay.answered():  # back: the rows it held go now
        with db.session() as session:
            outbox.release_held(session=session, reason=options.relay.held_reason, now=now)
    with db.session() as session:
        if result.sent:
            outbox.mark_sent(session=session, row_id=row_id, worker=worker, now=now)
            return "sent"
        error = f"{result.code or ''} {result.text}".strip()
        row = session.get(OutboxMessage, row_id)
        if result.permanent:
            outbox.mark_refused(session=session, row_id=row_id, worker=worker, now=now,
                                error=error)
            if result.hard_bounces:
                record_bounce(session=session, email=recipient, kind="hard", now=now,
                              source=f"smtp: {error}"[:200], reason=error)
            return "failed_perm"
        attempts = row.attempts + 1  # this one included
        if now - row.created_at >= GIVE_UP_AFTER:
            outbox.mark_permanent_failure(session=session, row_id=row_id, worker=worker, now=now,
                                          error=f"gave up after {attempts} attempts: {error}")
            return "failed_perm"
        retry_at = now + RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1]
        if result.throttled and options.throttle:  # the domain asked us to slow down
            retry_at = max(retry_at, options.throttle.back_off(domain, now))
        # A connection lost once DATA was sent: the server may have the message.
        unknown = result.code is None and result.stage is Stage.DATA
        outbox.mark_temporary_failure(session=session, row_id=row_id, worker=worker, now=now,
                                      error=error, retry_at=retry_at, unknown=unknown)
        return "delivery_unknown" if unknown else "failed_temp"


def _unreachable(db: Database, row_id: int, worker: str, now: datetime, relay: RelayHealth,
                 result) -> str:
    """The relay could not be reached: no attempt is charged; the row waits a little (or for
    the next probe, when this made the relay down)."""
    down = relay.unreachable(now)
    reason = f"{relay.held_reason} unreachable: {result.text}"[:300]
    with db.session() as session:
        outbox.mark_held(session=session, row_id=row_id, worker=worker, now=now,
                         until=relay.next_probe(now) if down else now + UNREACHABLE_RETRY,
                         reason=reason)
    return "held"


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
