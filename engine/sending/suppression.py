"""The suppression list: addresses never to send to, whatever program or step asks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.crm.outbox import SUPPRESSED, UNSUBSCRIBED, tell_crm
from engine.errors import Invalid
from engine.leads.fields import normalise_email
from engine.leads.models import Lead
from engine.sending.models import Suppression, SuppressionReason


def suppress(*, session: Session, email: str, reason: str, source: str,
             now: datetime) -> Suppression:
    """Add an address (idempotent: the first reason is kept). The CRM is told of a lead's
    new do-not-contact: `unsubscribed`, or `suppressed` with the reason (bounced, complained,
    manual). An address no lead has is suppressed without telling it: there is nothing in the
    CRM of ours to mark."""
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
    lead_id = session.scalar(select(Lead.id).where(Lead.email == address))
    if lead_id is not None:
        tell_crm(session=session, lead_id=lead_id, email=address, now=now,
                 kind=UNSUBSCRIBED if reason is SuppressionReason.UNSUBSCRIBED else SUPPRESSED,
                 reason=str(reason), source=row.source, do_not_contact=True)
    return row


def suppressed_reasons(*, session: Session, emails: list[str]) -> dict[str, str]:
    """The suppressed addresses among `emails` (lower-case), with their reason."""
    if not emails:
        return {}
    query = select(Suppression.email, Suppression.reason).where(
        Suppression.email.in_([e.lower() for e in emails]))
    return dict(session.execute(query).all())


def list_suppressions(*, session: Session, search: str = "",
                      limit: int = 100) -> list[Suppression]:
    """The newest `limit` suppressions, those whose address contains `search` (any case)."""
    query = select(Suppression).order_by(Suppression.created_at.desc(), Suppression.id.desc())
    text = search.strip().lower()
    if text:
        query = query.where(Suppression.email.contains(text, autoescape=True))
    return list(session.scalars(query.limit(limit)))
