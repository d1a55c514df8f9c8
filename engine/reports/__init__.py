"""Reports: the funnel, velocity, SLA compliance, engagement, program goals, attribution and
the quarterly review. Each is `build(session, query) -> Report` in its own module."""

from __future__ import annotations

from importlib import import_module

from sqlalchemy import text
from sqlalchemy.orm import Session

from engine.errors import Invalid
from engine.reports.model import Report
from engine.reports.query import ReportQuery

REPORT_WORK_MEM = "64MB"  # per sort or hash of a report's statements
NAMES = ("funnel", "velocity", "sla", "engagement", "goal", "attribution", "review")


def build_report(name: str, session: Session, query: ReportQuery) -> Report:
    if name not in NAMES:
        raise Invalid(f"unknown report {name!r} (expected one of {', '.join(NAMES)})",
                      field="report")
    _tune_for_reports(session)
    return import_module(f"engine.reports.{name}").build(session, query)


def _tune_for_reports(session: Session) -> None:
    """On PostgreSQL, for this transaction: no JIT (compiling a report's few big statements
    cost more than it saved, most of a second each) and room to hash and sort in memory."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL jit = off"))
        session.execute(text(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))
