from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base, UTCDateTime


class TrackingEvent(Base):
    """An open, click, view or page visit as the public endpoints saw it. Bot and scanner hits
    are kept with `bot` set and the reason, and never score. `event_key` is minted by the web
    process, so replaying a buffered event after a crash stores it once."""

    __tablename__ = "tracking_events"
    # The reports read a period's clicks and page visits from indexes of their own, holding
    # what they count (PostgreSQL reads them alone, not the table).
    __table_args__ = (Index("ix_tracking_events_lead_at", "lead_id", "at"),
                      Index("ix_tracking_events_clicks", "at", sqlite_where=text("kind = 'click'"),
                            postgresql_where=text("kind = 'click'"),
                            postgresql_include=["outbox_id", "link_index", "bot", "lead_id",
                                                "url"]),
                      Index("ix_tracking_events_page_views", "at",
                            sqlite_where=text("kind = 'page_view'"),
                            postgresql_where=text("kind = 'page_view'"),
                            postgresql_include=["url", "lead_id", "bot"]))

    id: Mapped[int] = mapped_column(primary_key=True)
    event_key: Mapped[str] = mapped_column(String(40), unique=True)
    kind: Mapped[str] = mapped_column(String(12))  # open, click, view, page_view
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    outbox_id: Mapped[int | None] = mapped_column(
        ForeignKey("outbox.id", ondelete="SET NULL"), index=True)
    link_index: Mapped[int | None] = mapped_column(Integer)
    url: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime)  # when the endpoint answered
    user_agent: Mapped[str | None] = mapped_column(String(500))
    ip: Mapped[str | None] = mapped_column(String(64))
    bot: Mapped[bool] = mapped_column(Boolean, default=False)
    bot_reason: Mapped[str | None] = mapped_column(String(200))
