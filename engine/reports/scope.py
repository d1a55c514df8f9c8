"""Which leads a report counts (those enrolled in its program, or all) and the value each is
split by: one place, so every report scopes and splits alike."""

from __future__ import annotations

from sqlalchemy import ColumnElement, Select, case, func, literal, select
from sqlalchemy.orm import Session

from engine.errors import NotFound
from engine.journeys.models import Enrollment
from engine.leads.models import Lead
from engine.programs.models import ProgramRecord
from engine.reports.query import Bucket, ReportQuery

UNSET = "(none)"  # the split value of a lead that has none


def program_id(session: Session, query: ReportQuery) -> int | None:
    if query.program is None:
        return None
    found = session.scalar(select(ProgramRecord.id).where(ProgramRecord.name == query.program))
    if found is None:
        raise NotFound(f"no program named {query.program!r}", field="program")
    return found


def scoped_leads(session: Session, query: ReportQuery) -> Select:
    """A subquery-ready select of (lead_id, split) for the leads in scope: enrolled in the
    report's program (any program when none is named). `split` is the lead's value of the
    query's split (persona: the lead's own, else the one its enrollment matched), or UNSET."""
    program = program_id(session, query)
    first = (select(Enrollment.lead_id, func.min(Enrollment.id).label("enrollment_id"))
             .group_by(Enrollment.lead_id))
    if program is not None:
        first = first.where(Enrollment.program_id == program)
    first = first.subquery()
    return (select(Lead.id.label("lead_id"), _split_value(query).label("split"))
            .join(first, first.c.lead_id == Lead.id)
            .join(Enrollment, Enrollment.id == first.c.enrollment_id))


def _split_value(query: ReportQuery):
    if query.split is None:
        return literal(UNSET)
    if query.split == "persona":
        return func.coalesce(Lead.persona, Enrollment.state["persona"].as_string(), UNSET)
    return func.coalesce(getattr(Lead, query.split), UNSET)


def bucket_index(at, buckets: list[Bucket]) -> ColumnElement:
    """The index of the bucket holding `at` (callers keep `at` within the period)."""
    return case(*[(at < bucket.end, index) for index, bucket in enumerate(buckets)],
                else_=len(buckets) - 1)


def bucket_label(at, buckets: list[Bucket]) -> ColumnElement:
    """The label of the bucket holding `at` (callers keep `at` within the period)."""
    if len(buckets) == 1:
        return literal(buckets[0].label)
    return case(*[(at < bucket.end, bucket.label) for bucket in buckets[:-1]],
                else_=buckets[-1].label)
