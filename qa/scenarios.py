"""Scenario tests of a program's logic: a table of test leads, the events each goes through
on which day, and what should happen; each row is walked through the real decision logic
(engine.journeys.simulate over engine.journeys.decide) on a simulated clock.

A scenario table lives in the program directory as `scenarios.yaml` (or `scenarios.csv` for
simple tables); the program loader ignores it. Errors in the table are reported all at once
as `file:line: message`, like the program loader's.

Days count from the start of the clock (Monday 6 January 2025, 00:00 UTC unless the table
says otherwise): day N is the 24 hours from start + N days. An email expected `3` must be sent
on day 3; `by 3` on or before day 3; `2..4` on day 2, 3 or 4. Mautic users met campaigns that
sent both branches, re-entered, or sent twice (Mautic #2210, #14093, #7881) and had no way to
simulate one before launch (#2307): this is that simulation, asserted.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.errors import Invalid
from engine.journeys.decide import Event, EventKind, Status
from engine.journeys.simulate import SCRIPTED_EVENTS, PathEntry, ScriptedEvent, SimLead, simulate
from engine.leads.fields import clean_lead_fields
from engine.leads.stages import STAGES
from engine.programs.loader import ProgramError
from engine.programs.spec import Program
from engine.yaml_lines import FileInvalid, LineMap, LineSeq, line_of, parse_yaml
from qa.findings import Finding, Severity

SCENARIO_FILES = ("scenarios.yaml", "scenarios.csv")  # as engine/assets/archive.py skips them
DEFAULT_START = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday: day 0 is a working day
DEFAULT_DAYS = 30
MAX_DAYS = 3660  # as `nurture simulate`
MAX_SCENARIOS = 1000
MAX_FILE_BYTES = 2 * 1024 * 1024
TOP_KEYS = ("start", "days", "scenarios")
ROW_KEYS = ("name", "lead", "events", "days", "expect")
EXPECT_KEYS = ("emails", "not_sent", "track", "stage", "status", "exit")
# CSV: these columns hold the row's name, length, events and expectations; every other column
# is a field of the test lead (title, persona, stage, timezone, company...).
CSV_EXPECT = {f"expect_{key}": key for key in EXPECT_KEYS}
CSV_COLUMNS = ("name", "days", "events", *CSV_EXPECT)
EXITS = ("unsubscribed", "hard_bounce", "talk_to_sales")
DEFAULT_EMAIL = "lead@scenario.test"  # a row's test lead, unless its `lead:` gives an email
NONE = ("none", "no", "")
_BY = re.compile(r"^by\s+(\d+)$")
_RANGE = re.compile(r"^(\d+)\s*\.\.\s*(\d+)$")
_LIST_SEPARATOR = re.compile(r"[;,]")


class _Bad(ValueError):
    """A value in the table that is wrong: its message becomes a file:line error."""


class ScenarioInvalid(FileInvalid):
    """A scenario table with errors, each as `file:line: message`."""


@dataclass(frozen=True)
class ScenarioEvent:
    day: float
    kind: EventKind
    detail: str | None
    line: int


@dataclass(frozen=True)
class EmailExpectation:
    email: str
    first: int  # earliest day it may be sent
    last: int  # latest day
    line: int

    def describe(self) -> str:
        if self.first == self.last:
            return f"{self.email} on day {self.first}"
        if self.first == 0:
            return f"{self.email} by day {self.last}"
        return f"{self.email} between day {self.first} and day {self.last}"


@dataclass(frozen=True)
class Expectation:
    emails: tuple[EmailExpectation, ...] = ()
    not_sent: tuple[tuple[str, int], ...] = ()  # (email, line)
    # final state: key (track, stage, status, exit) -> expected value; None expects none
    final: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    name: str
    line: int
    lead: dict[str, str]
    events: tuple[ScenarioEvent, ...]
    days: int
    expect: Expectation


@dataclass(frozen=True)
class ScenarioTable:
    file: str  # the file name, as errors and findings show it
    start: datetime
    scenarios: tuple[Scenario, ...]


# -- reading a table ---------------------------------------------------------------------------

def find_scenario_file(directory: str | Path) -> Path | None:
    """The program directory's scenario table, if it has one."""
    for name in SCENARIO_FILES:
        path = Path(directory) / name
        if path.is_file():
            return path
    return None


