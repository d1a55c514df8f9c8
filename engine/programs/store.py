"""Reading stored programs: versions are immutable, so their parsed form is cached."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import NotFound
from engine.programs.models import ProgramRecord, ProgramVersion
from engine.programs.spec import Program


def version_row(session: Session, program_id: int, version: int) -> ProgramVersion:
    return session.scalar(select(ProgramVersion).where(
        ProgramVersion.program_id == program_id, ProgramVersion.version == version))


def program_at(session: Session, program_id: int, version: int) -> Program:
    """A stored program version; remembered for the session (a batch asks for the same few)."""
    remembered = session.info.setdefault("nurture.programs", {})
    program = remembered.get((program_id, version))
    if program is None:
        row = version_row(session, program_id, version)
        if row is None:
            raise NotFound(f"program {program_id} has no version {version}", field="program")
        program = remembered[(program_id, version)] = _cached_program(row)
    return program


_cache: dict[tuple[str, int], Program] = {}


def _cached_program(row: ProgramVersion) -> Program:
    """Program versions are immutable, so the parsed form is cached by what identifies its
    content (not by row id: ids repeat across databases, and after a rolled-back insert)."""
    key = (row.content_hash, row.version)
    program = _cache.get(key)
    if program is None:
        program = Program.from_dict(row.definition, version=row.version)
        if len(_cache) > 256:
            _cache.clear()
        _cache[key] = program
    return program


def current_program(*, session: Session, name: str) -> tuple[ProgramRecord, Program]:
    """The newest loaded version: what QA, proofs and approvals look at before a launch."""
    record = _record(session, name)
    return record, program_at(session, record.id, record.current_version)


def running_version(record: ProgramRecord) -> int:
    """The version leads run: the launched one; before the first launch, the newest loaded
    (its sends wait for the launch)."""
    return record.live_version or record.current_version


def running_program(*, session: Session, name: str) -> tuple[ProgramRecord, Program]:
    """The version leads are enrolled in, scored by and sent: see running_version."""
    record = _record(session, name)
    return record, program_at(session, record.id, running_version(record))


def _record(session: Session, name: str) -> ProgramRecord:
    record = session.scalar(select(ProgramRecord).where(ProgramRecord.name == name))
    if record is None or record.current_version is None:
        raise NotFound(f"no program named {name!r} (load it with `nurture program load DIR`)",
                       field="program")
    return record


def list_programs(*, session: Session) -> list[ProgramRecord]:
    return list(session.scalars(select(ProgramRecord).order_by(ProgramRecord.name)))
