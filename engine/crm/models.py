from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, Numeric, String, Text
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


# -- what the CRM holds: accounts, opportunities and their contacts (engine/crm/records.py) --

class OpportunityStatus(StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"


class Account(Base):
    """A company: matched by its CRM id, else by its web domain (a lead's email domain)."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    crm_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    domain: Mapped[str | None] = mapped_column(String(253), unique=True)  # lower-case
    name: Mapped[str | None] = mapped_column(String(300))
    industry: Mapped[str | None] = mapped_column(String(200))
    employees: Mapped[int | None] = mapped_column(Integer)
    country: Mapped[str | None] = mapped_column(String(100))
    owner: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    crm_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # as the CRM said


class Opportunity(Base):
    """A deal in the CRM, with its contacts (OpportunityContact) and every change
    (OpportunityChange): what revenue a program's leads went on to."""

    __tablename__ = "opportunities"

    id: Mapped[int] = mapped_column(primary_key=True)
    crm_id: Mapped[str] = mapped_column(String(100), unique=True)
    account_id: Mapped[int | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL"), index=True)
    name: Mapped[str | None] = mapped_column(String(300))
    amount: Mapped[Decimal | None] = mapped_column(Numeric(18, 2))
    currency: Mapped[str | None] = mapped_column(String(3))
    stage: Mapped[str | None] = mapped_column(String(100))  # the CRM's stage name
    close_date: Mapped[date | None] = mapped_column(Date)
    owner: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(8), default=OpportunityStatus.OPEN)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)  # its last change (the SLA's)
    crm_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OpportunityContact(Base):
    """A lead's part in an opportunity (its contact role)."""

    __tablename__ = "opportunity_contacts"

    opportunity_id: Mapped[int] = mapped_column(
        ForeignKey("opportunities.id", ondelete="CASCADE"), primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"),
                                         primary_key=True, index=True)
    role: Mapped[str | None] = mapped_column(String(100))
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)


class OpportunityChange(Base):
    """Append-only history of an opportunity: what changed, from what to what, and when."""

    __tablename__ = "opportunity_changes"
    __table_args__ = (Index("ix_opportunity_changes_opportunity", "opportunity_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    opportunity_id: Mapped[int] = mapped_column(
        ForeignKey("opportunities.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(20))  # created, updated, won, lost, reopened
    changes: Mapped[dict] = mapped_column(JSON, default=dict)  # field: {"from", "to"}
    actor: Mapped[str] = mapped_column(String(200))


class CrmInboundEvent(Base):
    """Each event the CRM sent us (POST /api/v1/crm/events, `nurture crm import`), once per
    event id: a repeat is answered as before and applies nothing. `outcome` says what was done
    (applied, refused) and `detail` the conflicts settled and duplicates found."""

    __tablename__ = "crm_inbound_events"
    __table_args__ = (Index("ix_crm_inbound_events_received", "received_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    type: Mapped[str] = mapped_column(String(40))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(12))
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
