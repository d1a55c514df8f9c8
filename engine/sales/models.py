from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base, UTCDateTime


class NotificationStatus(StrEnum):
    """Where the email of a sales notification stands (engine/sales/notify.py moves it)."""

    PENDING = "pending"  # to be emailed: new, or again at retry_at after a temporary failure
    SENDING = "sending"  # claimed by a worker until lease_until
    SENT = "sent"  # the mail server accepted it (250)
    FAILED = "failed"  # refused for good, or temporary failures for too long (last_error)
    SKIPPED = "skipped"  # nobody to send it to, or recorded before notifications were emailed


class SalesNotification(Base):
    """A lead handed to sales (MQL by score, a trigger rule) or an escalation (SLA breach),
    and the email that tells the person it is for."""

    __tablename__ = "sales_notifications"
    __table_args__ = (Index("ix_sales_notifications_at", "at"),
                      Index("ix_sales_notifications_delivery", "status", "retry_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(20))  # mql, trigger, escalation
    reason: Mapped[str] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(12), default=NotificationStatus.PENDING,
                                        server_default=NotificationStatus.PENDING)
    recipient: Mapped[str | None] = mapped_column(String(320))  # the address it was sent to
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None: due now
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)  # or why it was skipped


class SlaBreach(Base):
    """An SLA a lead broke, once per clock start (`since`: when the lead entered the stage)."""

    __tablename__ = "sla_breaches"
    __table_args__ = (UniqueConstraint("lead_id", "kind", "since"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(30))  # mql_unanswered, opportunity_stalled
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime)
    owner: Mapped[str | None] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(Text)  # what the engine did: escalated, enrolled in ...
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
