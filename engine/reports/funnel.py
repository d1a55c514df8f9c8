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

from sqlalchemy import Select, and_, case, func, or_, select, union_all
from sqlalchemy.orm import Session

from engine.leads.models import StageChange
from engine.leads.stages import STAGES, SUCCESS_PATH
from engine.reports.model import Chart, Column, Report, Table, dimension_columns, dimensions, rate
from engine.reports.query import ReportQuery
from engine.reports.scope import Scope, bucket_index, count_where
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
    """The funnel's figures, aggregated by the database, then laid out per bucket and split.
    Reads of the stage history: the stays open as the period starts (the opening balances),
    and the period's changes: their flows (and the balances they add up to), per lead
    (entries, conversions, inquiry cohorts), and the detour moves among them."""

    def __init__(self, session: Session, query: ReportQuery) -> None:
        self.query = query
        self.buckets = query.buckets()
        self.scope = Scope(session, query)
        self.changes, self.opening = self._moves(session)
        self._entries(session)
        self._detours(session)
        self.splits = split_values(query, [key[1] for key in self.changes]
                                   + [split for split, _ in self.opening])
        self.balances = self._balances()

    # --- queries ---------------------------------------------------------------------------

    def _moves(self, session: Session) -> tuple[dict, dict]:
        """Changes per (bucket, split, from_stage, to_stage) in the period, and leads per
        (split, stage) as it opens. A lead's stage at an instant is the to_stage of its latest
        change before it, that is of its change that is before the instant and that it had
        not left by then (left_at: its next change's time, None for its latest)."""
        start, end = self.query.start, self.query.end
        split = self.scope.split.label("split")
        bucket = bucket_index(SC.at, self.buckets).label("bucket")
        rows = session.execute(self.scope.join(
            select(bucket, split, SC.from_stage, SC.to_stage, func.count()), SC.lead_id)
            .where(SC.at >= start, SC.at < end)
            .group_by(bucket, split, SC.from_stage, SC.to_stage))
        changes = {(bucket_at, split_value, from_stage, to_stage): n
                   for bucket_at, split_value, from_stage, to_stage, n in rows}
        # Two reads, each of its own index: stays left after the start, and current ones.
        stays = union_all(*(self.scope.join(select(split, SC.to_stage), SC.lead_id)
                            .where(SC.at < start, still_open)
                            for still_open in (SC.left_at >= start, SC.left_at.is_(None))))
        stays = stays.subquery("open_stays")
        opening = session.execute(select(stays.c.split, stays.c.to_stage, func.count())
                                  .group_by(stays.c.split, stays.c.to_stage))
        return changes, {(split_value, stage): n for split_value, stage, n in opening}

    def _entries(self, session: Session) -> None:
        """Everything counted from the period's changes, in one statement: one row per lead and
        bucket with its first and last entry into each stage (and its first in-order entry),
        then one sum per figure. A change after the period cannot count for an entry in it,
        and every figure here starts from an entry in the period, so no earlier row is read.
        - entered / entered in order: a first (in-order) entry into the stage in the bucket; an
          entry is in order at or after the lead's in-order arrival at the stage, that is when
          its path level after it is at least the stage's;
        - converted: the lead's last entry into the next stage in the period is at or after
          its first (in-order) entry into the stage in the bucket;
        - the inquiry cohort, and of it those whose last entry into a stage is at or after
          their inquiry entry (reached at all), or whose path level by the end is at least the
          stage's (reached in order: levels never go down)."""
        per_lead = self._per_lead().subquery("per_lead")
        lead = per_lead.c
        figures = [func.count(lead.first_0).label("cohort")]
        for i, stage in enumerate(STAGES):
            figures.append(func.count(lead[f"first_{i}"]).label(f"entered_{i}"))
        for i, stage in enumerate(SUCCESS_PATH):
            figures.append(func.count(lead[f"in_order_{i}"]).label(f"entered_in_order_{i}"))
            figures.append(count_where(lead[f"last_{i}"] >= lead.first_0).label(f"reached_{i}"))
            figures.append(count_where(and_(lead.first_0.is_not(None), lead.level >= i))
                           .label(f"reached_in_order_{i}"))
            if stage in NEXT_STAGE:
                following = lead[f"last_{i + 1}"]
                figures.append(count_where(following >= lead[f"first_{i}"]).label(f"converted_{i}"))
                figures.append(count_where(following >= lead[f"in_order_{i}"])
                               .label(f"converted_in_order_{i}"))
        rows = session.execute(select(lead.bucket, lead.split, *figures)
                               .group_by(lead.bucket, lead.split)).mappings()
        self.entered, self.entered_in_order = {}, {}
        self.cohort, self.reached, self.reached_in_order = {}, {}, {}
        for row in rows:
            bucket, split = row["bucket"], row["split"]
            self.cohort[bucket, split] = row["cohort"]
            for i, stage in enumerate(STAGES):
                key = (bucket, split, stage)
                converted = row.get(f"converted_{i}") or 0
                self.entered[key] = (row[f"entered_{i}"], int(converted))
                if stage not in SUCCESS_PATH:
                    continue
                self.entered_in_order[key] = (row[f"entered_in_order_{i}"],
                                              int(row.get(f"converted_in_order_{i}") or 0))
                self.reached[key] = int(row[f"reached_{i}"] or 0)
                self.reached_in_order[key] = int(row[f"reached_in_order_{i}"] or 0)

    def _detours(self, session: Session) -> None:
        """Leads per (bucket, split, from_stage, to_stage) that moved from a success-path stage
        to recycled or disqualified, or back from recycled, in the bucket: few of the
        period's changes, counted apart from the per-lead figures."""
        bucket = bucket_index(SC.at, self.buckets)
        moves = or_(and_(SC.from_stage.in_(SUCCESS_PATH), SC.to_stage.in_(DETOURS)),
                    and_(SC.from_stage == RECYCLED, SC.to_stage.in_(SUCCESS_PATH)))
        rows = session.execute(self.scope.join(
            select(bucket, self.scope.split, SC.from_stage, SC.to_stage,
                   func.count(SC.lead_id.distinct())), SC.lead_id)
            .where(SC.at >= self.query.start, SC.at < self.query.end, moves)
            .group_by(bucket, self.scope.split, SC.from_stage, SC.to_stage))
        self.leads_moved = {(bucket, split, from_stage, to_stage): n
                            for bucket, split, from_stage, to_stage, n in rows}

    def _per_lead(self) -> Select:
        """Per lead and bucket of the period: its first entry into each stage (first_i, i the
        stage's index in STAGES), its first in-order entry into each success-path stage
        (in_order_i), 1 when it made each detour move, and over the whole period its last
        entry into each success-path stage (last_i) and its path level by the end (level)."""
        stage_index = {stage: i for i, stage in enumerate(STAGES)}
        into = {stage: SC.to_stage == stage for stage in STAGES}
        columns = [func.min(case((into[stage], SC.at))).label(f"first_{i}")
                   for stage, i in stage_index.items()]
        for i, stage in enumerate(SUCCESS_PATH):
            columns += [
                func.min(case((and_(into[stage], SC.path_level >= i), SC.at)))
                .label(f"in_order_{i}"),
                func.max(case((into[stage], SC.at))).label(f"last_{i}")]
        bucket = bucket_index(SC.at, self.buckets).label("bucket")
        split = self.scope.split.label("split")
        per_bucket = (self.scope.join(
            select(bucket, SC.lead_id, split, func.max(SC.path_level).label("level"), *columns),
            SC.lead_id)
            .where(SC.at >= self.query.start, SC.at < self.query.end)
            .group_by(bucket, SC.lead_id, split))
        if len(self.buckets) == 1:
            return per_bucket
        # Conversions and levels count up to the end of the period, whichever bucket: take
        # each lead's last entries and level over all of its buckets.
        one = per_bucket.subquery("per_bucket")
        whole_period = {f"last_{i}" for i in range(len(SUCCESS_PATH))} | {"level"}
        return select(*(func.max(column).over(partition_by=one.c.lead_id).label(column.name)
                        if column.name in whole_period else column for column in one.c))

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
