from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base, UTCDateTime


class Proof(Base):
    """One proof email sent to a reviewer: an asset version rendered for a sample lead."""

    __tablename__ = "proofs"
    __table_args__ = (Index("ix_proofs_program", "program_id", "asset_version_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"))
    asset_version_id: Mapped[int] = mapped_column(
        ForeignKey("asset_versions.id", ondelete="CASCADE"))
    email_key: Mapped[str] = mapped_column(String(100))
    persona: Mapped[str] = mapped_column(String(100))
    reviewer: Mapped[str] = mapped_column(String(320))
    message_id: Mapped[str] = mapped_column(String(200))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Approval(Base):
    """A reviewer's decision on one asset version (a new version needs a new approval). The
    latest decision per (asset version, reviewer) counts."""

    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approvals_version", "asset_version_id", "reviewer"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"))
    asset_version_id: Mapped[int] = mapped_column(
        ForeignKey("asset_versions.id", ondelete="CASCADE"))
    reviewer: Mapped[str] = mapped_column(String(320))
    decision: Mapped[str] = mapped_column(String(10))  # approved, rejected
    comment: Mapped[str | None] = mapped_column(Text)
    proof_id: Mapped[int | None] = mapped_column(ForeignKey("proofs.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class Waiver(Base):
    """A reviewer accepts a named finding (by its key) for a program, with a reason."""

    __tablename__ = "waivers"
    __table_args__ = (UniqueConstraint("program_id", "finding_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"))
    finding_key: Mapped[str] = mapped_column(String(1000))
    reason: Mapped[str] = mapped_column(Text)
    by: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class Launch(Base):
    """A program version launched past the gate (or refused: `launched` false, with why)."""

    __tablename__ = "launches"

    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"),
                                            index=True)
    version: Mapped[int]
    by: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    launched: Mapped[bool]
    summary: Mapped[str] = mapped_column(Text)  # what the program does, or the blockers named
    assets: Mapped[dict | None] = mapped_column(JSON)  # path -> asset version number checked
