"""Which leads a report counts (those enrolled in its program, or all) and the value each is
split by: one place, so every report scopes and splits alike."""

from __future__ import annotations

from sqlalchemy import JSON, ColumnElement, Select, case, exists, func, literal, select, type_coerce
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

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
    query's split (persona: the lead's own, else the one its enrollment matched: in the
    program, or the lead's first), or UNSET. No aggregate over every enrollment: the database
    can start from the rows a report counts and look each lead up."""
    program = program_id(session, query)
    if program is not None:  # one enrollment per lead and program
        return (select(Lead.id.label("lead_id"),
                       _split_value(query, Enrollment.state).label("split"))
                .join(Enrollment, (Enrollment.lead_id == Lead.id)
                      & (Enrollment.program_id == program)))
    first = aliased(Enrollment)
    first_state = (select(first.state).where(first.lead_id == Lead.id).order_by(first.id)
                   .limit(1).scalar_subquery())
    return (select(Lead.id.label("lead_id"), _split_value(query, first_state).label("split"))
            .where(exists().where(Enrollment.lead_id == Lead.id)))


def _split_value(query: ReportQuery, state):
    if query.split is None:
        return literal(UNSET)
    if query.split == "persona":
        persona = (state["persona"] if isinstance(state, InstrumentedAttribute)
                   else type_coerce(state, JSON)["persona"]).as_string()
        return func.coalesce(Lead.persona, persona, UNSET)
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