def load_scenarios(path: str | Path, program: Program) -> ScenarioTable:
    """Read and validate a scenario table against `program`. Raises ScenarioInvalid listing
    every error as file:line: message."""
    path = Path(path)
    name = path.name
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ScenarioInvalid([ProgramError(name, 1, f"larger than {MAX_FILE_BYTES} bytes")])
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ScenarioInvalid([ProgramError(name, 1, f"not UTF-8: {exc.reason}")]) from exc
    data = _read_csv(text) if path.suffix.lower() == ".csv" else _read_yaml(text, name)
    return parse_scenarios(data, program, file=name)


def _read_yaml(text: str, name: str) -> LineMap:
    data = parse_yaml(text, name, ScenarioInvalid)
    if not isinstance(data, dict):
        raise ScenarioInvalid([ProgramError(name, 1, "a scenario table must be a mapping with "
                                                     "'scenarios:' (a list of rows)")])
    return data


def _read_csv(text: str) -> LineMap:
    """CSV rows as the YAML form, each value remembering its row's line."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))
    header = [cell.strip().lower() for cell in next(reader, [])]
    rows = LineSeq()
    rows.line, rows.item_lines = 1, []
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue
        rows.append(_csv_row(dict(zip(header, (c.strip() for c in cells), strict=False)),
                             reader.line_num))
        rows.item_lines.append(reader.line_num)
    return _mapping({"scenarios": rows}, 1)


def _delimiter(text: str) -> str:
    first = text.split("\n", 1)[0]
    return ";" if first.count(";") > first.count(",") else ","


def _csv_row(cells: dict[str, str], line: int) -> LineMap:
    row = {"name": cells.get("name", ""),
           "lead": _mapping({k: v for k, v in cells.items() if k not in CSV_COLUMNS and v}, line)}
    if cells.get("days"):
        row["days"] = _number(cells["days"])
    if cells.get("events"):
        row["events"] = _sequence(_items(cells["events"]), line)
    expect = {}
    for column, key in CSV_EXPECT.items():
        value = cells.get(column, "")
        if not value:
            continue
        if key == "emails":
            pairs = (item.partition("=") for item in _items(value))
            expect[key] = _mapping({k.strip(): _number(v.strip()) for k, _, v in pairs}, line)
        elif key == "not_sent":
            expect[key] = _sequence(_items(value), line)
        else:
            expect[key] = value
    if expect:
        row["expect"] = _mapping(expect, line)
    return _mapping(row, line)


def _items(cell: str) -> list[str]:
    """A list in one cell: items separated by ';' or ',' (whichever the file does not use
    between columns, or either inside a quoted cell)."""
    return [item.strip() for item in _LIST_SEPARATOR.split(cell) if item.strip()]


def _number(text: str):
    """'3' as 3 (a CSV cell is text; YAML would have read a number)."""
    try:
        return int(text)
    except ValueError:
        return text


def _mapping(values: dict, line: int) -> LineMap:
    mapping = LineMap(values)
    mapping.line, mapping.key_lines = line, {key: line for key in values}
    return mapping


def _sequence(values: list, line: int) -> LineSeq:
    sequence = LineSeq(values)
    sequence.line, sequence.item_lines = line, [line] * len(values)
    return sequence


# -- validating a table ------------------------------------------------------------------------

class _Errors:
    def __init__(self, file: str):
        self.file = file
        self.errors: list[ProgramError] = []

    def add(self, container, key, message: str) -> None:
        self.errors.append(ProgramError(self.file, line_of(container, key), message))


def parse_scenarios(data: dict, program: Program, *, file: str = "scenarios.yaml") -> ScenarioTable:
    """Validate a table read from YAML (or CSV, in the YAML form). Raises ScenarioInvalid."""
    errors = _Errors(file)
    for key in data:
        if key not in TOP_KEYS:
            errors.add(data, key, f"unknown key {key!r} (expected one of {', '.join(TOP_KEYS)})")
    start = _start(errors, data)
    days = _days(errors, data, "days", DEFAULT_DAYS)
    rows = data.get("scenarios")
    if not isinstance(rows, list) or not rows:
        errors.add(data, "scenarios", "missing 'scenarios': a list of rows, each with name, "
                                      "lead, events and expect")
        rows = []
    if len(rows) > MAX_SCENARIOS:
        errors.add(data, "scenarios", f"more than {MAX_SCENARIOS} scenarios")
        rows = rows[:MAX_SCENARIOS]
    scenarios, names = [], {}
    for index, row in enumerate(rows):
        scenario = _scenario(errors, rows, index, row, program, days, start)
        if scenario is None:
            continue
        if scenario.name in names:
            errors.add(rows, index, f"scenario {scenario.name!r}: name already used on line "
                                    f"{names[scenario.name]}")
        names.setdefault(scenario.name, scenario.line)
        scenarios.append(scenario)
    if errors.errors:
        raise ScenarioInvalid(sorted(errors.errors, key=lambda e: e.line))
    return ScenarioTable(file=file, start=start, scenarios=tuple(scenarios))


def _start(errors: _Errors, data) -> datetime:
    value = data.get("start")
    if value is None:
        return DEFAULT_START
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            value = None
    if not isinstance(value, datetime):
        errors.add(data, "start", "start: an ISO date or date-time, e.g. 2025-01-06")
        return DEFAULT_START
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _days(errors: _Errors, container, key: str, default: int) -> int:
    value = container.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DAYS:
        errors.add(container, key, f"{key} must be a whole number of days from 1 to {MAX_DAYS}, "
                                   f"got {value!r}")
        return default
    return value


def _scenario(errors: _Errors, rows, index: int, row, program: Program,
              default_days: int, start: datetime) -> Scenario | None:
    if not isinstance(row, dict):
        errors.add(rows, index, f"scenario {index + 1}: must be a mapping with name, lead, "
                                "events and expect")
        return None
    name = row.get("name")
    if not isinstance(name, str) or not name.strip():
        errors.add(rows, index, f"scenario {index + 1}: missing 'name'")
        name = f"scenario {index + 1}"
    label = f"scenario {name!r}"
    for key in row:
        if key not in ROW_KEYS:
            errors.add(row, key, f"{label}: unknown key {key!r} "
                                 f"(expected one of {', '.join(ROW_KEYS)})")
    days = _days(errors, row, "days", default_days) if "days" in row else default_days
    lead = _lead(errors, row, label, program)
    events = _events(errors, row, label, program, days)
    _check_stage_changes(errors, label, program, lead, events, start, days)
    expect = _expectation(errors, rows, index, row, label, program, days)
    return Scenario(name=name.strip(), line=line_of(rows, index), lead=lead, events=events,
                    days=days, expect=expect)


def _lead(errors: _Errors, row, label: str, program: Program) -> dict[str, str]:
    lead = row.get("lead") or {}
    if not isinstance(lead, dict):
        errors.add(row, "lead", f"{label}: 'lead' must be a mapping of lead fields "
                                "(title, persona, stage, timezone...)")
        return {}
    fields = {str(k): str(v) for k, v in lead.items() if v is not None}
    persona, stage, tz = fields.get("persona"), fields.get("stage"), fields.get("timezone")
    if persona is not None and persona not in program.personas:
        errors.add(lead, "persona", f"{label}: unknown persona {persona!r} "
                                    f"(expected one of {', '.join(program.personas)})")
    if stage is not None and stage not in STAGES:
        errors.add(lead, "stage", f"{label}: unknown stage {stage!r} "
                                  f"(expected one of {', '.join(STAGES)})")
        fields.pop("stage")
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            errors.add(lead, "timezone", f"{label}: unknown time zone {tz!r}")
            fields.pop("timezone")
    try:
        lead_record(fields)  # as an import or the API would take it
    except Invalid as exc:
        key = next((k for k in lead if str(k).strip().lower() == exc.field), "lead")
        errors.add(lead if key in lead else row, key, f"{label}: lead.{exc.field}: {exc.detail}")
    return fields


def lead_record(fields: dict[str, str]) -> dict:
    """A row's test lead as the live engine stores one (standard fields and `custom`, cleaned
    as an import cleans them), so `simulate` reads its fields as the live engine does."""
    return clean_lead_fields({"email": DEFAULT_EMAIL, **fields})


def _events(errors: _Errors, row, label: str, program: Program,
            days: int) -> tuple[ScenarioEvent, ...]:
    items = row.get("events") or []
    if not isinstance(items, list):
        errors.add(row, "events", f"{label}: 'events' must be a list like "
                                  "[{day: 1, event: opened}] or ['1 opened']")
        return ()
    events = []
    for index, item in enumerate(items):
        line = line_of(items, index)
        try:
            events.append(_event(item, line, program, days))
        except ValueError as exc:
            errors.errors.append(ProgramError(errors.file, line, f"{label}: event {index + 1}: "
                                                                 f"{exc}"))
    return tuple(sorted(events, key=lambda e: e.day))  # stable: same-day events keep their order


def _event(item, line: int, program: Program, days: int) -> ScenarioEvent:
    if isinstance(item, str):
        parts = item.split(None, 2)
        if len(parts) < 2:
            raise ValueError(f"{item!r}: write 'DAY EVENT [DETAIL]', e.g. '3 stage engaged'")
        item = dict(zip(("day", "event", "detail"), parts, strict=False))
    if not isinstance(item, dict):
        raise _Bad("write {day: 1, event: opened} or '1 opened'")
    unknown = set(item) - {"day", "event", "detail"}
    if unknown:
        raise ValueError(f"unknown key {min(unknown)!r} (expected day, event, detail)")
    day = _event_day(item.get("day"), days)
    kind = item.get("event")
    if kind not in SCRIPTED_EVENTS:
        raise ValueError(f"unknown event {kind!r} (expected one of "
                         f"{', '.join(sorted(SCRIPTED_EVENTS))})")
    detail = item.get("detail")
    detail = None if detail is None else str(detail).strip()
    return ScenarioEvent(day, EventKind(kind), _event_detail(kind, detail, program), line)


def _event_day(value, days: int) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(f"day must be a number of days from the start, got {value!r}")
    if value < 0:
        raise ValueError(f"day must be 0 or more, got {value}")
    if value > days:
        raise ValueError(f"day {value} is after the scenario's last day ({days})")
    return float(value)


def _event_detail(kind: str, detail: str | None, program: Program) -> str | None:
    """The detail each event needs, checked against the program (as `nurture simulate`)."""
    if kind == "stage" and detail not in STAGES:
        raise ValueError(f"stage needs a stage in detail, got {detail!r} "
                         f"(expected one of {', '.join(STAGES)})")
    if kind == "persona" and detail not in program.personas:
        raise ValueError(f"persona needs a persona in detail, got {detail!r} "
                         f"(expected one of {', '.join(program.personas)})")
    if kind == "consumed" and detail not in program.emails:
        raise ValueError(f"consumed needs a known email in detail, got {detail!r}")
    if kind == "bounced" and (detail or "hard") not in ("hard", "soft"):
        raise ValueError(f"bounced takes hard or soft in detail, got {detail!r}")
    if kind == "assist" and not _track_exists(detail, program):
        raise ValueError(f"assist needs a track in detail, got {detail!r}")
    return detail


def _track_exists(name: str | None, program: Program) -> bool:
    if not name:
        return False
    if "/" in name:
        return name in program.tracks
    return any(track.partition("/")[2] == name for track in program.tracks)


def _check_stage_changes(errors: _Errors, label: str, program: Program, lead: dict[str, str],
                         events: tuple[ScenarioEvent, ...], start: datetime, days: int) -> None:
    """A scripted stage change goes through the transition table in the simulation, from the
    stage the lead has then (an advance rule may have moved it), which refuses an illegal one:
    say so here, where the line is known."""
    if not any(event.kind is EventKind.STAGE for event in events):
        return
    try:
        sim = _walk(program, lead, events, start, days)
    except Invalid:
        return  # the lead's fields are wrong: said already
    for rejected in sim.rejected:
        words = f"{label}: day {_day_text(_days_from(start, rejected.at))}: {rejected.reason}"
        advanced = [e for e in sim.path if e.action == "advance" and e.at <= rejected.at]
        if advanced:
            words += f" ({advanced[-1].reason}, day {_day_text(_days_from(start, advanced[-1].at))})"
        errors.errors.append(ProgramError(errors.file, rejected.line, words))


def _days_from(start: datetime, at: datetime) -> float:
    return (at - start) / timedelta(days=1)


def _expectation(errors: _Errors, rows, index: int, row, label: str, program: Program,
                 days: int) -> Expectation:
    expect = row.get("expect")
    if not isinstance(expect, dict) or not expect:
        errors.add(rows, index, f"{label}: missing 'expect' (emails, not_sent, track, stage, "
                                "status or exit)")
        return Expectation()
    for key in expect:
        if key not in EXPECT_KEYS:
            errors.add(expect, key, f"{label}: expect: unknown key {key!r} "
                                    f"(expected one of {', '.join(EXPECT_KEYS)})")
    final = {}
    for key, check in (("track", _expect_track), ("stage", _expect_stage),
                       ("status", _expect_status), ("exit", _expect_exit)):
        if key in expect:
            try:
                final[key] = check(expect[key], program)
            except ValueError as exc:
                errors.add(expect, key, f"{label}: expect.{key}: {exc}")
    return Expectation(emails=_expect_emails(errors, expect, label, program, days),
                       not_sent=_expect_not_sent(errors, expect, label, program), final=final)


def _expect_emails(errors: _Errors, expect, label: str, program: Program,
                   days: int) -> tuple[EmailExpectation, ...]:
    emails = expect.get("emails")
    if emails is None:
        return ()
    if not isinstance(emails, dict):
        errors.add(expect, "emails", f"{label}: expect.emails must map emails to days, like "
                                     "{welcome_it: 0, guide_it: 'by 3'}")
        return ()
    parsed = []
    for email, when in emails.items():
        where = f"{label}: expect.emails.{email}"
        if email not in program.emails:
            errors.add(emails, email, f"{where}: unknown email {email!r}")
            continue
        try:
            first, last = _day_range(when)
        except ValueError as exc:
            errors.add(emails, email, f"{where}: {exc}")
            continue
        if last >= days:
            errors.add(emails, email, f"{where}: day {last} is after the scenario's last day "
                                      f"({days - 1}; days: {days})")
            continue
        parsed.append(EmailExpectation(str(email), first, last, line_of(emails, email)))
    return tuple(parsed)


def _day_range(when) -> tuple[int, int]:
    """3 (on day 3), 'by 3' (day 0 to 3), '2..4' (day 2 to 4)."""
    if isinstance(when, int) and not isinstance(when, bool) and when >= 0:
        return when, when
    text = str(when).strip().lower()
    if text.isdigit():
        return int(text), int(text)
    if match := _BY.match(text):
        return 0, int(match[1])
    if (match := _RANGE.match(text)) and int(match[1]) <= int(match[2]):
        return int(match[1]), int(match[2])
    raise ValueError(f"{when!r} is not a day: write 3 (on day 3), 'by 3' (on or before day 3) "
                     "or '2..4' (day 2 to 4), days counted from 0")


def _expect_not_sent(errors: _Errors, expect, label: str,
                     program: Program) -> tuple[tuple[str, int], ...]:
    names = expect.get("not_sent")
    if names is None:
        return ()
    if not isinstance(names, list):
        errors.add(expect, "not_sent", f"{label}: expect.not_sent must be a list of emails")
        return ()
    parsed = []
    for index, name in enumerate(names):
        if name not in program.emails:
            errors.add(names, index, f"{label}: expect.not_sent: unknown email {name!r}")
        else:
            parsed.append((name, line_of(names, index)))
    return tuple(parsed)


def _is_none(value) -> bool:
    # YAML 1.1 reads a bare `no` as false
    return value is None or value is False or str(value).strip().lower() in NONE


def _expect_track(value, program: Program) -> str | None:
    if _is_none(value):
        return None
    if value not in program.tracks:
        raise ValueError(f"unknown track {value!r}")
    return str(value)


def _expect_stage(value, program: Program) -> str:
    if value not in STAGES:
        raise ValueError(f"unknown stage {value!r} (expected one of {', '.join(STAGES)})")
    return str(value)


def _expect_status(value, program: Program) -> str:
    statuses = [status.value for status in Status]
    if value not in statuses:
        raise ValueError(f"unknown status {value!r} (expected one of {', '.join(statuses)})")
    return str(value)


def _expect_exit(value, program: Program) -> str | None:
    """none, unsubscribed, hard_bounce, talk_to_sales, or an exit stage (`sal` or `stage sal`):
    the engine's own exit reasons."""
    if _is_none(value):
        return None
    text = str(value).strip()
    stage = text.removeprefix("stage ").strip()
    if stage in program.rules.exit_on_stages:
        return f"stage {stage}"
    if text in EXITS:
        return text
    allowed = ["none", *EXITS, *sorted(program.rules.exit_on_stages)]
    raise ValueError(f"unknown exit {value!r} (expected one of {', '.join(allowed)})")


