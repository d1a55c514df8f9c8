from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base, UTCDateTime, utcnow


class Enrollment(Base):
    """A lead's place in one program. `state` is the serialised EnrollmentState of decide()."""

    __tablename__ = "enrollments"
    # by program and time: a report reads the enrollments of a program in a period
    __table_args__ = (UniqueConstraint("lead_id", "program_id"),
                      Index("ix_enrollments_program_created", "program_id", "created_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"))
    program_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    track: Mapped[str | None] = mapped_column(String(200))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    state: Mapped[dict] = mapped_column(JSON)
    # state's persona, as a column (journeys.service.enrollment_columns writes both): reports
    # read it for every enrollment of a period, which parsing each state would cost
    persona: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
