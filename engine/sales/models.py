from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base, UTCDateTime


class SalesNotification(Base):
    """A lead handed to sales (MQL by score, a trigger rule) or an escalation (SLA breach)."""

    __tablename__ = "sales_notifications"
    __table_args__ = (Index("ix_sales_notifications_at", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(20))  # mql, trigger, escalation
    reason: Mapped[str] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(String(200))


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
