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
    __table_args__ = (UniqueConstraint("enrollment_id", "step"),
                      Index("ix_outbox_status_due", "status", "due_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(ForeignKey("enrollments.id", ondelete="CASCADE"))
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"))
    program_version: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(100))  # the email's key in the program
    status: Mapped[str] = mapped_column(String(12), default=Delivery.PENDING)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # SMTP attempts (not claims)
    deliveries: Mapped[int] = mapped_column(Integer, server_default="0")  # 250s got
    # The server may have the message from an earlier try: the connection dropped after DATA
    # was sent, or a worker that had begun the send lost its claim. Kept after a later success,
    # so a possible duplicate stays visible.
    delivery_unknown: Mapped[bool] = mapped_column(Boolean, default=False,
                                                   server_default=false())
    # The claim holder began the SMTP send (and has not recorded its outcome yet).
    send_started: Mapped[bool] = mapped_column(Boolean, server_default=false())
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
    # The persona the email was chosen for (its enrollment's, when it was queued).
    persona: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


CLICKED_SQL = "clicked OR bot_clicks > 0"  # a person or a machine clicked a link of it
FILLFACTOR = 80


class SentEmail(Base):
    """An email that went out (engine/sending/responses.py went_out), written when it did, and
    what happened to it, kept as it happens: the facts reports read. Apart from the outbox, whose
    rows are wide (links, errors) and busy with claims, so a period's sends are a short read.

    opened, clicked, bot_opens, bot_clicks: kept as each tracking event is stored (engine/
    tracking/service.py): a person's open (a view in the browser or a click counts), a person's
    click, the events filtered as a machine's. unsubscribed, complained, hard_bounced,
    soft_bounced: the responses put on it (engine/sending/responses.py); a refusal for good at
    send time is a hard bounce, giving up after temporary failures a soft one.
    """

    __tablename__ = "sent_emails"
    # By when they went out; by lead (the last email before a response); the clicked ones by
    # when (the engagement report's links), holding on PostgreSQL what that report reads.
    __table_args__ = (Index("ix_sent_emails_out_at", "out_at"),
                      Index("ix_sent_emails_lead_out_at", "lead_id", "out_at"),
                      Index("ix_sent_emails_clicked", "out_at",
                            sqlite_where=text(CLICKED_SQL), postgresql_where=text(CLICKED_SQL),
                            postgresql_include=["outbox_id", "program_id", "step", "lead_id"]),
                      # Room on each page for the figures' updates, so a row stays where it
                      # was written, beside the other emails of its day.
                      {"postgresql_with": {"fillfactor": FILLFACTOR}})

    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id", ondelete="CASCADE"),
                                           primary_key=True, autoincrement=False)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"))
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"))
    program_version: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(100))
    asset_version_id: Mapped[int | None] = mapped_column(Integer)
    persona: Mapped[str | None] = mapped_column(String(100))
    out_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the first 250, or the refusal
    opened: Mapped[bool] = mapped_column(Boolean, server_default=false())
    clicked: Mapped[bool] = mapped_column(Boolean, server_default=false())
    bot_opens: Mapped[int] = mapped_column(Integer, server_default="0")
    bot_clicks: Mapped[int] = mapped_column(Integer, server_default="0")
    unsubscribed: Mapped[bool] = mapped_column(Boolean, server_default=false())
    complained: Mapped[bool] = mapped_column(Boolean, server_default=false())
    hard_bounced: Mapped[bool] = mapped_column(Boolean, server_default=false())
    soft_bounced: Mapped[bool] = mapped_column(Boolean, server_default=false())


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
