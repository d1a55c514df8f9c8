"""Store program versions: validated, all or nothing, running enrollments migrated."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.assets.service import store_program_files
from engine.journeys.models import Enrollment
from engine.journeys.service import migrate_enrollments
from engine.leads.stages import STAGES
from engine.programs.loader import load_program_dir
from engine.programs.models import ProgramRecord, ProgramVersion
from engine.programs.spec import Program
from engine.programs.store import current_program, list_programs, program_at, version_row


@dataclass(frozen=True)
class LoadResult:
    record: ProgramRecord
    version: int
    created: bool  # False when the content equals the current version
    migrated: int  # running enrollments moved to the new version
    live_version: int | None = None  # the launched version, which leads keep until a launch

    @property
    def pending(self) -> bool:
        """The loaded version waits for `nurture launch` (the program runs an earlier one)."""
        return self.live_version is not None and self.live_version != self.version


def load_program(*, session: Session, directory: str | Path, now: datetime,
                 actor: str = "cli") -> LoadResult:
    """Validate a program directory and store it as a new version, in the caller's transaction.
    Before the first launch running enrollments move to it at once; once launched they keep
    the live version until `nurture launch` lets the new one out.

    Raises ProgramInvalid (nothing stored) when the directory has errors.
    """
    loaded = load_program_dir(directory)
    slug = loaded.program.slug
    record = session.scalar(select(ProgramRecord).where(ProgramRecord.name == slug))
    if record is None:
        record = ProgramRecord(name=slug, created_at=now)
        session.add(record)
        session.flush()
    elif record.current_version is not None:
        current = version_row(session, record.id, record.current_version)
        if current.content_hash == loaded.content_hash:
            _store_assets(session, record.id, loaded.files, now, actor)  # no-op when stored
            return LoadResult(record, record.current_version, created=False, migrated=0,
                              live_version=record.live_version)
    version = (record.current_version or 0) + 1
    session.add(ProgramVersion(
        program_id=record.id, version=version, content_hash=loaded.content_hash,
        definition=loaded.program.to_dict(), files=loaded.files, source=str(directory)[:1000],
        created_at=now,
    ))
    record.current_version = version
    session.flush()
    _store_assets(session, record.id, loaded.files, now, actor)
    migrated = 0
    if record.live_version is None:
        migrated = migrate_enrollments(session=session, program_id=record.id,
                                       program=current_program(session=session, name=slug)[1],
                                       now=now, actor=actor)
    return LoadResult(record, version, created=True, migrated=migrated,
                      live_version=record.live_version)


def _store_assets(session: Session, program_id: int, files: dict[str, str], now: datetime,
                  actor: str) -> None:
    """Every email and page of the program as an asset version, compiled once, so a loaded
    program is renderable. Content already stored is not compiled again."""
    store_program_files(session=session, program_id=program_id, files=files, now=now,
                        actor=actor)


@dataclass(frozen=True)
class ProgramSummary:
    """One line of `nurture program list`: the newest loaded version's kind and goal, the
    launch state, and the program's enrollments by status."""

    record: ProgramRecord
    program: Program  # the newest loaded version
    enrolled: dict[str, int]  # enrollment status -> leads

    @property
    def launch_state(self) -> str:
        """not launched; live (the newest version runs); pending launch (an older one runs)."""
        if self.record.live_version is None:
            return "not launched"
        return "live" if self.record.live_version == self.record.current_version else "pending launch"

    def to_dict(self) -> dict:
        goal = self.program.goal
        return {
            "program": self.record.name, "name": self.program.name, "kind": self.program.kind,
            "goal": {**goal.to_dict(), "text": goal.describe()} if goal else None,
            "version": self.record.current_version, "live_version": self.record.live_version,
            "launch_state": self.launch_state, "enrolled": self.enrolled,
        }


def program_summaries(*, session: Session) -> list[ProgramSummary]:
    """Every loaded program, by name."""
    counts: dict[int, dict[str, int]] = {}
    query = (select(Enrollment.program_id, Enrollment.status, func.count())
             .group_by(Enrollment.program_id, Enrollment.status))
    for program_id, status, count in session.execute(query):
        counts.setdefault(program_id, {})[status] = count
    return [ProgramSummary(record, program_at(session, record.id, record.current_version),
                           dict(sorted(counts.get(record.id, {}).items())))
            for record in list_programs(session=session) if record.current_version is not None]


def matrix(program: Program) -> list[dict]:
    """One row per persona x stage cell: its track (or None: an empty cell) and step count."""
    rows = []
    for persona in program.personas:
        for stage in STAGES:
            track = program.cell_track(persona, stage)
            exits = stage in program.rules.exit_on_stages
            rows.append({
                "persona": persona, "stage": stage, "track": track,
                "steps": len(program.tracks[track]) if track else 0,
                "emails": [s.email for s in program.tracks[track] if s.email] if track else [],
                "empty": track is None and not exits, "exit": exits,
            })
    return rows


def side_tracks(program: Program) -> list[dict]:
    """Tracks outside the persona x stage matrix, reached only through move rules."""
    return [{"track": track, "steps": len(steps), "emails": [s.email for s in steps if s.email]}
            for track, steps in program.tracks.items() if track.partition("/")[2] not in STAGES]