# -- running -----------------------------------------------------------------------------------

@dataclass
class ScenarioResult:
    scenario: Scenario
    differences: list[str]
    sent: dict[str, int]  # email -> day it was sent
    final: dict[str, str | None]  # track, stage, status, exit, persona
    path: list[PathEntry]

    @property
    def passed(self) -> bool:
        return not self.differences

    @property
    def first_difference(self) -> str | None:
        return self.differences[0] if self.differences else None

    def to_dict(self) -> dict:
        return {
            "name": self.scenario.name, "line": self.scenario.line, "passed": self.passed,
            "first_difference": self.first_difference, "differences": self.differences,
            "sent": self.sent, "final": self.final,
            "path": [entry.to_dict() for entry in self.path],
        }


def run_scenarios(program: Program, scenarios: Iterable[Scenario], *,
                  start: datetime = DEFAULT_START) -> list[ScenarioResult]:
    """Walk each scenario through the real decision logic on a simulated clock from `start`.
    Deterministic: nothing reads the wall clock or shares state between rows."""
    return [run_scenario(program, scenario, start=start) for scenario in scenarios]


def run_scenario(program: Program, scenario: Scenario, *,
                 start: datetime = DEFAULT_START) -> ScenarioResult:
    sim = _walk(program, scenario.lead, scenario.events, start, scenario.days)
    sent = {entry.asset: _day(entry.at, start) for entry in sim.path if entry.action == "send"}
    state = sim.state
    final = {"track": state.track, "stage": state.stage, "status": state.status.value,
             "exit": state.exit_reason, "persona": state.persona}
    exit_day = next((_day(e.at, start) for e in reversed(sim.path) if e.action == "exit"), None)
    differences = _compare(scenario, sent, final, exit_day)
    return ScenarioResult(scenario, differences, sent, final, sim.path)


