"""A stage history on known dates for the funnel and velocity report tests, written as model
rows (leads, their stage_changes, an enrollment each): the engine's doors stamp changes with
the time they run, and these tests need changes months apart at chosen instants. One test in
each report file goes through the engine's real functions instead.

The quarter is Q1 2026 in America/New_York: [2026-01-01 05:00 UTC, 2026-04-01 04:00 UTC)
(daylight saving starts on 8 March), months cut at 1 Feb 05:00 UTC and 1 Mar 05:00 UTC.

    lead  persona  channel  owner     history (UTC; NY month in brackets)
    ann   cio      web      rep@acme  inquiry Dec 10 12:00 [Dec], engaged Jan 5 12:00, mql Jan 10
                                      12:00, sal Jan 11 00:00 by rep (Jan 10 19:00 NY), opportunity
                                      Feb 10 12:00, customer Mar 15 12:00: in order, all the way
    bob   cio      ads      rep@acme  inquiry Jan 2 12:00, engaged Jan 3 12:00, mql Jan 20 12:00,
                                      recycled Jan 21 12:00 by rep (rejected), mql Feb 5 12:00,
                                      sal Feb 6 00:00 by rep (Feb 5 19:00 NY): recycled, back
    cy    dev      web      -         inquiry Jan 15 12:00, engaged Jan 16 12:00, mql Jan 25 12:00,
                                      engaged Feb 1 03:00 by advance (Jan 31 22:00 NY: January),
                                      mql Mar 1 12:00: regressed, then MQL again
    dee   dev      list     sam@acme  created as mql Feb 10 12:00 (import), sal Feb 12 12:00 by
                                      sam, opportunity Mar 20 12:00: never an inquiry
    eve   cio      -        -         inquiry Jan 1 03:00 (Dec 31 22:00 NY: before the quarter),
                                      disqualified Mar 10 12:00
    fay   dev      web      sam@acme  inquiry Mar 2 12:00, mql Mar 5 12:00 (skipped engaged),
                                      sal Apr 1 03:00 by sam (Mar 31 23:00 NY: still March)
    gus   -        web      -         inquiry Jan 5 12:00, engaged Jan 6 12:00: enrolled in
                                      program "other" only
    hal   (cio*)   -        -         inquiry Mar 20 12:00, engaged Apr 1 05:00 (after the end);
                                      *persona from its enrollment, none on the lead

Every lead but gus is enrolled in program "p". A lead's stage column holds its last stage, as
the engine leaves it (hal: engaged, which the reports must not read for March).
"""

from __future__ import annotations

from datetime import UTC, datetime

from engine.journeys.models import Enrollment
from engine.leads.models import Lead, StageChange
from engine.leads.service import record_stage_change
from engine.programs.models import ProgramRecord
from engine.reports.query import ReportQuery, parse_query

NY = "America/New_York"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def utc(month: int, day: int, hour: int = 12, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


# (email, persona on the lead, persona in the enrollment, channel, owner, program,
#  [(stage, at, actor)])
LEADS = [
    ("ann", "cio", None, "web", "rep@acme", "p",
     [("inquiry", utc(12, 10, year=2025), "api:site"), ("engaged", utc(1, 5), "advance"),
      ("mql", utc(1, 10), "scoring"), ("sal", utc(1, 11, 0), "rep@acme"),
      ("opportunity", utc(2, 10), "rep@acme"), ("customer", utc(3, 15), "rep@acme")]),
    ("bob", "cio", None, "ads", "rep@acme", "p",
     [("inquiry", utc(1, 2), "api:site"), ("engaged", utc(1, 3), "advance"),
      ("mql", utc(1, 20), "scoring"), ("recycled", utc(1, 21), "rep@acme"),
      ("mql", utc(2, 5), "scoring"), ("sal", utc(2, 6, 0), "rep@acme")]),
    ("cy", "dev", None, "web", None, "p",
     [("inquiry", utc(1, 15), "api:site"), ("engaged", utc(1, 16), "advance"),
      ("mql", utc(1, 25), "scoring"), ("engaged", utc(2, 1, 3), "advance"),
      ("mql", utc(3, 1), "scoring")]),
    ("dee", "dev", None, "list", "sam@acme", "p",
     [("mql", utc(2, 10), "import"), ("sal", utc(2, 12), "sam@acme"),
      ("opportunity", utc(3, 20), "sam@acme")]),
    ("eve", "cio", None, None, None, "p",
     [("inquiry", utc(1, 1, 3), "api:site"), ("disqualified", utc(3, 10), "cli")]),
    ("fay", "dev", None, "web", "sam@acme", "p",
     [("inquiry", utc(3, 2), "api:site"), ("mql", utc(3, 5), "scoring"),
      ("sal", utc(4, 1, 3), "sam@acme")]),
    ("gus", None, None, "web", None, "other",
     [("inquiry", utc(1, 5), "api:site"), ("engaged", utc(1, 6), "advance")]),
    ("hal", None, "cio", None, None, "p",
     [("inquiry", utc(3, 20), "api:site"), ("engaged", utc(4, 1, 5), "advance")]),
]


def write_history(db) -> None:
    with db.session() as s:
        programs = {}
        for name in ("p", "other"):
            record = ProgramRecord(name=name, current_version=1, created_at=utc(1, 1, 0, 2025))
            s.add(record)
            s.flush()
            programs[name] = record.id
        for email, persona, enrolled_as, channel, owner, program, history in LEADS:
            lead = Lead(email=f"{email}@globex.example", persona=persona, source_channel=channel,
                        owner=owner, stage=history[-1][0], created_at=history[0][1],
                        updated_at=history[-1][1], enrolled_persona=enrolled_as)
            s.add(lead)
            s.flush()
            previous = None
            for stage, at, actor in history:
                record_stage_change(s, StageChange(lead_id=lead.id, from_stage=previous,
                                                   to_stage=stage, at=at, reason="fixture",
                                                   actor=actor))
                s.flush()
                previous = stage
            s.add(Enrollment(lead_id=lead.id, program_id=programs[program], program_version=1,
                             status="active", track="welcome",
                             state={"persona": enrolled_as} if enrolled_as else {},
                             persona=enrolled_as, created_at=history[0][1], updated_at=history[0][1]))


def quarter(*, program: str | None = "p", by: str | None = None, split: str | None = None,
            tz: str = NY) -> ReportQuery:
    return parse_query(program=program, start="2026-01-01", end="2026-03-31", by=by,
                       split=split, tz=tz, now=NOW)


def rows_by(table, *keys: str) -> dict:
    """The table's rows keyed by the values of `keys` (one key: the value itself)."""
    found = {}
    for row in table.rows:
        key = tuple(row[k] for k in keys)
        found[key[0] if len(keys) == 1 else key] = row
    return found


def pick(row: dict, *columns: str) -> tuple:
    return tuple(row[c] for c in columns)
