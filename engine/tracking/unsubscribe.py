"""Unsubscribe by signed token: suppress the address and end the lead's journeys. Idempotent."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from engine.journeys.decide import Event, EventKind
from engine.journeys.service import apply_event
from engine.leads.models import Lead
from engine.sending.suppression import suppress, suppressed_reasons
from engine.tracking.tokens import ids, verify


def lead_for_token(*, session: Session, secret_key: str, token: str) -> Lead | None:
    """The lead an unsubscribe token names, or None for a bad token or an unknown lead."""
    found = ids(verify(secret_key, "unsubscribe", token), "l")
    return session.get(Lead, found[0]) if found else None


def email_of_token(secret_key: str, token: str) -> int | None:
    """The sent email (outbox id) whose unsubscribe link the token is."""
    found = ids(verify(secret_key, "unsubscribe", token), "o")
    return found[0] if found else None


def unsubscribe(*, session: Session, lead: Lead, source: str, now: datetime,
                answers: int | None = None) -> bool:
    """Returns False when the address was already unsubscribed (nothing recorded twice).
    `answers`: the email whose link was used (else the last one sent, as for other doors)."""
    if suppressed_reasons(session=session, emails=[lead.email]).get(lead.email) == "unsubscribed":
        return False
    suppress(session=session, email=lead.email, reason="unsubscribed", source=source, now=now)
    apply_event(session=session, lead=lead, event=Event(EventKind.UNSUBSCRIBED), now=now,
                actor=source, answers=answers)
    return True
