"""Run a program over leads and scripted events on a simulated clock. Nothing is sent or stored."""

from __future__ import annotations

import csv
import heapq
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from engine.errors import Invalid, NurtureError
from engine.journeys.decide import Event, EventKind, decide, new_state
from engine.leads.models import lead_fields
from engine.leads.stages import check_transition, parse_stage
from engine.programs.advance import Advance, advancement, next_idle_check
from engine.programs.personas import resolve_persona
from engine.programs.spec import Program

SCRIPTED_EVENTS = {k.value for k in EventKind} - {"enrolled", "due", "program_updated"}
MAX_EVENT_ROWS = 1_000_000
# Journey events that are responses, by their kind in the program's rules (scoring, advance).
RESPONSE_EVENTS = {EventKind.OPENED: "open", EventKind.CLICKED: "click",
                  EventKind.PAGE_VIEWED: "page_view", EventKind.FORM_SUBMITTED: "form_submitted",
                  EventKind.CONSUMED: "consumed"}
IDLE = "idle"  # the cause of an advance by an idle rule, as the path shows it


@dataclass(frozen=True)
class ScriptedEvent:
    at: datetime
    email: str
    event: Event
    line: int


@dataclass
class PathEntry:
    lead: str
    at: datetime
    action: str
    asset: str | None
    track: str | None
    reason: str
    event: str
    timezone: str
    rule: str | None = None  # an advance: the rule that applied, as AdvanceRule.describe()

    def to_dict(self) -> dict:
        return {
            "lead": self.lead, "at": self.at.isoformat(), "action": self.action,
            "asset": self.asset, "track": self.track, "reason": self.reason, "event": self.event,
            "local_at": self.at.astimezone(ZoneInfo(self.timezone)).isoformat(),
            "rule": self.rule,
        }


@dataclass(frozen=True)
class RejectedStage:
    """A scripted stage change the transition table refused (the lead's stage at that time,
    after any advance rule, did not allow it)."""

    line: int
    at: datetime
    reason: str


@dataclass
class SimLead:
    email: str
    fields: dict  # flat, as lead_fields gives them
    state: object = None
    path: list[PathEntry] = field(default_factory=list)
    rejected: list[RejectedStage] = field(default_factory=list)
    last_response_at: datetime | None = None
    stage_since: datetime | None = None
    idle_at: datetime | None = None  # when an idle advance rule falls due


def parse_start(text: str | None, now: datetime) -> datetime:
    """--start: an ISO date or date-time; naive values are UTC. Default: today 00:00 UTC."""
    if not text:
        return now.astimezone(ZoneInfo("UTC")).replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise Invalid(f"--start: not an ISO 8601 date or date-time: {text!r}", field="start") from exc
    return value if value.tzinfo else value.replace(tzinfo=ZoneInfo("UTC"))


def read_events(path: str | Path, *, start: datetime, program: Program,
                emails: set[str]) -> list[ScriptedEvent]:
    """Parse `day,email,event[,detail]`. Raises Invalid listing every bad line as file:line."""
    errors, events = [], []
    name = Path(path).name
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.reader(handle, delimiter=_delimiter(handle))
        for row in reader:
            line = reader.line_num
            if line == 1 and row and row[0].strip().lower() == "day":
                continue
            if not any(cell.strip() for cell in row):
                continue
            if len(events) >= MAX_EVENT_ROWS:
                errors.append(f"{name}:{line}: more than {MAX_EVENT_ROWS} events")
                break
            try:
                events.append(_scripted(row, line, start, program, emails))
            except Invalid as exc:
                errors.append(f"{name}:{line}: {exc.detail}")
    if errors:
        raise Invalid("\n".join(errors), field="events")
    return events


def _delimiter(handle) -> str:
    first = handle.readline()
    handle.seek(0)
    return ";" if first.count(";") > first.count(",") else ","


def _scripted(row: list[str], line: int, start, program: Program, emails) -> ScriptedEvent:
    if len(row) < 3 or len(row) > 4:
        raise Invalid(f"expected day,email,event[,detail], got {len(row)} column(s)")
    day, email, kind = (cell.strip() for cell in row[:3])
    detail = row[3].strip() if len(row) == 4 and row[3].strip() else None
    try:
        offset = float(day)
        if not 0 <= offset <= 3660:
            raise ValueError
    except ValueError:
        raise Invalid(f"day must be a number of days from the start (0 to 3660), got {day!r}") from None
    email = email.lower()
    if email not in emails:
        raise Invalid(f"unknown lead {email!r} (not in the leads file)")
    if kind not in SCRIPTED_EVENTS:
        raise Invalid(f"unknown event {kind!r} (expected one of {', '.join(sorted(SCRIPTED_EVENTS))})")
    if kind == "stage":
        detail = parse_stage(detail or "", field="detail")
    elif kind == "persona" and detail not in program.personas:
        raise Invalid(f"unknown persona {detail!r} (expected one of {', '.join(program.personas)})")
    elif kind == "consumed" and detail not in program.emails:
        raise Invalid(f"consumed needs a known email in detail, got {detail!r}")
    return ScriptedEvent(start + timedelta(days=offset), email, Event(EventKind(kind), detail), line)


