from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base, UTCDateTime, utcnow


class FormSubmission(Base):
    """A form posted on a landing page, kept whether or not its email matches a lead."""

    __tablename__ = "form_submissions"
    __table_args__ = (Index("ix_form_submissions_program_page", "program_id", "page"),
                      Index("ix_form_submissions_digest", "digest", "created_at"),
                      Index("ix_form_submissions_outbox_id", "outbox_id"),
                      Index("ix_form_submissions_lead_at", "lead_id", "created_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"))
    page: Mapped[str] = mapped_column(String(100))  # the page's slug
    lead_id: Mapped[int | None] = mapped_column(ForeignKey("leads.id", ondelete="SET NULL"))
    email: Mapped[str] = mapped_column(String(320), index=True)
    fields: Mapped[dict] = mapped_column(JSON, default=dict)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    # What was posted, hashed: the same form posted again soon after is the same submission.
    digest: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The source it carries (engine/pages/forms.py touch_source): attribution's touches.
    source_channel: Mapped[str | None] = mapped_column(String(200))
    source_offer: Mapped[str | None] = mapped_column(String(200))
    source_partner: Mapped[str | None] = mapped_column(String(200))
    # The email of the program the lead was sent last before posting (engine/sending/
    # responses.py), or None.
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id", ondelete="SET NULL"))
