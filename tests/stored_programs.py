"""Programs stored as rows, for report tests that need several launched programs without
loading each from a directory: the sample's definition under another name and goal."""

from __future__ import annotations

import hashlib
import json
from copy import deepcopy
from datetime import datetime
from functools import cache
from pathlib import Path

from engine.programs.loader import load_program_dir
from engine.programs.models import ProgramRecord, ProgramVersion

SAMPLE = Path(__file__).resolve().parent.parent / "assets" / "acme-nurture"


@cache
def sample_definition() -> dict:
    return load_program_dir(SAMPLE).program.to_dict()


def store_program(session, name: str, goal: dict | None = None, *, at: datetime) -> int:
    """A program launched at `at`: the sample's definition under another name (and goal)."""
    definition = {**deepcopy(sample_definition()), "program": name, "goal": goal}
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()
    record = ProgramRecord(name=name, current_version=1, live_version=1, launched_at=at,
                           created_at=at)
    session.add(record)
    session.flush()
    session.add(ProgramVersion(program_id=record.id, version=1, content_hash=digest,
                               definition=definition, files={}, source="tests", created_at=at))
    session.flush()
    return record.id
