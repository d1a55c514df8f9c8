"""Reports: the funnel, velocity, SLA compliance, engagement, program goals, attribution and
the quarterly review. Each is `build(session, query) -> Report` in its own module."""

from __future__ import annotations

from importlib import import_module

from sqlalchemy.orm import Session

from engine.errors import Invalid
from engine.reports.model import Report
from engine.reports.query import ReportQuery

NAMES = ("funnel", "velocity", "sla", "engagement", "goal", "attribution", "review")


def build_report(name: str, session: Session, query: ReportQuery) -> Report:
    if name not in NAMES:
        raise Invalid(f"unknown report {name!r} (expected one of {', '.join(NAMES)})",
                      field="report")
    return import_module(f"engine.reports.{name}").build(session, query)