def simulate(program: Program, leads: list[dict], events: list[ScriptedEvent], *,
             start: datetime, days: int) -> list[SimLead]:
    """Fold enrolment, scripted events, due steps and stage advancement over each lead, in time
    order. A lead is a dict of standard fields and `custom`, as clean_lead_fields returns."""
    end = start + timedelta(days=days)
    sims = {lead["email"]: SimLead(lead["email"], lead_fields(lead, lead.get("custom")))
            for lead in leads}
    queue: list = []
    sequence = 0

    def push(at: datetime, email: str, event: Event | None, line: int | None = None) -> None:
        """`event` None: an idle check."""
        nonlocal sequence
        sequence += 1
        heapq.heappush(queue, (at, sequence, email, event, line))

    for email in sims:
        push(start, email, Event(EventKind.ENROLLED))
    for scripted in events:
        push(scripted.at, scripted.email, scripted.event, scripted.line)
    while queue:
        at, _, email, event, line = heapq.heappop(queue)
        if at > end:
            break
        sim = sims[email]
        if event is None:
            if at == sim.idle_at:
                _advance(program, sim, _advancement(program, sim, None, None, at), at, IDLE)
        elif event.kind is EventKind.DUE and (sim.state.due_at is None or sim.state.due_at > at):
            continue  # superseded: the lead was rescheduled since this wake-up was queued
        elif event.kind is EventKind.STAGE and not _stage_allowed(sim, event.detail, at, line):
            continue
        else:
            if event.kind is EventKind.ENROLLED:
                sim.state = new_state(program, persona=resolve_persona(program, sim.fields),
                                      stage=sim.fields.get("stage") or "inquiry",
                                      timezone=sim.fields.get("timezone"))
                sim.stage_since = at
            _decide(program, sim, event, at)
            kind = RESPONSE_EVENTS.get(event.kind)
            if kind is not None:
                advance = _advancement(program, sim, kind, event.detail, at)
                sim.last_response_at = at
                _advance(program, sim, advance, at, str(event.kind))
        if sim.state.due_at is not None and sim.state.due_at <= end:
            push(sim.state.due_at, email, Event(EventKind.DUE))
        idle_at = next_idle_check(program.advance, stage=sim.state.stage,
                                  last_response_at=sim.last_response_at,
                                  stage_since=sim.stage_since)
        if idle_at != sim.idle_at:
            sim.idle_at = idle_at
            if idle_at is not None and idle_at <= end:
                push(idle_at, email, None)
    return list(sims.values())


def _decide(program: Program, sim: SimLead, event: Event, at: datetime) -> None:
    stage = sim.state.stage
    decision = decide(program, sim.state, event, at)
    sim.state = decision.state
    if sim.state.stage != stage:
        sim.stage_since = at
    sim.path += [PathEntry(sim.email, a.at, str(a.kind), a.asset, a.track, a.reason, str(a.cause),
                           sim.state.timezone) for a in decision.actions]


def _advancement(program: Program, sim: SimLead, kind: str | None, detail: str | None,
                 at: datetime) -> Advance | None:
    return advancement(program.advance, stage=sim.state.stage, event_kind=kind, detail=detail,
                       last_response_at=sim.last_response_at, now=at,
                       stage_since=sim.stage_since)


def _advance(program: Program, sim: SimLead, advance: Advance | None, at: datetime,
             cause: str) -> None:
    """Apply an advance rule's stage change, as a stage event through the transition table."""
    if advance is None or not _stage_allowed(sim, advance.to, at):
        return
    sim.path.append(PathEntry(sim.email, at, "advance", None, sim.state.track, advance.reason,
                              cause, sim.state.timezone, advance.rule.describe()))
    _decide(program, sim, Event(EventKind.STAGE, advance.to), at)


def _stage_allowed(sim: SimLead, stage: str, at: datetime, line: int | None = None) -> bool:
    try:
        check_transition(sim.state.stage, stage)
    except NurtureError as exc:
        sim.path.append(PathEntry(sim.email, at, "rejected", None, sim.state.track, exc.detail,
                                  "stage", sim.state.timezone))
        if line is not None:
            sim.rejected.append(RejectedStage(line, at, exc.detail))
        return False
    return True
