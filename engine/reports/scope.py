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


class Scope:
    """The leads a report counts (those enrolled in its program; every lead when no program is
    named: the whole funnel, and every MQL the SLA check holds to the default SLA) and the
    value each is split by, joined to a report's select by a lead id column. Unsplit and for
    every lead, nothing is joined: a report reads only the rows it counts."""

    def __init__(self, session: Session, query: ReportQuery) -> None:
        program = program_id(session, query)
        self.leads = (None if program is None and query.split is None
                      else _scoped_leads(query, program).subquery("scope"))

    @property
    def split(self) -> ColumnElement:
        """The split value of the lead of each joined row (UNSET when not split)."""
        return literal(UNSET) if self.leads is None else self.leads.c.split

    def join(self, rows: Select, lead_id) -> Select:
        """`rows` narrowed to the leads in scope (`lead_id`: the column naming the lead)."""
        if self.leads is None:
            return rows.where(lead_id.is_not(None))  # an anonymous visit is no lead's
        return rows.join(self.leads, self.leads.c.lead_id == lead_id)


def _scoped_leads(query: ReportQuery, program: int | None) -> Select:
    """(lead_id, split) for the leads in scope. `split` is the lead's value of the query's
    split (persona: the lead's own, else the one its enrollment matched: in the program, or
    the lead's first), or UNSET."""
    if program is not None:  # one enrollment per lead and program
        return (select(Lead.id.label("lead_id"),
                       split_value(query, Enrollment.persona).label("split"))
                .join(Enrollment, (Enrollment.lead_id == Lead.id)
                      & (Enrollment.program_id == program)))
    return select(Lead.id.label("lead_id"), split_value(query, None).label("split"))


def split_value(query: ReportQuery, matched):
    """The split value of a lead (Lead's columns) whose enrollment matched persona `matched`
    (None: its first enrollment's, which the lead keeps)."""
    if query.split is None:
        return literal(UNSET)
    if query.split == "persona":
        return persona_of(matched)
    return func.coalesce(getattr(Lead, query.split), UNSET)


def persona_of(matched) -> ColumnElement:
    """A lead's persona: its own, else `matched`, the one its enrollment matched (None: its
    first enrollment's), else UNSET."""
    return func.coalesce(Lead.persona, Lead.enrolled_persona if matched is None else matched,
                         UNSET)


def lead_value(column, lead_id) -> ColumnElement:
    """A column of the lead named by `lead_id`, looked up per row: a report reads few of all
    the leads, where a join would hash every one."""
    return select(column).where(Lead.id == lead_id).scalar_subquery()


def count_where(condition) -> ColumnElement:
    """How many rows of a group meet `condition` (0, never NULL)."""
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def bucket_index(at, buckets: list[Bucket]) -> ColumnElement:
    """The index of the bucket holding `at` (callers keep `at` within the period)."""
    if len(buckets) == 1:
        return literal(0)
    return case(*[(at < bucket.end, index) for index, bucket in enumerate(buckets)],
                else_=len(buckets) - 1)


def bucket_label(at, buckets: list[Bucket]) -> ColumnElement:
    """The label of the bucket holding `at` (callers keep `at` within the period)."""
    if len(buckets) == 1:
        return literal(buckets[0].label)
    return case(*[(at < bucket.end, bucket.label) for bucket in buckets[:-1]],
                else_=buckets[-1].label)
