from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base, UTCDateTime, utcnow


class Delivery(StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # claimed by a worker until lease_until
    SENT = "sent"
    FAILED_TEMP = "failed_temp"  # retried at due_at
    FAILED_PERM = "failed_perm"
    SKIPPED = "skipped"  # with skip_reason


class OutboxMessage(Base):
    """One email to send: one row per (enrollment, step), the source of truth for delivery.

    Redis only carries the wake-up; a worker claims due rows with a lease, so a job that runs
    twice, or a worker that dies, never sends twice nor loses a send.
    """

    __tablename__ = "outbox"
    # A report reads the emails that went out in a period: by sent_at, or, refused for good
    # (never sent), by their last update (engine/sending/responses.py out_at).
    __table_args__ = (UniqueConstraint("enrollment_id", "step"),
                      Index("ix_outbox_status_due", "status", "due_at"),
                      Index("ix_outbox_sent_at", "sent_at"),
                      Index("ix_outbox_unsent_updated_at", "updated_at",
                            sqlite_where=text("sent_at IS NULL"),
                            postgresql_where=text("sent_at IS NULL")))

    id: Mapped[int] = mapped_column(primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"))
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"))
    program_version: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(100))  # the email's key in the program
    status: Mapped[str] = mapped_column(String(12), default=Delivery.PENDING)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # SMTP attempts (not claims)
    deliveries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # 250s got
    # The server may have the message from an earlier try: the connection dropped after DATA
    # was sent, or a worker that had begun the send lost its claim. Kept after a later success,
    # so a possible duplicate stays visible.
    delivery_unknown: Mapped[bool] = mapped_column(Boolean, default=False,
                                                   server_default=false())
    # The claim holder began the SMTP send (and has not recorded its outcome yet).
    send_started: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    message_id: Mapped[str] = mapped_column(String(200), unique=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    skip_reason: Mapped[str | None] = mapped_column(String(200))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The destinations of the tracked links, in order, written before the send: a click token
    # names an index here (and a hash of the URL), never a URL.
    links: Mapped[list | None] = mapped_column(JSON)
    asset_version_id: Mapped[int | None] = mapped_column(Integer)  # what was sent (view in browser)
    # What the recipient did with it, kept as each tracking event is stored (engine/tracking/
    # service.py), so reports read a send, not its events: a person's open (a view in the
    # browser or a click counts), a person's click, and the events filtered as a machine's.
    opened: Mapped[bool] = mapped_column(Boolean, server_default=false())
    clicked: Mapped[bool] = mapped_column(Boolean, server_default=false())
    bot_opens: Mapped[int] = mapped_column(Integer, server_default="0")
    bot_clicks: Mapped[int] = mapped_column(Integer, server_default="0")
    # The persona the email was chosen for (its enrollment's, when it was queued), and the
    # responses put on it when recorded (engine/sending/responses.py).
    persona: Mapped[str | None] = mapped_column(String(100))
    unsubscribed: Mapped[bool] = mapped_column(Boolean, server_default=false())
    complained: Mapped[bool] = mapped_column(Boolean, server_default=false())
    hard_bounced: Mapped[bool] = mapped_column(Boolean, server_default=false())  # reported later
    soft_bounced: Mapped[bool] = mapped_column(Boolean, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SuppressionReason(StrEnum):
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    MANUAL = "manual"


class Suppression(Base):
    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # lower-case
    reason: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(200))  # who or what suppressed it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
