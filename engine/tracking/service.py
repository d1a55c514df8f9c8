"""Tracking events: minted by the public endpoints, stored in batches by the drainer
(engine/flows/tracking.py), which hands a person's open, click or visit to the lead pipeline.

Storing an event classifies it (engine/tracking/bots.py): a machine's is stored flagged.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from engine.journeys.decide import EventKind
from engine.leads.models import Lead
from engine.sending.models import OutboxMessage, SentEmail
from engine.tracking.bots import LINKS_AT_ONCE, Hit, bot_reason
from engine.tracking.models import TrackingEvent

KINDS = ("open", "click", "view", "page_view")
OPENS = ("open", "view")  # a view in the browser is an open
FOLLOWED_CLICK = timedelta(seconds=30)  # a page visit this soon after a click came from it
log = logging.getLogger(__name__)
# What a person's event means to a journey (a view in the browser is an open).
_JOURNEY_EVENTS = {"open": EventKind.OPENED, "view": EventKind.OPENED,
                   "click": EventKind.CLICKED}


def new_event(kind: str, *, lead_id: int, at: datetime, outbox_id: int | None = None,
              link_index: int | None = None, url: str | None = None, page: str | None = None,
              user_agent: str | None = None, ip: str | None = None) -> dict:
    """An event as the endpoint saw it, with a key of its own (so storing it twice is a no-op)."""
    return {"k": uuid.uuid4().hex, "kind": kind, "l": lead_id, "o": outbox_id, "n": link_index,
            "url": url, "page": page, "at": at.isoformat(), "ua": (user_agent or "")[:500],
            "ip": (ip or "")[:64]}


def clicks_by_email(events: list[dict]) -> dict[int, tuple[tuple[datetime, int], ...]]:
    """The clicks of this batch per outbox row, later ones included: a scanner's burst usually
    lands in one batch, so its first click is judged with the rest of the burst in view."""
    clicks: dict[int, list[tuple[datetime, int]]] = {}
    for event in events:
        if event["kind"] == "click" and event.get("o") and isinstance(event.get("n"), int):
            clicks.setdefault(event["o"], []).append((datetime.fromisoformat(event["at"]),
                                                     event["n"]))
    return {row: tuple(found) for row, found in clicks.items()}


def record_hit(session: Session, event: dict,
               batch_clicks: tuple[tuple[datetime, int], ...]) -> tuple[Lead, TrackingEvent] | None:
    """Store one well-formed event, classified (a machine's is stored flagged with the reason);
    None when its lead is gone or its token's lead and email disagree."""
    lead = session.get(Lead, event["l"])
    if lead is None:
        return None
    row = session.get(OutboxMessage, event["o"]) if event.get("o") else None
    if row is not None and row.lead_id != lead.id:
        return None  # a token's lead and email disagree: a forgery the signature let through?
    at = datetime.fromisoformat(event["at"])
    reason = bot_reason(Hit(kind=event["kind"], at=at, user_agent=event.get("ua") or "",
                            ip=event.get("ip") or "", link_index=event.get("n"),
                            sent_at=row.sent_at if row else None,
                            other_clicks=_other_clicks(session, row, at) + batch_clicks))
    if reason is None and event["kind"] == "page_view":
        reason = _after_bot_click(session, lead.id, event.get("url"), at)
    tracked = TrackingEvent(event_key=event["k"], kind=event["kind"], lead_id=lead.id,
                            outbox_id=row.id if row else None, link_index=event.get("n"),
                            url=event.get("url"), at=at, user_agent=event.get("ua") or None,
                            ip=event.get("ip") or None, bot=reason is not None, bot_reason=reason)
    session.add(tracked)
    if row is not None:
        _count_on_send(session, row.id, event["kind"], bot=reason is not None)
    session.flush()
    return lead, tracked


def _count_on_send(session: Session, row_id: int, kind: str, *, bot: bool) -> None:
    """Keep the sent email's own figures (SentEmail.opened...) as its events are stored; the
    counts are added by the database, so drains running at once lose none. A page visit
    that came from the email is the page's, not the email's. An email not marked sent yet
    gets its figures from its events when it is (count_tracked_sends)."""
    if kind not in (*OPENS, "click"):
        return
    if bot:
        column = "bot_opens" if kind in OPENS else "bot_clicks"
        values = {column: getattr(SentEmail, column) + 1}
    else:  # a click counts as an open: images may be blocked
        values = {"opened": True, "clicked": True} if kind == "click" else {"opened": True}
    session.execute(update(SentEmail).where(SentEmail.outbox_id == row_id).values(values))


COUNT_TRACKED_SENDS = f"""
        UPDATE sent_emails SET opened = counted.opened, clicked = counted.clicked,
               bot_opens = counted.bot_opens, bot_clicks = counted.bot_clicks
        FROM (SELECT outbox_id,
                     max(CASE WHEN NOT bot THEN 1 ELSE 0 END) = 1 AS opened,
                     max(CASE WHEN NOT bot AND kind = 'click' THEN 1 ELSE 0 END) = 1 AS clicked,
                     sum(CASE WHEN bot AND kind IN {OPENS} THEN 1 ELSE 0 END) AS bot_opens,
                     sum(CASE WHEN bot AND kind = 'click' THEN 1 ELSE 0 END) AS bot_clicks
              FROM tracking_events WHERE outbox_id IS NOT NULL AND kind != 'page_view' {{}}
              GROUP BY outbox_id) AS counted
        WHERE sent_emails.outbox_id = counted.outbox_id"""


def count_tracked_sends(connection, row_id: int | None = None) -> None:
    """Set the figures of sent email `row_id` (of every one when None) from its stored events,
    as _count_on_send keeps them: for an email whose events were stored before it was marked
    sent (a scanner can click within the second), rows stored before migration 0024, or
    written in bulk."""
    if row_id is None:
        connection.execute(text(COUNT_TRACKED_SENDS.format("")))
    else:
        connection.execute(text(COUNT_TRACKED_SENDS.format("AND outbox_id = :row")),
                           {"row": row_id})


def response_of(event: dict, session: Session) -> tuple[EventKind, str | None]:
    """What a person's event means to the lead: the journey event and its detail (the page's
    slug for a visit, the email's key otherwise)."""
    if event["kind"] == "page_view":
        return EventKind.PAGE_VIEWED, event.get("page")
    row = session.get(OutboxMessage, event["o"]) if event.get("o") else None
    return _JOURNEY_EVENTS[event["kind"]], row.step if row else None


def _after_bot_click(session: Session, lead_id: int, path: str | None,
                     at: datetime) -> str | None:
    """A visit that follows a filtered click on a link to this page is that machine's too."""
    if not path:
        return None
    found = session.scalar(select(TrackingEvent.bot_reason).where(
        TrackingEvent.lead_id == lead_id, TrackingEvent.kind == "click",
        TrackingEvent.bot.is_(True), TrackingEvent.url.contains(path, autoescape=True),
        TrackingEvent.at >= at - FOLLOWED_CLICK, TrackingEvent.at <= at).limit(1))
    return f"followed a filtered click ({found})" if found else None


def _other_clicks(session: Session, row: OutboxMessage | None,
                  at: datetime) -> tuple[tuple[datetime, int], ...]:
    if row is None:
        return ()
    recent = session.execute(select(TrackingEvent.at, TrackingEvent.link_index).where(
        TrackingEvent.outbox_id == row.id, TrackingEvent.kind == "click",
        TrackingEvent.at >= at - LINKS_AT_ONCE, TrackingEvent.at <= at + LINKS_AT_ONCE))
    return tuple((when, index) for when, index in recent if index is not None)


def well_formed(event: dict) -> bool:
    try:
        if datetime.fromisoformat(event["at"]).tzinfo is None:
            return False
    except (KeyError, TypeError, ValueError):
        return False
    texts = all(event.get(name) is None or isinstance(event[name], str)
                for name in ("ua", "ip", "url", "page"))
    index = event.get("n")
    return (texts and event.get("kind") in KINDS and isinstance(event.get("k"), str)
            and 0 < len(event["k"]) <= 40 and _is_id(event.get("l"))
            and (event.get("o") is None or _is_id(event["o"]))
            and (index is None or (isinstance(index, int) and not isinstance(index, bool)
                                   and -1 <= index < 10_000)))


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31


def timeline(*, session: Session, lead_id: int, limit: int = 200,
             include_bots: bool = False) -> list[TrackingEvent]:
    """What the lead did (opens, clicks, views, page visits): the latest `limit`, in order."""
    query = select(TrackingEvent).where(TrackingEvent.lead_id == lead_id)
    if not include_bots:
        query = query.where(TrackingEvent.bot.is_(False))
    latest = session.scalars(query.order_by(TrackingEvent.at.desc(), TrackingEvent.id.desc())
                             .limit(limit))
    return list(reversed(list(latest)))
