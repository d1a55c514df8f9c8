"""Velocity: how long leads take, per bucket of the period (the whole period unless `by`) and
per split value, for the leads in scope (engine/reports/scope.py), read from the stage
history (stage_changes).

Definitions:
- A stay in a stage runs from a lead's entry into it (a stage_changes row whose to_stage is
  the stage, creation included) to the lead's next stage change (the next row by time, then
  id). Time in stage counts the stays that ended in the bucket (the change that ends them
  falls in it), in days; stays still running at the end of the period are not counted. A
  stay is the stage's whatever the lead came from, so a regressed lead's second stay in
  engaged (mql → engaged) is a second engaged stay.
- MQL to sales response: from a lead's entry into mql to the stage change that ends that mql
  stay, when a person made it, in hours, for the responses made in the bucket. The engine
  records sales' answers only as stage changes: accept (mql → sal) and reject (mql →
  recycled, engine/sales/service.py), written with the person's name (or api:<key name>) as
  actor; it keeps no other "first response" (a sales notification is marketing's hand-off to
  sales, not an answer). So a response is any change out of mql whose actor is not one of the
  engine's own (ENGINE_ACTORS: scoring, advance rules, the import, SLA checks); mql stays the
  engine ended are counted apart (`ended_by_engine`) and left out of the times.
- Inquiry to opportunity / to customer: for leads whose first-ever entry into opportunity
  (customer) falls in the bucket, the days from their entry into inquiry to it. Leads that
  never were in inquiry (created at a later stage) are counted apart (`not_from_inquiry`).
- Median and p90 are nearest-rank (engine/reports/stage_history.py): the values at ranks
  ceil(n/2) and ceil(9n/10) of the n durations in ascending order, computed by the database
  alike on SQLite and PostgreSQL; None when there is no duration.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, literal, select, union_all
from sqlalchemy.orm import Session, aliased

from engine.leads.models import StageChange
from engine.leads.stages import STAGES, Stage
from engine.reports.model import Chart, Column, Report, Table, dimension_columns, dimensions
from engine.reports.query import ReportQuery
from engine.reports.scope import Scope, bucket_index
from engine.reports.stage_history import (
    Spread,
    seconds_between,
    split_values,
    spreads,
)

SC = StageChange
HOUR, DAY = 3600.0, 86400.0
# Who changes a stage on the engine's own account (engine/sales/service.py hand_to_sales,
# engine/flows/leads.py advance rules, engine/leads/importer.py); anyone else is a person.
ENGINE_ACTORS = ("scoring", "advance", "import", "sla", "system", "engine")
MQL, INQUIRY = str(Stage.MQL), str(Stage.INQUIRY)
MILESTONES = ((str(Stage.OPPORTUNITY), "inquiry → opportunity"),
              (str(Stage.CUSTOMER), "inquiry → customer"))


def build(session: Session, query: ReportQuery) -> Report:
    figures = _Figures(session, query)
    report = Report(name="velocity", title="Velocity", query=query,
                    generated_at=datetime.now(UTC))
    report.tables = [figures.time_in_stage(), figures.mql_response(), figures.milestones()]
    report.notes = [("Medians and p90s are nearest-rank: the value at rank ceil(n/2) and "
                    "ceil(9n/10) of the n durations in order (no averaging).")]
    return report


class _Figures:
    def __init__(self, session: Session, query: ReportQuery) -> None:
        self.session, self.query = session, query
        self.buckets = query.buckets()
        self.scope = Scope(session, query)

    def _stays(self):
        """Stays that ended in the period: bucket, split, stage, the actor of the change that
        ended it, ended_at and started_at (the lead's previous change, which each change
        records as from_at)."""
        ended = SC
        return (self.scope.join(
                    select(bucket_index(ended.at, self.buckets).label("bucket"),
                           self.scope.split.label("split"), ended.from_stage.label("stage"),
                           ended.actor, ended.at.label("ended_at"),
                           ended.from_at.label("started_at")), ended.lead_id)
                .where(ended.at >= self.query.start, ended.at < self.query.end,
                       ended.from_stage.is_not(None))
                .subquery("stays"))

    def _layout(self, found: dict, names: tuple[str | None, str, str, str],
                stages: tuple[str, ...],
                extra=None) -> list[dict]:
        """One row per bucket, split value and stage (or milestone), the Spread of each under
        `names` (the stage's column, then count, median and p90; a stage column named None
        is left out), zeros where nothing was found; `extra(key)` adds columns."""
        label, count, median, p90 = names
        rows = []
        splits = split_values(self.query, [key[1] for key in found])
        for index, bucket in enumerate(self.buckets):
            for split in splits:
                for stage in stages:
                    key = (index, split, stage)
                    spread = found.get(key, Spread())
                    rows.append({**dimensions(self.query, bucket.label, split),
                                 **({label: stage} if label else {}), count: spread.count,
                                 median: spread.median, p90: spread.p90,
                                 **(extra(key) if extra else {})})
        return rows

    def time_in_stage(self) -> Table:
        stays = self._stays()
        found = spreads(self.session,
                        select(stays.c.bucket, stays.c.split, stays.c.stage,
                               seconds_between(self.session, stays.c.ended_at,
                                               stays.c.started_at).label("seconds"))
                        .where(stays.c.started_at.is_not(None)),
                        ("bucket", "split", "stage"), DAY)
        rows = self._layout(found, ("stage", "stays", "median_days", "p90_days"), STAGES)
        return Table(
            key="time_in_stage", title="Time in stage",
            columns=[*dimension_columns(self.query), Column("stage", "stage", "text"),
                     Column("stays", "stays ended"), Column("median_days", "median", "days"),
                     Column("p90_days", "p90", "days")],
            rows=rows, chart=Chart("bar", "stage", ("median_days", "p90_days"),
                                   "Days in stage"),
            notes=[("A stay runs from entering the stage to the lead's next stage change; "
                   "stays that ended in the period are counted.")])

    def mql_response(self) -> Table:
        stays = self._stays()
        by_person = stays.c.actor.not_in(ENGINE_ACTORS)
        found = spreads(self.session,
                        select(stays.c.bucket, stays.c.split, literal(MQL).label("stage"),
                               seconds_between(self.session, stays.c.ended_at,
                                               stays.c.started_at).label("seconds"))
                        .where(stays.c.stage == MQL, stays.c.started_at.is_not(None),
                               by_person),
                        ("bucket", "split", "stage"), HOUR)
        by_engine = {(bucket, split, MQL): n for bucket, split, n in self.session.execute(
            select(stays.c.bucket, stays.c.split, func.count())
            .where(stays.c.stage == MQL, ~by_person)
            .group_by(stays.c.bucket, stays.c.split))}
        seen = {**{key: Spread() for key in by_engine}, **found}
        rows = self._layout(seen, (None, "responses", "median_hours", "p90_hours"), (MQL,),
                            lambda key: {"ended_by_engine": by_engine.get(key, 0)})
        x = "period" if self.query.by else "split" if self.query.split else None
        return Table(
            key="mql_response", title="MQL to sales response",
            columns=[*dimension_columns(self.query), Column("responses", "responses"),
                     Column("median_hours", "median", "hours"),
                     Column("p90_hours", "p90", "hours"),
                     Column("ended_by_engine", "mql ended by the engine")],
            rows=rows,
            chart=Chart("line" if self.query.by else "bar", x, ("median_hours", "p90_hours"),
                        "Hours from MQL to sales response") if x else None,
            notes=[("A response is the stage change that ends an MQL stay when a person made "
                   "it (sales accepting: mql → sal, or rejecting: mql → recycled, or any "
                   "other change not made by the engine); counted in the period it was made."),
                   ("mql ended by the engine: MQL stays ended by the engine's own rules, "
                   "left out of the times.")])

    def milestones(self) -> Table:
        found, apart = self._milestones()
        seen = {**{key: Spread() for key in apart}, **found}
        names = tuple(name for _, name in MILESTONES)
        rows = self._layout(seen, ("milestone", "leads", "median_days", "p90_days"), names,
                            lambda key: {"not_from_inquiry": apart.get(key, 0)})
        return Table(
            key="milestones", title="Inquiry to opportunity and to customer",
            columns=[*dimension_columns(self.query), Column("milestone", "milestone", "text"),
                     Column("leads", "leads"), Column("median_days", "median", "days"),
                     Column("p90_days", "p90", "days"),
                     Column("not_from_inquiry", "reached without inquiry")],
            rows=rows, chart=Chart("bar", "milestone", ("median_days", "p90_days"),
                                   "Days from inquiry"),
            notes=[("Leads that first reached the stage in the period, timed from their entry "
                   "into inquiry; leads created at a later stage are counted apart.")])

    def _milestones(self) -> tuple[dict, dict]:
        """Spreads of the days from inquiry to the first entry into each milestone's stage,
        per (bucket, split, milestone), and the count of leads that reached it without an
        inquiry entry. Each lead reaching a milestone's stage in the period has its first
        entries into the stages looked up once (index reads of its own history)."""
        targets = [target for target, _ in MILESTONES]
        reaching = (select(SC.lead_id).where(SC.to_stage.in_(targets),
                                             SC.at >= self.query.start, SC.at < self.query.end)
                    .distinct().subquery("reaching"))
        earlier = aliased(StageChange, name="earlier")

        def first_entry(stage: str):
            return (select(func.min(earlier.at))
                    .where(earlier.lead_id == reaching.c.lead_id, earlier.to_stage == stage)
                    .scalar_subquery())

        firsts = (select(reaching.c.lead_id, first_entry(INQUIRY).label("inquiry_at"),
                         *(first_entry(target).label(target) for target in targets))
                  .cte("firsts").prefix_with("MATERIALIZED"))
        reached = union_all(*(
            self.scope.join(
                select(bucket_index(firsts.c[target], self.buckets).label("bucket"),
                       self.scope.split.label("split"), literal(name).label("stage"),
                       firsts.c[target].label("reached_at"), firsts.c.inquiry_at),
                firsts.c.lead_id)
            .where(firsts.c[target] >= self.query.start, firsts.c[target] < self.query.end)
            for target, name in MILESTONES)).subquery("reached")
        spread = spreads(self.session,
                         select(reached.c.bucket, reached.c.split, reached.c.stage,
                                seconds_between(self.session, reached.c.reached_at,
                                                reached.c.inquiry_at).label("seconds"))
                         .where(reached.c.inquiry_at <= reached.c.reached_at),
                         ("bucket", "split", "stage"), DAY)
        without = {(bucket, split, name): n for bucket, split, name, n in self.session.execute(
            select(reached.c.bucket, reached.c.split, reached.c.stage, func.count())
            .where(reached.c.inquiry_at.is_(None))
            .group_by(reached.c.bucket, reached.c.split, reached.c.stage))}
        return spread, without