def _walk(program: Program, lead: dict[str, str], events: Iterable[ScenarioEvent],
          start: datetime, days: int) -> SimLead:
    """One row through `nurture simulate`'s engine. Raises Invalid on a bad lead field."""
    record = lead_record(lead)
    scripted = [ScriptedEvent(start + timedelta(days=e.day), record["email"],
                              Event(e.kind, e.detail), e.line) for e in events]
    return simulate(program, [record], scripted, start=start, days=days)[0]


def _day(at: datetime, start: datetime) -> int:
    return math.floor((at - start) / timedelta(days=1))


def _day_text(day: float) -> str:
    return str(int(day)) if day == int(day) else str(day)


def _compare(scenario: Scenario, sent: dict[str, int], final: dict, exit_day) -> list[str]:
    """Every difference, the earliest in simulated time first: an email expected on day 3 but
    sent on day 5 went wrong on day 3; the final track, stage and exit are known at the end."""
    found: list[tuple[float, int, str]] = []  # (day it shows, line, words)
    for want in scenario.expect.emails:
        day = sent.get(want.email)
        if day is None:
            words = f"expected {want.describe()}, it was never sent (in {scenario.days} days)"
            found.append((want.last, want.line, words))
        elif not want.first <= day <= want.last:
            found.append((min(day, want.last), want.line,
                          f"expected {want.describe()}, it was sent on day {day}"))
    for email, line in scenario.expect.not_sent:
        if email in sent:
            found.append((sent[email], line,
                          f"expected {email} never to be sent, it was sent on day {sent[email]}"))
    for key in ("track", "stage", "status", "exit"):
        if key in scenario.expect.final and scenario.expect.final[key] != final[key]:
            found.append((scenario.days, scenario.line,
                          _final_difference(key, scenario.expect.final[key], final, exit_day)))
    return [words for _, _, words in sorted(found, key=lambda item: (item[0], item[1]))]


def _final_difference(key: str, want: str | None, final: dict, exit_day) -> str:
    got = final[key]
    if key == "exit":
        if want is None:
            return f"expected no exit, it exited ({got}) on day {exit_day}"
        if got is None:
            return f"expected exit {want}, it did not exit (ended {final['status']})"
        return f"expected exit {want}, it exited ({got}) on day {exit_day}"
    if key == "track":
        return f"expected track {want or 'none'}, ended in {got or 'no track'}"
    return f"expected {key} {want}, ended {'in ' if key == 'stage' else ''}{got}"


def scenario_findings(results: list[ScenarioResult], file: str) -> list[Finding]:
    """A blocker per failed scenario, located by its name (stable across edits of the table,
    so a waiver survives a line shift); the line is in the message."""
    return [
        Finding(Severity.BLOCKER, "scenario.failed", file, result.scenario.name,
                f"line {result.scenario.line}: {result.first_difference}")
        for result in results if not result.passed
    ]


def invalid_findings(exc: ScenarioInvalid) -> list[Finding]:
    """A table that does not validate tests nothing: each error blocks."""
    return [Finding(Severity.BLOCKER, "scenario.invalid", error.file, f"line {error.line}",
                    error.message) for error in exc.errors]
