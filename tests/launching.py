"""Tests that deliver mail need a launched program: they are not about the QA gate, so they
launch it without the gate, recorded as such (users go through `nurture launch`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from engine.db import Database
from engine.launch.service import launch_unchecked
from engine.programs.models import ProgramRecord

LAUNCHED_AT = datetime(2020, 1, 1, tzinfo=UTC)


def open_all_day_in_utc(directory: Path) -> None:
    """For tests whose workers use the real clock: the program's send window opens all day,
    every day, in UTC. Skips the test in the minutes around midnight, when it is closed."""
    now = datetime.now(UTC)
    if (now.hour == 23 and now.minute >= 55) or (now.hour == 0 and now.minute < 3):
        pytest.skip("too close to midnight, when the all-day send window is closed")
    spec = directory / "program.yaml"
    lines = []
    for line in spec.read_text(encoding="utf-8").splitlines():
        if line.startswith("timezone:"):
            line = "timezone: UTC"
        elif line.startswith("send_window:"):
            line = ('send_window: {days: [mon, tue, wed, thu, fri, sat, sun], '
                    'from: "00:00", to: "23:59"}')
        lines.append(line)
    spec.write_text("\n".join(lines) + "\n", encoding="utf-8")


def mark_launched(db: Database, name: str = "acme-nurture") -> None:
    with db.session() as session:
        launch_unchecked(session=session, name=name, by="tests", now=LAUNCHED_AT,
                         why="a test about sending, not about the gate")


def launch_all(session) -> None:
    """Launch every loaded program at its current versions, inside the caller's transaction."""
    for name in session.scalars(select(ProgramRecord.name)).all():
        launch_unchecked(session=session, name=name, by="tests", now=LAUNCHED_AT,
                         why="a test about sending, not about the gate")


def approve_everything(db: Database, proofs_dir, now: datetime,
                       program: str = "acme-nurture", leaving_out: tuple[str, ...] = ()) -> int:
    """A reviewer gets a proof of every email's current version and approves each but the
    emails named in `leaving_out` (the review pages are tested elsewhere). Returns how many
    proofs were approved."""
    from engine.launch.approvals import record_decision
    from engine.launch.proofs import send_proofs
    from engine.sending.sink import Sink

    with Sink(proofs_dir) as sink, sink.transport() as transport, db.session() as s:
        proofs = send_proofs(session=s, program_name=program, reviewers=["qa@acme.example"],
                             transport=transport, secret_key="test-secret",
                             base_url="http://localhost:5000", now=now)
        approved = [proof for proof in proofs if proof.email_key not in leaving_out]
        for proof in approved:
            record_decision(session=s, proof=proof, decision="approve", comment=None, now=now)
        return len(approved)


def send_proofs_to(db, sink, reviewers, *, base_url: str, now: datetime,
                   program: str = "acme-nurture", secret_key: str = "test-secret") -> list[int]:
    """Send `program`'s proofs to `reviewers` through `sink` (a tests' Sink); their ids."""
    from engine.launch.proofs import send_proofs

    transport = sink.transport()
    try:
        with db.session() as s:
            return [p.id for p in send_proofs(session=s, program_name=program,
                                              reviewers=list(reviewers), transport=transport,
                                              secret_key=secret_key, base_url=base_url, now=now)]
    finally:
        transport.close()
