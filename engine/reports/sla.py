"""SLA compliance: were MQLs answered within the service level, which breaches are open or
resolved, and what marketing did for stalled opportunities.

Definitions (the rules are engine/sales/sla.py's, read the same way):
- An MQL *entered* in a period when its lead has a stage change to mql at a moment of the
  period; a lead that becomes an MQL twice (recycled, then qualified again) counts twice, each
  entry with its own clock.
- The SLA of a lead is `sla.mql_response` of the first program it was enrolled in that has an
  `sla:` section (the version that program runs now), else the default (14 days), as
  engine/sales/sla.py picks it. Due = entered + SLA.
- *Answered* is what stops the SLA clock: the lead's first stage change out of mql after it
  entered (accepted -> sal, rejected -> recycled, or any other move: disqualified, back to
  engaged). engine/sales/sla.py breaches an MQL still in mql when due and resolves the breach
  once it has left mql.
- *Within SLA*: answered at or before due; *late*: answered after due; *unanswered*: still in
  mql now; *overdue*: unanswered and past due now. The within-SLA share is within SLA over the
  MQLs whose outcome is known (within + late + overdue): an MQL still inside its window may yet
  be answered in time, so it counts in neither part.
- *Owner*: the lead's owner now (sales' acceptor, or as assigned); "(none)" when unset.
- *Breaches*: SlaBreach rows detected in the period, by kind; *resolved* when resolved_at is
  set (at any time up to now), *open* otherwise.
- *Stalled opportunities*: breaches of kind opportunity_stalled detected in the period, by
  what marketing did (SlaBreach.action, e.g. enrolled in a support track), with how many were
  resolved (updated or moved on), are still open, and were won (reached customer after the
  stall's clock started).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, case, extract, func, literal, select
from sqlalchemy.orm import Session

from engine.journeys.models import Enrollment
from engine.leads.models import Lead, StageChange
from engine.leads.stages import Stage
from engine.programs.models import ProgramRecord
from engine.programs.store import program_at, running_version
from engine.reports.model import (
    Chart,
    Column,
    Report,
    Table,
    dimension_columns,
    dimensions,
    rate,
)
from engine.reports.query import Bucket, ReportQuery
from engine.reports.scope import UNSET, Scope, bucket_index, count_where, lead_value
from engine.sales.models import SlaBreach
from engine.sales.sla import MQL_UNANSWERED, OPPORTUNITY_STALLED
from engine.scoring.rules import SlaRules

MQL_COLUMNS = [
    Column("mqls", "MQLs"),
    Column("within_sla", "answered within SLA"),
    Column("late", "answered late"),
    Column("unanswered", "unanswered"),
    Column("overdue", "unanswered past due"),
    Column("within_sla_share", "within SLA", "rate"),
]
COUNTS = ("mqls", "within_sla", "late", "unanswered", "overdue")
BREACH_KINDS = (MQL_UNANSWERED, OPPORTUNITY_STALLED)


def build(session: Session, query: ReportQuery, *, now: datetime | None = None) -> Report:
    """`now` (default: the clock) decides what is still unanswered and overdue."""
    now = now or datetime.now(UTC)
    buckets = query.buckets()
    slas = _program_slas(session)
    by_period, by_owner = _mql_tables(session, query, buckets, slas, now)
    report = Report(name="sla", title="SLA compliance", query=query, generated_at=now,
                    tables=[by_period, by_owner, _breach_table(session, query, buckets),
                            _stalled_table(session, query, buckets)])
    default = SlaRules().mql_response
    named = ", ".join(f"{name} {_duration(sla)}" for name, sla in sorted(slas.values()))
    report.notes.append(
        f"MQL response SLA: {named + '; ' if named else ''}{_duration(default)} for leads of "
        "no program with an sla: section (the first such program a lead was enrolled in "
        "sets its SLA).")
    return report


# -- MQL response ---------------------------------------------------------------------------

def _program_slas(session: Session) -> dict[int, tuple[str, timedelta]]:
    """Programs whose running version has an `sla:` section (engine/sales/sla.py reads
    only those): id -> (name, mql_response). A handful of rows."""
    found = {}
    for record in session.scalars(select(ProgramRecord)
                                  .where(ProgramRecord.current_version.is_not(None))):
        rules = program_at(session, record.id, running_version(record)).sla
        if rules != SlaRules():
            found[record.id] = (record.name, rules.mql_response)
    return found


def _mql_tables(session: Session, query: ReportQuery, buckets: list[Bucket],
                slas: dict[int, tuple[str, timedelta]], now: datetime) -> tuple[Table, Table]:
    scope = Scope(session, query)
    entered = StageChange
    answered_at = entered.left_at  # the lead's next change: the first out of mql
    entries = (scope.join(select(bucket_index(entered.at, buckets).label("bucket"),
                                 scope.split.label("split"),
                                 func.coalesce(lead_value(Lead.owner, entered.lead_id),
                                               UNSET).label("owner"),
                                 entered.at.label("entered_at"),
                                 answered_at.label("answered_at"),
                                 _sla_seconds(entered.lead_id, slas).label("sla"))
                          .select_from(entered), entered.lead_id)
               .where(entered.to_stage == Stage.MQL, entered.at >= query.start,
                      entered.at < query.end)
               # computed once: each figure below reads answered_at and sla again
               .cte("entries").prefix_with("MATERIALIZED"))
    took = _epoch(entries.c.answered_at) - _epoch(entries.c.entered_at)
    unanswered = entries.c.answered_at.is_(None)
    overdue = and_(unanswered, _epoch(entries.c.entered_at) + entries.c.sla <= now.timestamp())
    rows = session.execute(
        select(entries.c.bucket, entries.c.split, entries.c.owner,
               func.count().label("mqls"),
               count_where(and_(~unanswered, took <= entries.c.sla)).label("within_sla"),
               count_where(and_(~unanswered, took > entries.c.sla)).label("late"),
               count_where(unanswered).label("unanswered"),
               count_where(overdue).label("overdue"))
        .group_by(entries.c.bucket, entries.c.split, entries.c.owner)).all()

    dims = dimension_columns(query)
    period_counts: dict[tuple, dict] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    owner_rows = []
    for row in rows:
        counts = {key: int(getattr(row, key)) for key in COUNTS}
        for key in COUNTS:
            period_counts[(row.bucket, row.split)][key] += counts[key]
        owner_rows.append(_mql_row(query, buckets, row.bucket, row.split, counts,
                                   owner=row.owner))
    splits = sorted({split for _, split in period_counts}) or [UNSET]
    period_rows = [_mql_row(query, buckets, index, split,
                            period_counts.get((index, split), dict.fromkeys(COUNTS, 0)))
                   for index in range(len(buckets)) for split in splits]
    owner_rows.sort(key=lambda r: (r["_bucket"], r.get("split", ""), r["owner"] == UNSET,
                                   r["owner"]))
    for row in period_rows + owner_rows:
        del row["_bucket"]

    chart_x = "period" if query.by else "split" if query.split else None
    by_period = Table(
        key="mql_response", title="MQLs answered within the SLA", columns=dims + MQL_COLUMNS,
        rows=period_rows,
        chart=Chart("bar", chart_x, ("within_sla_share",),
                    "Share of MQLs answered within the SLA") if chart_x else None,
        notes=[("Answered: the MQL left mql (accepted, rejected or moved on), which stops the "
                "SLA clock. Within SLA share = within SLA / (within SLA + late + unanswered "
                "past due); MQLs still inside their SLA are in neither part."),
               "An MQL counts in the period it entered mql, however late it was answered."])
    by_owner = Table(
        key="mql_response_by_owner", title="MQLs answered within the SLA, per owner",
        columns=dims + [Column("owner", "owner", "text")] + MQL_COLUMNS, rows=owner_rows,
        notes=["Owner: the lead's owner now; an MQL sales never accepted usually has none."])
    return by_period, by_owner


def _mql_row(query: ReportQuery, buckets: list[Bucket], index: int, split: str,
             counts: dict, owner: str | None = None) -> dict:
    row = dimensions(query, buckets[index].label, split)
    row["_bucket"] = index
    if owner is not None:
        row["owner"] = owner
    row.update(counts)
    known = counts["within_sla"] + counts["late"] + counts["overdue"]
    row["within_sla_share"] = rate(counts["within_sla"], known)
    return row


def _sla_seconds(lead_id, slas: dict[int, tuple[str, timedelta]]):
    """The lead's MQL response SLA in seconds: that of the first program it was enrolled in
    with an sla: section, else the default."""
    default = int(SlaRules().mql_response.total_seconds())
    if not slas:
        return literal(default)
    first = (select(Enrollment.program_id)
             .where(Enrollment.lead_id == lead_id, Enrollment.program_id.in_(slas))
             .order_by(Enrollment.id).limit(1).scalar_subquery())
    return case({pid: int(sla.total_seconds()) for pid, (_, sla) in slas.items()}, value=first,
                else_=default)


# -- breaches -------------------------------------------------------------------------------

def _breach_table(session: Session, query: ReportQuery, buckets: list[Bucket]) -> Table:
    scope = Scope(session, query)
    breaches = (scope.join(select(bucket_index(SlaBreach.detected_at, buckets).label("bucket"),
                                  scope.split.label("split"), SlaBreach.kind.label("kind"),
                                  SlaBreach.resolved_at.is_not(None).label("resolved")),
                           SlaBreach.lead_id)
                .where(SlaBreach.detected_at >= query.start, SlaBreach.detected_at < query.end)
                .subquery())
    rows = session.execute(
        select(breaches.c.bucket, breaches.c.split, breaches.c.kind, func.count().label("n"),
               count_where(breaches.c.resolved).label("resolved"))
        .group_by(breaches.c.bucket, breaches.c.split, breaches.c.kind)).all()
    found = {(r.bucket, r.split, r.kind): (int(r.n), int(r.resolved)) for r in rows}
    splits = sorted({split for _, split, _ in found}) or [UNSET]
    kinds = list(BREACH_KINDS) + sorted({k for *_, k in found} - set(BREACH_KINDS))
    table_rows = []
    for index in range(len(buckets)):
        for split in splits:
            for kind in kinds:
                detected, resolved = found.get((index, split, kind), (0, 0))
                table_rows.append({**dimensions(query, buckets[index].label, split), "kind": kind,
                                   "detected": detected, "resolved": resolved,
                                   "open": detected - resolved})
    return Table(
        key="breaches", title="SLA breaches",
        columns=dimension_columns(query) + [Column("kind", "kind", "text"),
                                            Column("detected", "detected"),
                                            Column("resolved", "resolved"),
                                            Column("open", "open")],
        rows=table_rows,
        notes=[("Breaches detected in the period; resolved means resolved since, up to now "
                "(the lead left the stage, or a stalled opportunity was updated).")])


def _stalled_table(session: Session, query: ReportQuery, buckets: list[Bucket]) -> Table:
    scope = Scope(session, query)
    won = (select(StageChange.id)
           .where(StageChange.lead_id == SlaBreach.lead_id,
                  StageChange.to_stage == Stage.CUSTOMER, StageChange.at >= SlaBreach.since)
           .exists())
    stalls = (scope.join(select(bucket_index(SlaBreach.detected_at, buckets).label("bucket"),
                                scope.split.label("split"), SlaBreach.action.label("action"),
                                SlaBreach.resolved_at.is_not(None).label("resolved"),
                                won.label("won")), SlaBreach.lead_id)
              .where(SlaBreach.kind == OPPORTUNITY_STALLED,
                     SlaBreach.detected_at >= query.start, SlaBreach.detected_at < query.end)
              .subquery())
    rows = session.execute(
        select(stalls.c.bucket, stalls.c.split, stalls.c.action, func.count().label("n"),
               count_where(stalls.c.resolved).label("resolved"),
               count_where(stalls.c.won).label("won"))
        .group_by(stalls.c.bucket, stalls.c.split, stalls.c.action)
        .order_by(stalls.c.bucket, stalls.c.split, func.count().desc(), stalls.c.action)).all()
    return Table(
        key="stalled", title="Stalled opportunities and what marketing did",
        columns=dimension_columns(query) + [Column("action", "marketing action", "text"),
                                            Column("stalled", "stalled"),
                                            Column("resolved", "resolved"),
                                            Column("open", "still stalled"),
                                            Column("won", "won since")],
        rows=[{**dimensions(query, buckets[r.bucket].label, r.split), "action": r.action,
               "stalled": int(r.n), "resolved": int(r.resolved),
               "open": int(r.n) - int(r.resolved), "won": int(r.won)} for r in rows],
        notes=[("Opportunities without update for sla.opportunity_stalled, by the action "
                "recorded when the stall was found; won: reached customer after the stall's "
                "clock started.")])


# -- helpers --------------------------------------------------------------------------------

def _epoch(at):
    """Seconds since 1970 of a stored UTC time, on SQLite and PostgreSQL alike."""
    return extract("epoch", at)


def _duration(value: timedelta) -> str:
    if value % timedelta(days=1) == timedelta(0):
        days = value // timedelta(days=1)
        return f"{days} day{'s' if days != 1 else ''}"
    return f"{value / timedelta(hours=1):g} hours"
