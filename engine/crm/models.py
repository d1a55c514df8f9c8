from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base, UTCDateTime


class CrmStatus(StrEnum):
    """Where an item stands (engine/crm/delivery.py). `pending` with attempts is retrying."""

    PENDING = "pending"  # waiting for next_attempt_at (attempts > 0: retrying)
    SENDING = "sending"  # claimed by a worker until lease_until
    SENT = "sent"  # the CRM answered 2xx (delivered_at)
    DEAD = "dead"  # dead-lettered: refused for good, or out of attempts; blocks its lead
    SKIPPED = "skipped"  # a dead letter given up by a person (skip_reason); unblocks its lead


# What no longer holds up the later items of its lead.
DONE = (CrmStatus.SENT, CrmStatus.SKIPPED)


def new_event_id() -> str:
    return str(uuid.uuid4())


class CrmOutboxItem(Base):
    """What the CRM must be told, written in the same transaction as the change; delivered in
    order per lead as a signed webhook (engine/crm/delivery.py)."""

    __tablename__ = "crm_outbox"
    __table_args__ = (Index("ix_crm_outbox_status", "status", "id"),
                      Index("ix_crm_outbox_lead_order", "lead_id", "id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    # The event's identity: the Idempotency-Key header and the body's id, the same on every
    # attempt, and unique across instances (an id restarts with a new database; this does not).
    event_id: Mapped[str] = mapped_column(String(36), unique=True, default=new_event_id)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(40))  # engine/crm/outbox.py KINDS
    payload: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(12), default=CrmStatus.PENDING)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)  # when it happened
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # POSTs made
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None: at once
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error_kind: Mapped[str | None] = mapped_column(String(20))  # delivery.ErrorKind
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dead_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    replays: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    skip_reason: Mapped[str | None] = mapped_column(String(200))
