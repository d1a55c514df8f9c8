"""The sync health view, the dead letters (read them, replay them, skip them) and the log of
what the CRM sent (engine/flows/crm.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from engine.crm.models import CrmInboundEvent, CrmOutboxItem, CrmStatus
from engine.errors import Conflict, NotFound

_ITEMS = CrmOutboxItem.__table__


def sync_health(*, session: Session, now: datetime, not_configured: str | None) -> dict:
    """pending, retrying (by error kind), being sent, sent, dead-lettered (by error kind),
    skipped; the items held up behind a dead letter; the last success and the oldest item
    not delivered yet."""
    by_status = dict(session.execute(select(CrmOutboxItem.status, func.count())
                                     .group_by(CrmOutboxItem.status)).all())
    retrying = _by_error_kind(session, (CrmOutboxItem.status == CrmStatus.PENDING)
                              & (CrmOutboxItem.attempts > 0))
    dead = _by_error_kind(session, CrmOutboxItem.status == CrmStatus.DEAD)
    oldest = session.scalar(select(func.min(CrmOutboxItem.created_at)).where(
        CrmOutboxItem.status.in_([CrmStatus.PENDING, CrmStatus.SENDING, CrmStatus.DEAD])))
    last = session.scalar(select(func.max(CrmOutboxItem.delivered_at)))
    return {
        "configured": not_configured is None,
        "why_not": not_configured,
        "pending": by_status.get(CrmStatus.PENDING, 0) - sum(retrying.values()),
        "retrying": sum(retrying.values()),
        "retrying_by_error": retrying,
        "sending": by_status.get(CrmStatus.SENDING, 0),
        "sent": by_status.get(CrmStatus.SENT, 0),
        "dead": by_status.get(CrmStatus.DEAD, 0),
        "dead_by_error": dead,
        "held_by_dead_letters": _held_by_dead_letters(session),
        "skipped": by_status.get(CrmStatus.SKIPPED, 0),
        "last_success": last.isoformat() if last else None,
        "inbound": inbound_health(session),
        "oldest_undelivered": oldest.isoformat() if oldest else None,
        "oldest_undelivered_age_seconds": (round((now - oldest).total_seconds())
                                           if oldest else None),
    }


def _by_error_kind(session: Session, where) -> dict[str, int]:
    rows = session.execute(select(CrmOutboxItem.error_kind, func.count()).where(where)
                           .group_by(CrmOutboxItem.error_kind)).all()
    return {kind or "none": count for kind, count in sorted(rows, key=lambda r: r[0] or "")}


def _held_by_dead_letters(session: Session) -> int:
    """Items waiting behind a dead letter of their lead."""
    dead = aliased(CrmOutboxItem)
    return session.scalar(select(func.count()).select_from(CrmOutboxItem).where(
        CrmOutboxItem.status == CrmStatus.PENDING,
        select(dead.id).where(dead.lead_id == CrmOutboxItem.lead_id, dead.id < CrmOutboxItem.id,
                              dead.status == CrmStatus.DEAD).exists()))


def dead_letters(*, session: Session, limit: int = 100) -> list[CrmOutboxItem]:
    return list(session.scalars(select(CrmOutboxItem).where(CrmOutboxItem.status == CrmStatus.DEAD)
                                .order_by(CrmOutboxItem.id).limit(limit)))


def replay(*, session: Session, item_id: int, now: datetime) -> CrmOutboxItem:
    """A dead letter back in line, due now with a fresh count of attempts (its last error
    stays until the next attempt). Raises NotFound, or Conflict when it is not dead."""
    item = _dead_letter(session, item_id, "replayed")
    _replay(session, _ITEMS.c.id == item_id, now)
    session.refresh(item)
    return item


def replay_all(*, session: Session, now: datetime) -> int:
    """Every dead letter back in line; how many."""
    return _replay(session, _ITEMS.c.status == CrmStatus.DEAD, now)


def _replay(session: Session, where, now: datetime) -> int:
    result = session.execute(update(_ITEMS).where(where, _ITEMS.c.status == CrmStatus.DEAD)
                             .values(status=CrmStatus.PENDING, attempts=0, next_attempt_at=now,
                                     dead_at=None, replays=_ITEMS.c.replays + 1))
    return result.rowcount


def skip(*, session: Session, item_id: int, reason: str, by: str) -> CrmOutboxItem:
    """Give up a dead letter for good, so that its lead's later items go: the CRM never hears
    of it. Raises NotFound, or Conflict when it is not dead."""
    item = _dead_letter(session, item_id, "skipped")
    item.status = CrmStatus.SKIPPED
    item.skip_reason = f"{by}: {reason}"[:200]
    return item


def _dead_letter(session: Session, item_id: int, verb: str) -> CrmOutboxItem:
    item = session.get(CrmOutboxItem, item_id)
    if item is None:
        raise NotFound(f"no CRM item {item_id}")
    if item.status != CrmStatus.DEAD:
        raise Conflict(f"CRM item {item_id} is {item.status}, not dead-lettered: only dead "
                       f"letters are {verb} (`nurture crm dead-letter list`)")
    return item


def item_dict(item: CrmOutboxItem) -> dict:
    return {"id": item.id, "event_id": item.event_id, "lead_id": item.lead_id,
            "email": (item.payload or {}).get("email"), "type": item.kind,
            "status": item.status, "attempts": item.attempts, "replays": item.replays,
            "error_kind": item.error_kind, "last_error": item.last_error,
            "occurred_at": item.created_at.isoformat(),
            "next_attempt_at": _iso(item.next_attempt_at), "dead_at": _iso(item.dead_at),
            "delivered_at": _iso(item.delivered_at), "skip_reason": item.skip_reason}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# -- the log ----------------------------------------------------------------------------------

def inbound_log(*, session: Session, outcome: str | None = None, duplicates: bool = False,
                limit: int = 100) -> list[dict]:
    """The events the CRM sent, newest first: all, those with `outcome` (applied, refused),
    or those that found two CRM records for one email."""
    query = select(CrmInboundEvent).order_by(CrmInboundEvent.id.desc())
    if outcome:
        query = query.where(CrmInboundEvent.outcome == outcome)
    if duplicates:  # the log's JSON is read here rather than by each database's JSON syntax
        query = query.where(CrmInboundEvent.type.in_(["lead.updated", "contact.updated",
                                                      "owner.changed"]))
    found = []
    for event in session.scalars(query.execution_options(yield_per=500)):
        if duplicates and not (event.detail or {}).get("duplicates"):
            continue
        found.append({"event_id": event.event_id, "type": event.type,
                      "received_at": event.received_at.isoformat(),
                      "occurred_at": event.occurred_at.isoformat() if event.occurred_at
                      else None, "outcome": event.outcome, **(event.detail or {})})
        if len(found) >= limit:
            break
    return found


def inbound_health(session: Session) -> dict:
    """How many events the CRM sent were applied and refused, and when the last came."""
    counts = dict(session.execute(select(CrmInboundEvent.outcome, func.count())
                                  .group_by(CrmInboundEvent.outcome)).all())
    last = session.scalar(select(func.max(CrmInboundEvent.received_at)))
    return {"applied": counts.get("applied", 0), "refused": counts.get("refused", 0),
            "last_received": last.isoformat() if last else None}
