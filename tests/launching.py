"""Tests that deliver mail need a launched program: they are not about the QA gate, so they
mark it launched directly (users go through `nurture launch`, which runs the gate)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update

from engine.db import Database
from engine.programs.models import ProgramRecord


def mark_launched(db: Database, name: str = "acme-nurture") -> None:
    with db.session() as session:
        session.execute(update(ProgramRecord).where(ProgramRecord.name == name)
                        .values(launched_at=datetime(2020, 1, 1, tzinfo=UTC)))


def launch_all(session) -> None:
    """Mark every loaded program launched, inside the caller's transaction."""
    session.execute(update(ProgramRecord).values(launched_at=datetime(2020, 1, 1, tzinfo=UTC)))
