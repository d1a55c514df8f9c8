"""Items for the CRM, written in the transaction of the change they report.

Every stage change is one `stage_change` item (old and new stage, reason, actor, and what the
caller adds: the score of an MQL, the owner of an accepted lead). A buying signal of a lead
already with sales or a customer is a `buying_signal` item; it changes no stage.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from engine.crm.models import CrmOutboxItem

STAGE_CHANGE = "stage_change"
BUYING_SIGNAL = "buying_signal"


def tell_crm(*, session: Session, lead_id: int, email: str, kind: str, now: datetime,
             **payload) -> CrmOutboxItem:
    item = CrmOutboxItem(lead_id=lead_id, kind=kind, created_at=now,
                         payload={"email": email, "at": now.isoformat(), **payload})
    session.add(item)
    return item
