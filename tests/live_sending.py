"""For tests that run real `nurture` processes on the real clock: the command line, leads
whose first email is due now, and how many emails have been sent."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

from launching import launch_all, open_all_day_in_utc
from sqlalchemy import exists, func, select

from engine.db import Database, utcnow
from engine.leads.importer import import_leads
from engine.programs.models import ProgramRecord
from engine.programs.service import load_program
from engine.sending.models import OutboxMessage


def nurture(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "nurture"
    command = [str(script)] if script.exists() else [
        sys.executable, "-c", "from engine.cli import main; main()"]
    return [*command, *args]


def leads_due_now(db: Database, program: Path, directory: Path, count: int,
                  prefix: str = "lead") -> None:
    """Load and launch the program (open all day) unless it is, then import `count` leads
    through the real importer: each has its first email due in the outbox."""
    open_all_day_in_utc(program)
    now = utcnow()
    with db.session() as s:
        if not s.scalar(select(exists().where(ProgramRecord.name == "acme-nurture"))):
            load_program(session=s, directory=program, now=now - timedelta(minutes=2))
            launch_all(s)
    leads = directory / f"{prefix}s.csv"
    leads.write_text("email,first_name,title\n" + "".join(
        f"{prefix}{i:05d}@globex{i % 7}.example,Lead{i},{'CIO' if i % 2 else 'CFO'}\n"
        for i in range(count)), encoding="utf-8")
    summary = import_leads(db=db, path=leads, program="acme-nurture",
                           now=now - timedelta(minutes=1))
    assert summary.created == count, summary



def sent_count(db: Database) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).where(OutboxMessage.status == "sent"))
