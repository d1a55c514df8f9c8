from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from engine.db import Base, UTCDateTime, utcnow


class Asset(Base):
    """A file of a program (an MJML email, an HTML landing page, an image), by its path."""

    __tablename__ = "assets"
    __table_args__ = (UniqueConstraint("program_id", "path"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    program_id: Mapped[int] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(300))  # e.g. emails/welcome_it.mjml
    kind: Mapped[str] = mapped_column(String(10))  # email, page, image
    current_version: Mapped[int | None] = mapped_column(Integer)  # the newest valid upload
    live_version: Mapped[int | None] = mapped_column(Integer)  # the launched one: what is sent
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AssetVersion(Base):
    """An immutable upload of an asset. Emails and pages are compiled once, here, at upload."""

    __tablename__ = "asset_versions"
    __table_args__ = (UniqueConstraint("asset_id", "version"),
                      UniqueConstraint("asset_id", "content_hash"))

    id: Mapped[int] = mapped_column(primary_key=True)
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    media_type: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(10))  # valid, invalid
    errors: Mapped[list] = mapped_column(JSON, default=list)  # [{"line": n, "message": "..."}]
    compiled_html: Mapped[str | None] = mapped_column(Text)  # placeholders kept for Jinja
    compiled_text: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(200), default="system")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
