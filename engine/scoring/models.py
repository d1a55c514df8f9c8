from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base, UTCDateTime


class ScoreEvent(Base):
    """Append-only: every change to a lead's score and the rule that made it (for `explain`)."""

    __tablename__ = "score_events"
    __table_args__ = (Index("ix_score_events_lead_at", "lead_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    category: Mapped[str] = mapped_column(String(12))  # behaviour or fit
    kind: Mapped[str] = mapped_column(String(40))  # open, click, page_view, title, ...
    points: Mapped[float] = mapped_column(Float)  # as awarded (behaviour decays from `at`)
    rule: Mapped[str] = mapped_column(String(300))  # the rule in words, e.g. "page pricing: +10"
    tracking_event_id: Mapped[int | None] = mapped_column(
        ForeignKey("tracking_events.id", ondelete="SET NULL"))
