"""Attribution: where the MQLs, SALs, opportunities and customers of a period came from, by
first touch and by the last touch before they reached the stage.

Definitions:
- A lead *reached* a stage in a period when its stage history has a change to that stage at a
  moment of the period (from the history, never today's stage). It counts once per stage and
  period, at its first such change there; a lead that reaches the stage again in another
  period counts there too.
- The *source* is one source field: source_channel, or source_offer / source_partner when the
  query splits by that field (the split column then holds the lead's own value of it).
- A *touch* is a form submission that carries a source, recorded with it
  (engine/pages/forms.py touch_source): the posted field of that name (source_channel,
  source_offer, source_partner) or, failing it, the UTM parameter the form map reads for it
  by default (utm_medium, utm_campaign, utm_source), both hidden fields; else the visit's
  source by the page's map (its UTM tags, or the referring site). Submissions stored before
  migration 0017 carry only what they posted (their visit was not kept).
- *First touch*: the source the lead was first recorded with. That is the lead's own source
  field: the engine fills it from the first source it learns (import, API, or the visit of
  the first form) and a form never overwrites it. When it is empty, the earliest touch;
  else "(none)".
- *Last touch*: the source of the latest touch at or before the stage change; without one,
  the first touch.
- Shares are of the stage's leads in the same period (and split).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from engine.crm.models import Opportunity, OpportunityContact, OpportunityStatus
from engine.leads.models import Lead, StageChange
from engine.leads.stages import Stage
from engine.pages.forms import DEFAULT_SOURCE, SOURCE_FIELDS
from engine.pages.models import FormSubmission
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
from engine.reports.scope import UNSET, Scope, bucket_index, lead_value

STAGES = (Stage.MQL, Stage.SAL, Stage.OPPORTUNITY, Stage.CUSTOMER)
TOUCHES = ("first", "last")
MAX_SERIES = 8  # sources charted one by one; the rest are summed as "other"
OTHER = "other"


def build(session: Session, query: ReportQuery, *, now: datetime | None = None) -> Report:
    field = query.split if query.split in SOURCE_FIELDS else "source_channel"
    buckets = query.buckets()
    counts = _counts(session, query, buckets, field)
    name = field.removeprefix("source_")
    report = Report(name="attribution", title=f"Attribution by {name}", query=query,
                    generated_at=now or datetime.now(UTC),
                    tables=[_long_table(query, buckets, counts, name),
                            *(_chart_table(query, buckets, counts, name, touch)
                              for touch in TOUCHES),
                            _revenue_table(query, buckets, _revenue(session, query, buckets,
                                                                    field), name)])
    report.notes.append(
        f"First touch: the lead's own {field} (the first source recorded for it), else its "
        "earliest form submission carrying one. Last touch: the latest form submission "
        f"carrying a {name} at or before the stage change, else the first touch.")
    report.notes.append(
        f"A form submission carries the {name} it posts (a hidden field {field} or "
        f"{DEFAULT_SOURCE[field][0]}), else its visit's, by the page's source map (UTM tags, "
        "the referring site); submissions stored before 0017 carry only what they posted.")
    return report


# Counts[(bucket, split, stage)][touch][source] = leads
Counts = dict[tuple[int, str, str], dict[str, Counter]]


def _counts(session: Session, query: ReportQuery, buckets: list[Bucket], field: str) -> Counts:
    scope = Scope(session, query)
    changes = (scope.join(select(StageChange.lead_id, StageChange.to_stage.label("stage"),
                                 StageChange.at, scope.split.label("split"),
                                 bucket_index(StageChange.at, buckets).label("bucket")),
                          StageChange.lead_id)
               .where(StageChange.to_stage.in_(STAGES), StageChange.at >= query.start,
                      StageChange.at < query.end)
               .subquery())
    reached = (select(changes.c.lead_id, changes.c.stage, changes.c.bucket, changes.c.split,
                      func.min(changes.c.at).label("at"))
               .group_by(changes.c.lead_id, changes.c.stage, changes.c.bucket, changes.c.split)
               .cte("reached"))
    touches = _touches(field)
    key = (reached.c.lead_id, reached.c.stage, reached.c.bucket)
    latest = (select(*key, touches.c.source, func.row_number().over(
                  partition_by=key, order_by=(touches.c.created_at.desc(), touches.c.id.desc()))
                  .label("rank"))
              .join(touches, and_(touches.c.lead_id == reached.c.lead_id,
                                  touches.c.created_at <= reached.c.at))
              .subquery("latest"))
    earliest = (select(touches.c.lead_id, touches.c.source, func.row_number().over(
                    partition_by=touches.c.lead_id,
                    order_by=(touches.c.created_at, touches.c.id)).label("rank"))
                .where(touches.c.lead_id.in_(select(reached.c.lead_id)))
                .subquery("earliest"))
    own = lead_value(_blank_as_null(getattr(Lead, field)), reached.c.lead_id)
    first = func.coalesce(own, earliest.c.source, UNSET)
    touched = (select(reached.c.bucket, reached.c.split, reached.c.stage,
                      first.label("first"), latest.c.source.label("latest"))
               .outerjoin(latest, and_(latest.c.lead_id == reached.c.lead_id,
                                       latest.c.stage == reached.c.stage,
                                       latest.c.bucket == reached.c.bucket, latest.c.rank == 1))
               .outerjoin(earliest, and_(earliest.c.lead_id == reached.c.lead_id,
                                         earliest.c.rank == 1))
               .subquery("touched"))
    group = (touched.c.bucket, touched.c.split, touched.c.stage, touched.c.first,
             touched.c.latest)
    rows = session.execute(select(*group, func.count().label("n")).group_by(*group))
    counts: Counts = defaultdict(lambda: {touch: Counter() for touch in TOUCHES})
    for row in rows:
        found = counts[(row.bucket, row.split, row.stage)]
        found["first"][row.first] += row.n
        found["last"][row.latest or row.first] += row.n
    return counts


def _revenue(session: Session, query: ReportQuery, buckets: list[Bucket], field: str):
    """Opportunities won in the period (as the CRM reported them, engine/flows/crm.py), each
    counted once, under its primary contact (else its first): (bucket, split, source,
    currency) -> (won, amount)."""
    contacts = (select(OpportunityContact.opportunity_id, OpportunityContact.lead_id,
                       func.row_number().over(
                           partition_by=OpportunityContact.opportunity_id,
                           order_by=(OpportunityContact.is_primary.desc(),
                                     OpportunityContact.lead_id)).label("rank"))
                .subquery("contacts"))
    touches = _touches(field)
    earliest = (select(touches.c.lead_id, touches.c.source, func.row_number().over(
                    partition_by=touches.c.lead_id,
                    order_by=(touches.c.created_at, touches.c.id)).label("rank"))
                .where(touches.c.lead_id.in_(select(contacts.c.lead_id)
                                             .where(contacts.c.rank == 1)))
                .subquery("earliest"))
    first = func.coalesce(_blank_as_null(getattr(Lead, field)), earliest.c.source, UNSET)
    scope = Scope(session, query)
    won = (scope.join(select(bucket_index(Opportunity.closed_at, buckets).label("bucket"),
                             scope.split.label("split"), first.label("source"),
                             Opportunity.currency, Opportunity.amount)
                      .join(contacts, and_(contacts.c.opportunity_id == Opportunity.id,
                                           contacts.c.rank == 1))
                      .join(Lead, Lead.id == contacts.c.lead_id)
                      .outerjoin(earliest, and_(earliest.c.lead_id == Lead.id,
                                                earliest.c.rank == 1)), contacts.c.lead_id)
           .where(Opportunity.status == OpportunityStatus.WON,
                  Opportunity.closed_at >= query.start, Opportunity.closed_at < query.end)
           .subquery("won"))
    group = (won.c.bucket, won.c.split, won.c.source, won.c.currency)
    rows = session.execute(select(*group, func.count().label("n"),
                                  func.sum(won.c.amount).label("amount")).group_by(*group))
    return {(r.bucket, r.split, r.source, r.currency or ""): (r.n, r.amount) for r in rows}


def _touches(field: str):
    """Form submissions by a lead that carry a value of `field`: the touches."""
    source = getattr(FormSubmission, field)
    return (select(FormSubmission.id, FormSubmission.lead_id, FormSubmission.created_at,
                   source.label("source"))
            .where(FormSubmission.lead_id.is_not(None), source.is_not(None))
            .subquery("touches"))


def _blank_as_null(value):
    return func.nullif(func.trim(value), "")


# -- tables -----------------------------------------------------------------------------------

def _groups(query: ReportQuery, buckets: list[Bucket], counts: Counts):
    """(bucket, split, stage) in report order, every stage of every bucket and split."""
    splits = sorted({split for _, split, _ in counts}) or [UNSET]
    for index in range(len(buckets)):
        for split in splits:
            for stage in STAGES:
                yield index, split, str(stage)


def _long_table(query: ReportQuery, buckets: list[Bucket], counts: Counts, name: str) -> Table:
    rows = []
    for index, split, stage in _groups(query, buckets, counts):
        found = counts.get((index, split, stage))
        if not found:
            continue
        total = sum(found["first"].values())
        sources = set(found["first"]) | set(found["last"])
        for source in sorted(sources, key=lambda s: (-found["first"][s], -found["last"][s],
                                                      s == UNSET, s)):
            first, last = found["first"][source], found["last"][source]
            rows.append({**dimensions(query, buckets[index].label, split), "stage": stage,
                         "source": source, "leads": total,
                         "first_touch": first, "first_touch_share": rate(first, total),
                         "last_touch": last, "last_touch_share": rate(last, total)})
    return Table(
        key="attribution", title=f"Leads reaching each stage by {name}, first and last touch",
        columns=dimension_columns(query) + [
            Column("stage", "stage", "text"), Column("source", name, "text"),
            Column("leads", "leads reaching the stage"),
            Column("first_touch", "first touch"),
            Column("first_touch_share", "first touch share", "rate"),
            Column("last_touch", "last touch"),
            Column("last_touch_share", "last touch share", "rate")],
        rows=rows,
        notes=["Each lead counts once per stage and period; shares are of the stage's leads."])


def _chart_table(query: ReportQuery, buckets: list[Bucket], counts: Counts, name: str,
                 touch: str) -> Table:
    """One row per stage, one column per source (the MAX_SERIES largest; the rest summed as
    other): the bars of the chart."""
    overall: Counter = Counter()
    for found in counts.values():
        overall.update(found[touch])
    ranked = sorted(overall, key=lambda s: (-overall[s], s == UNSET, s))
    shown = ranked if len(ranked) <= MAX_SERIES else ranked[:MAX_SERIES - 1]
    rest = len(ranked) > len(shown)
    keys = {source: f"source:{source}" for source in shown}
    rows = []
    for index, split, stage in _groups(query, buckets, counts):
        found = counts.get((index, split, stage), {touch: Counter()})[touch]
        row = {**dimensions(query, buckets[index].label, split), "stage": stage}
        row.update({keys[source]: found[source] for source in shown})
        if rest:
            row[OTHER] = sum(n for source, n in found.items() if source not in keys)
        row["leads"] = sum(found.values())
        rows.append(row)
    series = tuple(keys.values()) + ((OTHER,) if rest else ())
    title = f"Leads reaching each stage by {touch}-touch {name}"
    return Table(
        key=f"{touch}_touch", title=title,
        columns=dimension_columns(query) + [Column("stage", "stage", "text")]
        + [Column(key, source) for source, key in keys.items()]
        + ([Column(OTHER, f"other {name}s")] if rest else []) + [Column("leads", "leads")],
        rows=rows, chart=Chart("bar", "stage", series, title) if series else None,
        notes=[f"Beyond the {MAX_SERIES - 1} largest, sources are summed as other."]
        if rest else [])


def _revenue_table(query: ReportQuery, buckets: list[Bucket], revenue: dict, name: str) -> Table:
    rows = [{**dimensions(query, buckets[bucket].label, split), "source": source,
             "currency": currency or "(none)", "won": won,
             "amount": None if amount is None else float(amount)}
            for (bucket, split, source, currency), (won, amount) in sorted(
                revenue.items(), key=lambda item: (item[0][0], item[0][1], -(item[1][1] or 0),
                                                   item[0][2], item[0][3]))]
    return Table(
        key="revenue", title=f"Won revenue by first-touch {name}",
        columns=dimension_columns(query) + [
            Column("source", name, "text"), Column("currency", "currency", "text"),
            Column("won", "opportunities won"), Column("amount", "amount won", "amount")],
        rows=rows,
        notes=[("Opportunities the CRM reported won in the period, each once, under its "
                "primary contact (else its first); amounts are summed per currency, never "
                "converted.")])


# -- helpers ----------------------------------------------------------------------------------

