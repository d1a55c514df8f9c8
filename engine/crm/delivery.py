"""Deliver the CRM outbox: each item a signed POST to the CRM webhook, in order per lead.

The table is the source of truth; RQ only wakes a worker (worker/jobs.py deliver_crm). Like
the email outbox (engine/sending/outbox.py), a worker claims items with a lease (FOR UPDATE
SKIP LOCKED on PostgreSQL; on SQLite one UPDATE, under the write lock) and every change of
state is a conditional UPDATE guarded by who holds the claim:

- Order per lead: only a lead's first item not yet sent or skipped may be claimed. A later
  item waits while an earlier one is pending, retrying, being sent or dead-lettered; a dead
  letter holds its lead's later items until it is replayed (and delivered) or skipped
  (`nurture crm dead-letter replay|skip`): a CRM told "accepted" before "mql" would be wrong.
- The attempt is counted and the lease renewed right before the POST, only while the worker
  still holds the claim: a worker whose lease ran out (it stalled) posts nothing; one that
  died is replaced once its lease expires, and the item is posted again with the same
  Idempotency-Key. That crash window is the only source of a duplicate, and a duplicate always
  carries the key of the first.
- A 2xx is recorded whoever holds the claim by then (the CRM has it).
- An unreachable webhook (a timeout or a connection error) ends the run: the rest of the
  batch waits, charged nothing, until the failed item's retry time.
- The field map in effect (the database's instance's, engine/crm/fieldmap.py) renames each
  body as it is posted; it is read once per batch, and an invalid one stops the run before it
  claims anything (MapInvalid, with its errors).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from engine.config import Settings
from engine.crm.events import LEAD, encode, event_body
from engine.crm.fieldmap import CrmMap, map_of
from engine.crm.models import DONE, CrmOutboxItem, CrmStatus
from engine.crm.retry import Backoff, Next, after_attempt
from engine.crm.webhook import ErrorKind, Reply, post, signed_headers
from engine.db import Database
from engine.errors import Invalid
from engine.leads.models import Lead

LEASE = timedelta(minutes=5)
TIMEOUT_SECONDS = 10.0
MAX_ATTEMPTS = 15  # with Backoff's defaults: about 12 h of retries before a dead letter
_ITEMS = CrmOutboxItem.__table__
_UNREACHABLE = frozenset({ErrorKind.TIMEOUT, ErrorKind.CONNECTION})


@dataclass(frozen=True)
class CrmWebhook:
    """Where and how items are delivered (NURTURE_CRM_WEBHOOK_URL and _SECRET, ...)."""

    url: str
    secret: str
    timeout: float = TIMEOUT_SECONDS
    max_attempts: int = MAX_ATTEMPTS
    lease: timedelta = LEASE
    backoff: Backoff = field(default_factory=Backoff)
    rng: random.Random = field(default_factory=random.Random, compare=False)  # the jitter

    def __post_init__(self) -> None:
        if self.lease.total_seconds() <= 2 * self.timeout:
            raise Invalid(f"the CRM claim lease ({self.lease.total_seconds():g} s) must be "
                          f"over twice the webhook timeout ({self.timeout:g} s): a POST "
                          "could outlive the worker's claim on its item (lower "
                          "NURTURE_CRM_TIMEOUT_SECONDS)")
        if self.max_attempts < 1:
            raise Invalid(f"NURTURE_CRM_MAX_ATTEMPTS must be at least 1, not "
                          f"{self.max_attempts}")

    def batch_size(self, limit: int) -> int:
        """As many items as can time out one after another within half a lease."""
        return max(1, min(limit, int(self.lease.total_seconds() / 2 / self.timeout)))


def not_configured(settings: Settings) -> str | None:
    """Why items cannot be delivered, or None when they can."""
    if not settings.crm_webhook_url:
        return "NURTURE_CRM_WEBHOOK_URL is not set: CRM items stay pending until it is"
    if not settings.crm_webhook_secret:
        return ("NURTURE_CRM_WEBHOOK_SECRET is not set: CRM items are only sent signed, and "
                "stay pending until it is")
    return None


def webhook_from_settings(settings: Settings) -> CrmWebhook | None:
    if not_configured(settings):
        return None
    return CrmWebhook(url=settings.crm_webhook_url, secret=settings.crm_webhook_secret,
                      timeout=settings.crm_timeout_seconds,
                      max_attempts=settings.crm_max_attempts)


# -- claims ------------------------------------------------------------------------------------

def due_clause(now: datetime):
    """Items a worker may claim: a lead's first item not sent or skipped, when it is pending
    and its time has come, or claimed by a worker whose lease expired."""
    earlier = aliased(CrmOutboxItem)
    held_up = exists().where(earlier.lead_id == CrmOutboxItem.lead_id,
                             earlier.id < CrmOutboxItem.id, earlier.status.not_in(DONE))
    return and_(or_(and_(CrmOutboxItem.status == CrmStatus.PENDING,
                         or_(CrmOutboxItem.next_attempt_at.is_(None),
                             CrmOutboxItem.next_attempt_at <= now)),
                    and_(CrmOutboxItem.status == CrmStatus.SENDING,
                         CrmOutboxItem.lease_until < now)),
                ~held_up)


def claim_due(*, session: Session, worker: str, now: datetime, limit: int,
              lease: timedelta = LEASE) -> list[int]:
    """Claim up to `limit` due items for `worker`, oldest first; no item is ever held by two
    live claims, and no two items of one lead are claimed at once."""
    candidates = (select(CrmOutboxItem.id).where(due_clause(now))
                  .order_by(CrmOutboxItem.id).limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    claimed = session.execute(
        update(_ITEMS).where(_ITEMS.c.id.in_(candidates.scalar_subquery()))
        .values(status=CrmStatus.SENDING, claimed_by=worker, lease_until=now + lease)
        .returning(_ITEMS.c.id)).scalars().all()
    return sorted(claimed)


def _held_by(item_id: int, worker: str):
    return and_(_ITEMS.c.id == item_id, _ITEMS.c.status == CrmStatus.SENDING,
                _ITEMS.c.claimed_by == worker)


def start_attempt(*, session: Session, item_id: int, worker: str, now: datetime,
                  lease: timedelta = LEASE) -> bool:
    """Count the attempt and renew the lease right before the POST; False when the claim was
    lost (another worker took the item over): the item must not be posted."""
    result = session.execute(update(_ITEMS).where(_held_by(item_id, worker)).values(
        attempts=_ITEMS.c.attempts + 1, lease_until=now + lease))
    return result.rowcount == 1


def mark_sent(*, session: Session, item_id: int, worker: str, now: datetime) -> None:
    """A 2xx: recorded whoever holds the claim now (the CRM has the event)."""
    session.execute(update(_ITEMS).where(_ITEMS.c.id == item_id).values(
        status=CrmStatus.SENT, delivered_at=func.coalesce(_ITEMS.c.delivered_at, now),
        lease_until=None, next_attempt_at=None, claimed_by=worker))


def mark_retry(*, session: Session, item_id: int, worker: str, at: datetime,
               reply: Reply) -> bool:
    result = session.execute(update(_ITEMS).where(_held_by(item_id, worker)).values(
        status=CrmStatus.PENDING, next_attempt_at=at, lease_until=None,
        error_kind=reply.error_kind, last_error=reply.describe()[:2000]))
    return result.rowcount == 1


def mark_dead(*, session: Session, item_id: int, worker: str, now: datetime, reply: Reply,
              why: str) -> bool:
    result = session.execute(update(_ITEMS).where(_held_by(item_id, worker)).values(
        status=CrmStatus.DEAD, dead_at=now, lease_until=None, next_attempt_at=None,
        error_kind=reply.error_kind, last_error=f"{why}: {reply.describe()}"[:2000]))
    return result.rowcount == 1


def release(*, session: Session, item_ids: list[int], worker: str, until: datetime,
            reason: str) -> int:
    """Give claimed items back, charged nothing, due again at `until`."""
    if not item_ids:
        return 0
    result = session.execute(update(_ITEMS).where(
        _ITEMS.c.id.in_(item_ids), _ITEMS.c.status == CrmStatus.SENDING,
        _ITEMS.c.claimed_by == worker).values(
            status=CrmStatus.PENDING, next_attempt_at=until, lease_until=None,
            last_error=f"held: {reason}"[:2000]))
    return result.rowcount


# -- delivering --------------------------------------------------------------------------------

@dataclass
class CrmReport:
    counts: Counter = field(default_factory=Counter)  # sent, retry, dead, held, lost_claim
    full: bool = False  # it claimed as many items as it asked for: more may be due
    unreachable: bool = False  # the webhook did not answer: the run stopped

    def __str__(self) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items())) or "nothing due"


def deliver_batch(*, db: Database, webhook: CrmWebhook, worker: str,
                  clock: Callable[[], datetime], limit: int = 100,
                  on_item: Callable[[str], None] | None = None) -> CrmReport:
    """Claim a batch of due items (one per lead at most) and post each; safe to run in many
    workers at once."""
    report = CrmReport()
    size = webhook.batch_size(limit)
    crm_map = map_of(db.info)  # before claiming: an invalid map fails the run, holding nothing
    with db.session() as session:
        claimed = claim_due(session=session, worker=worker, now=clock(), limit=size,
                            lease=webhook.lease)
    report.full = len(claimed) == size
    for position, item_id in enumerate(claimed):
        outcome, reply, retry_at = _deliver(db, webhook, item_id, worker, clock, crm_map)
        report.counts[outcome] += 1
        if on_item:
            on_item(outcome)
        if reply is not None and reply.error_kind in _UNREACHABLE:
            rest = claimed[position + 1:]
            with db.session() as session:
                held = release(session=session, item_ids=rest, worker=worker,
                               until=retry_at or clock(),
                               reason=f"the CRM webhook did not answer ({reply.describe()})")
            report.counts["held"] += held
            report.unreachable, report.full = True, False
            break
    return report


def _deliver(db: Database, webhook: CrmWebhook, item_id: int, worker: str,
             clock: Callable[[], datetime],
             crm_map: CrmMap) -> tuple[str, Reply | None, datetime | None]:
    with db.session() as session:
        if not start_attempt(session=session, item_id=item_id, worker=worker, now=clock(),
                             lease=webhook.lease):
            return "lost_claim", None, None
        item = session.get(CrmOutboxItem, item_id, populate_existing=True)
        lead = session.get(Lead, item.lead_id)  # as the CRM knows it now
        body = encode(event_body(item, crm_map, obj=lead.crm_object or LEAD,
                                 crm_id=lead.crm_id))
        headers = signed_headers(secret=webhook.secret, body=body, event_id=item.event_id,
                                 event_type=item.kind, attempt=item.attempts)
        attempts = item.attempts
    reply = post(webhook.url, body, headers, webhook.timeout)  # outside any transaction
    now = clock()
    verdict = after_attempt(reply, attempts=attempts, max_attempts=webhook.max_attempts,
                            now=now, backoff=webhook.backoff, rng=webhook.rng)
    with db.session() as session:
        if verdict.next is Next.DELIVERED:
            mark_sent(session=session, item_id=item_id, worker=worker, now=now)
        elif verdict.next is Next.RETRY:
            mark_retry(session=session, item_id=item_id, worker=worker, at=verdict.at,
                       reply=reply)
        else:
            mark_dead(session=session, item_id=item_id, worker=worker, now=now, reply=reply,
                      why=verdict.why)
    return str(verdict.next), reply, verdict.at


def deliver_all(*, db: Database, webhook: CrmWebhook, worker: str,
                clock: Callable[[], datetime], limit: int = 100,
                on_item: Callable[[str], None] | None = None,
                should_stop: Callable[[], bool] = lambda: False) -> CrmReport:
    """Batch after batch until nothing is due, the webhook stops answering, or `should_stop`.
    A lead's next item becomes due once the one before it is sent, so a lead with several
    items takes several batches."""
    total = CrmReport()
    while True:
        report = deliver_batch(db=db, webhook=webhook, worker=worker, clock=clock, limit=limit,
                               on_item=on_item)
        total.counts.update(report.counts)
        total.unreachable = report.unreachable
        if report.unreachable or not (report.counts["sent"] or report.full) or should_stop():
            return total
