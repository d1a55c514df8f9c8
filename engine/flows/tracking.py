"""Storing tracking events: each is classified and stored (engine/tracking/service.py), and a
person's open, click or page visit goes through the lead pipeline in the same transaction as
its event row."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from engine.errors import NurtureError
from engine.flows.leads import respond
from engine.tracking.models import TrackingEvent
from engine.tracking.service import clicks_by_email, record_hit, response_of, well_formed

log = logging.getLogger(__name__)


def store_events(*, session: Session, events: Iterable[dict]) -> int:
    """Store buffered events in order; returns how many were new. Bad ones are skipped."""
    events = [e for e in events if well_formed(e)]
    seen = set(session.scalars(select(TrackingEvent.event_key).where(
        TrackingEvent.event_key.in_([e["k"] for e in events]))))
    batch_clicks = clicks_by_email(events)
    stored = 0
    for event in events:
        if event["k"] in seen:
            continue
        seen.add(event["k"])
        try:
            with session.begin_nested():  # one bad event must not hold up those behind it
                stored += _store(session, event, batch_clicks.get(event.get("o"), ()))
        except (SQLAlchemyError, NurtureError, ValueError, TypeError):
            log.exception("tracking event %s could not be stored; skipped", event["k"])
    return stored


def _store(session: Session, event: dict, batch_clicks) -> bool:
    hit = record_hit(session, event, batch_clicks)
    if hit is None:
        return False
    lead, tracked = hit
    if not tracked.bot:
        kind, detail = response_of(event, session)
        respond(session=session, lead=lead, kind=kind, detail=detail, now=tracked.at,
                actor=f"tracking:{event['kind']}", tracking_event_id=tracked.id)
    return True


def drain_buffer(*, db, buffer, batch: int = 500) -> int:
    """Store everything waiting in the event buffer, one transaction per batch."""
    def store(events: list[dict]) -> None:
        with db.session() as session:
            store_events(session=session, events=events)

    return buffer.drain(store, batch=batch)
