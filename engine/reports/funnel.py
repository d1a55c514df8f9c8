"""The funnel: how leads move along the success path inquiry → engaged → mql → sal →
opportunity → customer, per bucket of the period (the whole period unless `by`) and per split
value, for the leads in scope (engine/reports/scope.py). Everything is read from the stage
history (stage_changes), never from a lead's stage today.

Definitions (an "entry" into a stage is a stage_changes row whose to_stage is that stage; the
row written when a lead is created, from_stage None, is an entry into its first stage; "by
the end" means before the query's end; instants are compared as stored, in UTC, and buckets
are [start, end) in the query's time zone):

- entered: leads with an entry into the stage within the bucket (a lead entering twice
  counts once).
- balance_start / balance_end: leads in the stage as the bucket opens / closes. A lead's stage
  at an instant is the to_stage of its latest row (by time, then id) before the instant; the
  closing balance therefore holds every change made up to the bucket's last instant, and a
  change at the very start of a bucket is in that bucket's flows, not its opening balance.
  The opening balance of the first bucket is read that way; each later balance follows from
  it by the flows, so balance_end = balance_start + inflow - outflow in every row.
- inflow / outflow: changes into / out of the stage within the bucket (rows, not leads:
  a lead may go out and back in). Creations are inflow. Outflow reads each change's
  from_stage, which the one transition check writes from the lead's stage at the time.
- converted_next / conversion_next: of the leads that entered the stage in the bucket, those
  with an entry into the next success-path stage at or after their first entry in the bucket
  and by the end; the rate is over `entered`. None for customer (no next stage).
- reached / cumulative_from_inquiry: the cohort is the leads that entered inquiry in the
  bucket; reached is how many of them have an entry into the stage at or after their inquiry
  entry and by the end, whatever the path ("at all"), and the share is over the cohort. A lead
  created at a later stage (an MQL from a list) is in no cohort: it counts in `entered` only.
- In order: a lead reached stage k in order when its history holds entries into inquiry,
  engaged, ... up to k at non-decreasing times (detours in between are allowed: inquiry →
  engaged → mql → recycled → mql → sal is in order; inquiry → mql skips engaged, and a lead
  created as mql has no inquiry: neither is in order at mql). Its in-order arrival at k is
  the earliest entry into k at or after its in-order arrival at k-1. entered_in_order counts
  the leads with an entry into the stage in the bucket at or after their in-order arrival
  there; converted_next_in_order those of them with an entry into the next stage at or after
  their first such entry (by the end); reached_in_order the cohort leads that arrived in
  order at the stage by the end; cumulative_in_order its share of the cohort.
- Detours: per success-path stage, leads that left it for recycled or for disqualified in the
  bucket, and leads that came back into it from recycled; the detour stages' own balances and
  flows are a table of their own.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import Select, and_, case, exists, func, literal, select, union_all
from sqlalchemy.orm import Session, aliased

from engine.leads.models import StageChange
from engine.leads.stages import SUCCESS_PATH
from engine.reports.model import Chart, Column, Report, Table, dimension_columns, dimensions, rate
from engine.reports.query import ReportQuery
from engine.reports.scope import bucket_index, scoped_leads
from engine.reports.stage_history import (
    DETOURS,
    NEXT_STAGE,
    split_values,
)

SC = StageChange
INQUIRY, RECYCLED, DISQUALIFIED = SUCCESS_PATH[0], *DETOURS
Key = tuple  # (bucket index, split value, stage)


def build(session: Session, query: ReportQuery) -> Report:
    figures = _Figures(session, query)
    report = Report(name="funnel", title="Funnel", query=query,
                    generated_at=datetime.now(UTC))
    report.tables = [figures.funnel_table(), figures.in_order_table(), figures.detours_table(),
                     figures.detour_stages_table()]
    report.notes = [
        "Stages as of any date come from the stage history, never from a lead's stage today.",
        ("Conversions count next stages reached by the end of the period, whichever bucket "
        "the lead entered in."),
    ]
    return report


class _Figures:
    """The funnel's figures, aggregated by the database, then laid out per bucket and split."""

    def __init__(self, session: Session, query: ReportQuery) -> None:
        self.query = query
        self.buckets = query.buckets()
        self.scope = scoped_leads(session, query).subquery("scope")
        self.bucket = bucket_index(SC.at, self.buckets).label("bucket")
        self.in_period = and_(SC.at >= query.start, SC.at < query.end)
        self.path = self._path()
        self.changes, self.leads_moved = self._moves(session)
        self.opening = self._opening(session)
        self.entered = self._converted(session, self._first_entries())
        self.entered_in_order = self._converted(session, self._first_entries(in_order=True))
        self.cohort, self.reached, self.reached_in_order = self._reached(session)
        self.splits = split_values(query, [key[1] for key in self.changes]
                                   + [split for split, _ in self.opening])
        self.balances = self._balances()

    # --- queries ---------------------------------------------------------------------------

    def _moves(self, session: Session) -> tuple[dict, dict]:
        """Changes and distinct leads per (bucket, split, from_stage, to_stage)."""
        rows = session.execute(
            select(self.bucket, self.scope.c.split, SC.from_stage, SC.to_stage,
                   func.count(), func.count(SC.lead_id.distinct()))
            .join(self.scope, self.scope.c.lead_id == SC.lead_id).where(self.in_period)
            .group_by(self.bucket, self.scope.c.split, SC.from_stage, SC.to_stage))
        changes, leads = {}, {}
        for bucket, split, from_stage, to_stage, n_changes, n_leads in rows:
            changes[bucket, split, from_stage, to_stage] = n_changes
            leads[bucket, split, from_stage, to_stage] = n_leads
        return changes, leads

    def _opening(self, session: Session) -> dict[tuple[str, str], int]:
        """Leads per (split, stage) as the period opens: each one's latest row before it."""
        latest = (select(SC.lead_id, SC.to_stage, self.scope.c.split,
                         func.row_number().over(partition_by=SC.lead_id,
                                                order_by=(SC.at.desc(), SC.id.desc()))
                         .label("latest"))
                  .join(self.scope, self.scope.c.lead_id == SC.lead_id)
                  .where(SC.at < self.query.start).subquery("latest"))
        rows = session.execute(select(latest.c.split, latest.c.to_stage, func.count())
                               .where(latest.c.latest == 1)
                               .group_by(latest.c.split, latest.c.to_stage))
        return {(split, stage): n for split, stage, n in rows}

    def _path(self):
        """Per lead active in the period and success-path stage it arrived at in order by the
        end: (lead_id, stage, t), t the in-order arrival (see the module's docstring)."""
        active = (select(SC.lead_id).join(self.scope, self.scope.c.lead_id == SC.lead_id)
                  .where(self.in_period).distinct())
        levels = []
        for stage in SUCCESS_PATH:
            level = (select(SC.lead_id, func.min(SC.at).label("t"))
                     .where(SC.to_stage == stage, SC.at < self.query.end))
            if levels:
                previous = levels[-1]
                level = level.join(previous, and_(previous.c.lead_id == SC.lead_id,
                                                  SC.at >= previous.c.t))
            else:
                level = level.where(SC.lead_id.in_(active))
            levels.append(level.group_by(SC.lead_id).cte(f"arrived_{stage}"))
        return union_all(*(select(level.c.lead_id, literal(stage).label("stage"), level.c.t)
                           for stage, level in zip(SUCCESS_PATH, levels, strict=True))
                         ).cte("path")

    def _first_entries(self, *, in_order: bool = False) -> Select:
        """Per (bucket, lead, split, stage): the lead's first entry into the stage in the
        bucket (in order: its first entry at or after its in-order arrival there)."""
        first = (select(self.bucket, SC.lead_id, self.scope.c.split,
                        SC.to_stage.label("stage"), func.min(SC.at).label("first_at"))
                 .join(self.scope, self.scope.c.lead_id == SC.lead_id).where(self.in_period))
        if in_order:
            first = first.join(self.path, and_(self.path.c.lead_id == SC.lead_id,
                                               self.path.c.stage == SC.to_stage,
                                               SC.at >= self.path.c.t))
        return first.group_by(self.bucket, SC.lead_id, self.scope.c.split, SC.to_stage)

    def _converted(self, session: Session, entries: Select) -> dict[Key, tuple[int, int]]:
        """(entered, converted to the next stage by the end) per (bucket, split, stage)."""
        first = entries.subquery("first")
        later = aliased(StageChange)
        next_stage = case(*((first.c.stage == stage, following)
                            for stage, following in NEXT_STAGE.items()), else_=None)
        converted = exists().where(later.lead_id == first.c.lead_id,
                                   later.to_stage == next_stage,
                                   later.at >= first.c.first_at, later.at < self.query.end)
        rows = session.execute(
            select(first.c.bucket, first.c.split, first.c.stage, func.count(),
                   func.sum(case((converted, 1), else_=0)))
            .group_by(first.c.bucket, first.c.split, first.c.stage))
        return {(bucket, split, stage): (n, int(done or 0))
                for bucket, split, stage, n, done in rows}

    def _reached(self, session: Session) -> tuple[dict, dict, dict]:
        """The inquiry cohort per (bucket, split), and per (bucket, split, stage) how many of
        it reached the stage by the end, at all and in order."""
        cohort = self._first_entries().where(SC.to_stage == INQUIRY).subquery("cohort")
        group = (cohort.c.bucket, cohort.c.split)
        sizes = {(bucket, split): n for bucket, split, n in session.execute(
            select(*group, func.count()).group_by(*group))}
        later = aliased(StageChange)
        at_all = session.execute(
            select(*group, later.to_stage, func.count(later.lead_id.distinct()))
            .join(later, and_(later.lead_id == cohort.c.lead_id,
                              later.at >= cohort.c.first_at, later.at < self.query.end))
            .where(later.to_stage.in_(SUCCESS_PATH)).group_by(*group, later.to_stage))
        in_order = session.execute(
            select(*group, self.path.c.stage, func.count())
            .join(self.path, self.path.c.lead_id == cohort.c.lead_id)
            .group_by(*group, self.path.c.stage))
        return (sizes, {(bucket, split, stage): n for bucket, split, stage, n in at_all},
                {(bucket, split, stage): n for bucket, split, stage, n in in_order})

    # --- layout ----------------------------------------------------------------------------

    def _flows(self) -> tuple[dict, dict]:
        inflow: dict[Key, int] = defaultdict(int)
        outflow: dict[Key, int] = defaultdict(int)
        for (bucket, split, from_stage, to_stage), n in self.changes.items():
            inflow[bucket, split, to_stage] += n
            if from_stage is not None:
                outflow[bucket, split, from_stage] += n
        return inflow, outflow

    def _balances(self) -> dict[Key, dict]:
        """Per (bucket, split, stage): balance_start, inflow, outflow, balance_end."""
        inflow, outflow = self._flows()
        found = {}
        for split in self.splits:
            for stage in SUCCESS_PATH + DETOURS:
                balance = self.opening.get((split, stage), 0)
                for index in range(len(self.buckets)):
                    key = (index, split, stage)
                    flows = {"balance_start": balance, "inflow": inflow[key],
                             "outflow": outflow[key]}
                    balance += inflow[key] - outflow[key]
                    found[key] = {**flows, "balance_end": balance}
        return found

    def _rows(self, stages: tuple[str, ...], figures) -> list[dict]:
        rows = []
        for index, bucket in enumerate(self.buckets):
            for split in self.splits:
                for stage in stages:
                    rows.append({**dimensions(self.query, bucket.label, split), "stage": stage,
                                 **figures((index, split, stage))})
        return rows

    def funnel_table(self) -> Table:
        def figures(key: Key) -> dict:
            entered, converted = self.entered.get(key, (0, 0))
            last = key[2] not in NEXT_STAGE
            cohort = self.cohort.get(key[:2], 0)
            reached = self.reached.get(key, 0)
            return {"entered": entered, **self.balances[key],
                    "converted_next": None if last else converted,
                    "conversion_next": None if last else rate(converted, entered),
                    "reached": reached, "cumulative_from_inquiry": rate(reached, cohort)}

        return Table(
            key="funnel", title="Success path",
            columns=[*dimension_columns(self.query), Column("stage", "stage", "text"),
                     Column("entered", "entered"),
                     Column("balance_start", "in stage at start"),
                     Column("inflow", "inflow"), Column("outflow", "outflow"),
                     Column("balance_end", "in stage at end"),
                     Column("converted_next", "reached next stage"),
                     Column("conversion_next", "conversion to next", "rate"),
                     Column("reached", "inquiries that reached it"),
                     Column("cumulative_from_inquiry", "cumulative from inquiry", "rate")],
            rows=self._rows(SUCCESS_PATH, figures),
            chart=Chart("bar", "stage", ("entered",), "Leads entering each stage"),
            notes=[("entered: leads that entered the stage in the period; inflow and outflow "
                   "count changes (a lead may leave and come back)."),
                   ("Conversion to next: of the leads that entered the stage, those that "
                   "entered the next stage afterwards, by the end of the period."),
                   ("Cumulative from inquiry: of the leads that entered inquiry in the period, "
                   "the share that reached the stage by the end, whatever the path; leads "
                   "created at a later stage are in entered but in no inquiry cohort.")])

    def in_order_table(self) -> Table:
        def figures(key: Key) -> dict:
            entered, converted = self.entered_in_order.get(key, (0, 0))
            last = key[2] not in NEXT_STAGE
            reached = self.reached_in_order.get(key, 0)
            return {"entered_in_order": entered,
                    "converted_next_in_order": None if last else converted,
                    "conversion_next_in_order": None if last else rate(converted, entered),
                    "reached_in_order": reached,
                    "cumulative_in_order": rate(reached, self.cohort.get(key[:2], 0))}

        return Table(
            key="in_order", title="Through the success path in order",
            columns=[*dimension_columns(self.query), Column("stage", "stage", "text"),
                     Column("entered_in_order", "entered in order"),
                     Column("converted_next_in_order", "reached next stage"),
                     Column("conversion_next_in_order", "conversion to next", "rate"),
                     Column("reached_in_order", "inquiries that reached it in order"),
                     Column("cumulative_in_order", "cumulative from inquiry", "rate")],
            rows=self._rows(SUCCESS_PATH, figures),
            chart=Chart("bar", "stage", ("entered_in_order",),
                        "Leads entering each stage in order"),
            notes=[("In order: the lead's history holds every earlier success-path stage, one "
                   "after the other, before this one (detours such as recycled in between "
                   "are allowed); a lead that skipped a stage or was created past inquiry "
                   "is counted in the success path table only.")])

    def detours_table(self) -> Table:
        def figures(key: Key) -> dict:
            bucket, split, stage = key
            return {"left_for_recycled": self.leads_moved.get(
                        (bucket, split, stage, RECYCLED), 0),
                    "left_for_disqualified": self.leads_moved.get(
                        (bucket, split, stage, DISQUALIFIED), 0),
                    "back_from_recycled": self.leads_moved.get(
                        (bucket, split, RECYCLED, stage), 0)}

        return Table(
            key="detours", title="Detours: recycled and disqualified",
            columns=[*dimension_columns(self.query), Column("stage", "stage", "text"),
                     Column("left_for_recycled", "left for recycled"),
                     Column("left_for_disqualified", "left for disqualified"),
                     Column("back_from_recycled", "came back from recycled")],
            rows=self._rows(SUCCESS_PATH, figures),
            notes=[("Leads, in the period: those that left the stage for recycled or "
                   "disqualified, and recycled leads that came back into the path here.")])

    def detour_stages_table(self) -> Table:
        def figures(key: Key) -> dict:
            return {"entered": self.entered.get(key, (0, 0))[0], **self.balances[key]}

        return Table(
            key="detour_stages", title="Recycled and disqualified leads",
            columns=[*dimension_columns(self.query), Column("stage", "stage", "text"),
                     Column("entered", "entered"),
                     Column("balance_start", "in stage at start"),
                     Column("inflow", "inflow"), Column("outflow", "outflow"),
                     Column("balance_end", "in stage at end")],
            rows=self._rows(DETOURS, figures))
