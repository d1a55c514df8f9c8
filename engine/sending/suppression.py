"""The suppression list: addresses never to send to, whatever program or step asks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import Invalid
from engine.leads.fields import normalise_email
from engine.sending.models import Suppression, SuppressionReason


def suppress(*, session: Session, email: str, reason: str, source: str,
             now: datetime) -> Suppression:
    """Add an address (idempotent: the first reason is kept)."""
    try:
        reason = SuppressionReason(reason)
    except ValueError:
        choices = ", ".join(r.value for r in SuppressionReason)
        raise Invalid(f"unknown suppression reason {reason!r} (one of {choices})",
                      field="reason") from None
    address = normalise_email(email)
    existing = session.scalar(select(Suppression).where(Suppression.email == address))
    if existing is not None:
        return existing
    row = Suppression(email=address, reason=reason, source=source[:200], created_at=now)
    session.add(row)
    session.flush()
    return row


def suppressed_reasons(*, session: Session, emails: list[str]) -> dict[str, str]:
    """The suppressed addresses among `emails` (lower-case), with their reason."""
    if not emails:
        return {}
    query = select(Suppression.email, Suppression.reason).where(
        Suppression.email.in_([e.lower() for e in emails]))
    return dict(session.execute(query).all())
