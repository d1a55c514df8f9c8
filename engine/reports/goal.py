"""Program goal: how many of the leads a program enrolled reached what the program is for (its
`goal:`, engine/programs/spec.py Goal) within the goal's time limit, per persona and source.

Definitions:
- The goal is read from the program's running version (the launched one; before the first
  launch, the newest loaded): `{stage: opportunity, within: 90d}` or
  `{event: form_submitted, page: demo, within: 90d}`. A program without a goal has nothing to
  measure: the report says so and counts nothing for it.
- Enrolled: the program's enrollments created in the period (a cohort: each counts in the
  bucket of its enrollment), for leads in scope (engine/reports/scope.py).
- Reached: within the time limit of the enrollment (at or after it, and at most `within`
  later; no limit when the goal has none), up to the moment the report runs:
  - a stage goal: a recorded stage change (the stage history) into the goal's stage, or past
    it on the success path (inquiry, engaged, mql, sal, opportunity, customer) from a stage
    short of it: a lead that skipped the stage on its way reached it; one moving on from it
    (opportunity to customer) does not reach it again. The stage a lead was created in is no
    change: a lead created, or already, at the goal when it enrolled has not reached it until
    it moves there again. A detour stage (recycled, disqualified) as a goal counts only
    itself.
  - an event goal: a person's response of that kind recorded in the program's log for the
    lead (lead_events: opens, clicks, page visits, forms, content consumed; machines' events
    never get there), on the goal's page or email when it names one. Its time is when the
    engine recorded it.
- Rate: reached / enrolled. Waiting: not reached yet, with time left (the enrollment's limit
  is after now; every lead not reached when the goal has no limit): the rate of recent
  cohorts still grows.
- Persona: the lead's own, else the one its enrollment matched; source: the lead's source
  channel; both as the splits read them, (none) when unset.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    ColumnElement,
    Interval,
    Select,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.orm import Session

from engine.db import utcnow
from engine.errors import NotFound
from engine.journeys.decide import EventKind
from engine.journeys.models import Enrollment
from engine.leads.models import Lead, LeadEvent, StageChange
from engine.leads.stages import SUCCESS_PATH
from engine.programs.models import ProgramRecord
from engine.programs.spec import Goal
from engine.programs.store import list_programs, program_at, running_version
from engine.reports.model import (
    Chart,
    Column,
    Report,
    Table,
    dimension_columns,
    dimensions,
    rate,
)
from engine.reports.query import ReportQuery
from engine.reports.scope import UNSET, bucket_label, persona_of, split_value

# A goal's event kind (as program files name responses) -> the kind the lead's log records.
LOGGED_AS = {"open": EventKind.OPENED, "click": EventKind.CLICKED,
             "page_view": EventKind.PAGE_VIEWED, "form_submitted": EventKind.FORM_SUBMITTED,
             "consumed": EventKind.CONSUMED}
COUNTS = ("enrolled", "reached", "waiting")
_SQLITE_TIME = "%Y-%m-%d %H:%M:%f"


@dataclass(frozen=True)
class Measured:
    """A program whose goal the report measures."""

    record: ProgramRecord
    goal: Goal


def build(session: Session, query: ReportQuery, *, now: datetime | None = None) -> Report:
    now = now or utcnow()
    report = Report(name="goal", title="Program goal", query=query, generated_at=now)
    measured, notes = _programs(session, query)
    report.notes += notes
    counts: dict[tuple, dict[str, int]] = {}
    for program in measured:
        for key, found in _counts(session, query, program, now).items():
            counts[(*key, program.record.name)] = found
    report.tables += [
        _goal_table(query, measured, counts),
        _rollup_table(query, counts, key="personas", title="Per persona", index=2,
                      column=Column("persona", "persona", "text")),
        _rollup_table(query, counts, key="sources", title="Per source channel", index=3,
                      column=Column("source_channel", "source channel", "text")),
    ]
    report.notes.append("Each enrollment counts in the period it began; its goal counts when "
                        "reached within the time limit, up to now, so recent periods still grow "
                        "(see waiting).")
    return report


def _programs(session: Session, query: ReportQuery) -> tuple[list[Measured], list[str]]:
    """The programs measured (the named one, or every program with a goal), and notes on
    those that have none."""
    if query.program is not None:
        record = session.scalar(select(ProgramRecord).where(ProgramRecord.name == query.program))
        if record is None or record.current_version is None:
            raise NotFound(f"no program named {query.program!r}", field="program")
        records = [record]
    else:
        records = [r for r in list_programs(session=session) if r.current_version is not None]
    measured, without = [], []
    for record in records:
        goal = program_at(session, record.id, running_version(record)).goal
        if goal is None:
            without.append(record.name)
        else:
            measured.append(Measured(record, goal))
    notes = []
    if query.program is not None and without:
        notes.append(f"Program {query.program} has no goal, so there is nothing to measure: "
                     "give it one in program.yaml (e.g. goal: {stage: opportunity, within: 90d} "
                     "or goal: {event: form_submitted, page: demo}), then load and launch "
                     "it: the report reads the running version.")
    elif without:
        notes.append(f"Without a goal, not measured: {', '.join(without)}.")
    if query.program is None and not records:
        notes.append("No program is loaded.")
    return measured, notes


# -- counting ---------------------------------------------------------------------------------

def _in_time(at, since, within: timedelta | None, dialect: str) -> ColumnElement[bool]:
    """`at` no later than `within` after `since` (always, without a limit)."""
    if within is None:
        return true()
    if dialect == "sqlite":  # stored as text: compare both in one format, to the millisecond
        return (func.strftime(_SQLITE_TIME, at)
                <= func.strftime(_SQLITE_TIME, since, f"+{within.total_seconds():f} seconds"))
    return at <= since + literal(within, Interval())


def _cohort_reach(at, query: ReportQuery, goal: Goal) -> list[ColumnElement[bool]]:
    """Bounds of when a goal reached by the period's cohort can be: from its start, and
    within the limit of its end (each enrollment's own bounds are tested besides)."""
    bounds = [at >= query.start]
    if goal.within is not None:
        bounds.append(at <= query.end + goal.within)
    return bounds


def _reached(goal: Goal, enrolled, query: ReportQuery, dialect: str) -> Select:
    """The ids of the `enrolled` (a program's enrollments: id, lead_id, program_id,
    created_at) whose lead reached the goal within its limit."""
    if goal.stage is not None:
        change = StageChange
        return (select(enrolled.c.id).distinct()
                .join(change, change.lead_id == enrolled.c.lead_id)
                .where(_into_goal_stage(goal.stage), change.at >= enrolled.c.created_at,
                       _in_time(change.at, enrolled.c.created_at, goal.within, dialect),
                       *_cohort_reach(change.at, query, goal)))
    event = LeadEvent
    condition = [*_cohort_reach(event.at, query, goal),
                 event.program_id == enrolled.c.program_id,
                 event.category == "event", event.kind == str(LOGGED_AS[goal.event]),
                 event.at >= enrolled.c.created_at,
                 _in_time(event.at, enrolled.c.created_at, goal.within, dialect)]
    target = goal.page or goal.email
    if target is not None:
        condition.append(event.detail["detail"].as_string() == target)
    return (select(enrolled.c.id).distinct()
            .join(event, event.lead_id == enrolled.c.lead_id).where(*condition))


def _into_goal_stage(stage: str) -> ColumnElement[bool]:
    """A stage change into `stage`, or past it on the success path from a stage short of it;
    never the stage a lead was created in (from_stage is None)."""
    change = StageChange
    into = change.to_stage == stage
    if stage in SUCCESS_PATH:
        at_or_past = [str(s) for s in SUCCESS_PATH[SUCCESS_PATH.index(stage):]]
        into = or_(into, and_(change.to_stage.in_(at_or_past[1:]),
                              change.from_stage.not_in(at_or_past)))
    return and_(change.from_stage.is_not(None), into)


def _counts(session: Session, query: ReportQuery, program: Measured,
            now: datetime) -> dict[tuple, dict[str, int]]:
    """(period, split, persona, source channel) -> enrolled, reached, waiting."""
    dialect = session.get_bind().dialect.name
    time_left = (true() if program.goal.within is None
                 else Enrollment.created_at > now - program.goal.within)
    # The program's enrollments are its scope: the split is read from each one and its lead.
    enrolled = (select(Enrollment.id, Enrollment.lead_id, Enrollment.program_id,
                       Enrollment.created_at,
                       bucket_label(Enrollment.created_at, query.buckets()).label("period"),
                       split_value(query, Enrollment.persona).label("split"),
                       persona_of(Enrollment.persona).label("persona"),
                       func.coalesce(Lead.source_channel, UNSET).label("source"),
                       case((time_left, 1), else_=0).label("time_left"))
                .join(Lead, Lead.id == Enrollment.lead_id)
                .where(Enrollment.program_id == program.record.id,
                       Enrollment.created_at >= query.start, Enrollment.created_at < query.end)
                .cte("enrolled").prefix_with("MATERIALIZED"))
    # Which of them reached the goal, joined once (as a column, the test would run per row).
    hits = _reached(program.goal, enrolled, query, dialect).subquery("hits")
    reached = case((hits.c.id.is_not(None), 1), else_=0)
    rows = (select(enrolled.c.period, enrolled.c.split, enrolled.c.persona, enrolled.c.source,
                   reached.label("reached"), enrolled.c.time_left)
            .outerjoin(hits, hits.c.id == enrolled.c.id).subquery("rows"))
    keys = (rows.c.period, rows.c.split, rows.c.persona, rows.c.source)
    waiting = case(((rows.c.reached == 0) & (rows.c.time_left == 1), 1), else_=0)
    grouped = select(*keys, func.count(), func.sum(rows.c.reached),
                     func.sum(waiting)).group_by(*keys)
    return {tuple(row[:4]): dict(zip(COUNTS, (int(v or 0) for v in row[4:]), strict=True))
            for row in session.execute(grouped)}


# -- tables -----------------------------------------------------------------------------------

def _metric_columns() -> list[Column]:
    return [Column("enrolled", "enrolled"), Column("reached", "reached goal"),
            Column("rate", "rate", "rate"), Column("waiting", "waiting (time left)")]


def _metrics(found: dict[str, int]) -> dict:
    return {"enrolled": found["enrolled"], "reached": found["reached"],
            "rate": rate(found["reached"], found["enrolled"]), "waiting": found["waiting"]}


def _summed(counts: dict[tuple, dict[str, int]], key_of) -> dict[tuple, dict[str, int]]:
    sums: dict[tuple, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    for key, found in counts.items():
        total = sums[key_of(key)]
        for name in COUNTS:
            total[name] += found[name]
    return sums


def _ordered(query: ReportQuery, sums: dict[tuple, dict[str, int]]) -> list[tuple]:
    order = {bucket.label: i for i, bucket in enumerate(query.buckets())}
    return sorted(sums.items(), key=lambda item: (order.get(item[0][0], -1),
                                                  tuple(str(v) for v in item[0][1:])))


def _goal_table(query: ReportQuery, measured: list[Measured],
                counts: dict[tuple, dict[str, int]]) -> Table:
    """(period, split, program): every bucket of every program measured when not split."""
    sums = _summed(counts, lambda key: (key[0], key[1], key[4]))
    if query.split is None:
        for bucket in query.buckets():
            for program in measured:
                sums.setdefault((bucket.label, UNSET, program.record.name),
                                dict.fromkeys(COUNTS, 0))
    goals = {program.record.name: program.goal.describe() for program in measured}
    rows = [{**dimensions(query, period, split), "program": program, "goal": goals[program],
             **_metrics(found)}
            for (period, split, program), found in _ordered(query, sums)]
    return Table(
        key="goal", title="Program goal",
        columns=[*dimension_columns(query), Column("program", "program", "text"),
                 Column("goal", "goal", "text"), *_metric_columns()],
        rows=rows,
        chart=Chart("bar", x="period" if query.by else "program",
                    series=("enrolled", "reached"), title="Leads enrolled and reaching the goal"),
        notes=["rate: reached / enrolled; waiting: not reached yet, with time left."])


def _rollup_table(query: ReportQuery, counts: dict[tuple, dict[str, int]], *, key: str,
                  title: str, index: int, column: Column) -> Table:
    sums = _summed(counts, lambda k: (k[0], k[1], k[4], k[index]))
    rows = [{**dimensions(query, period, split), "program": program, column.key: value,
             **_metrics(found)}
            for (period, split, program, value), found in _ordered(query, sums)]
    return Table(
        key=key, title=title,
        columns=[*dimension_columns(query), Column("program", "program", "text"), column,
                 *_metric_columns()],
        rows=rows,
        chart=Chart("bar", x=column.key, series=("enrolled", "reached"),
                    title=f"Leads enrolled and reaching the goal, {title.lower()}"))
