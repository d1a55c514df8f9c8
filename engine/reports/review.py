"""The quarterly review: one page for the review meeting. The quarter holding the query's end
(in its time zone) against the quarter before: headline figures side by side with their
change, then every report's tables for the quarter.

Headline figures, each read from its report's tables for the whole quarter (no grouping, no
split): MQLs, the share answered within the SLA, emails sent, unique open and click rates over
delivered emails, the program goal's rate; and, from the funnel and velocity reports, the
leads that entered each stage and the median days in each stage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from engine.reports.model import Column, Report, Table, rate
from engine.reports.query import ReportQuery, quarter_of

PARTS = ("funnel", "velocity", "sla", "engagement", "goal", "attribution")
CHANGE_NOTE = ("Change: rates in points, days and hours as such, counts in percent of the "
               "previous quarter.")


def build(session: Session, query: ReportQuery, *, now: datetime | None = None) -> Report:
    from engine.reports import build_report

    this_start, this_end = quarter_of(query.end - timedelta(microseconds=1), query.zone)
    previous_start, _ = quarter_of(this_start - timedelta(microseconds=1), query.zone)
    this = replace(query, start=this_start, end=this_end, by=None, split=None)
    previous = replace(this, start=previous_start, end=this_start)
    parts = {name: (build_report(name, session, this), build_report(name, session, previous))
             for name in PARTS}
    quarter, before = _quarter_name(this), _quarter_name(previous)
    report = Report(name="review", title=f"Quarterly review {quarter}", query=this,
                    generated_at=now or parts["sla"][0].generated_at,
                    tables=[_headline(parts, quarter, before)])
    for name in PARTS:
        part = parts[name][0]
        for table in part.tables:
            report.tables.append(replace(table, key=f"{name}.{table.key}",
                                         title=f"{part.title}: {table.title}"))
        report.notes.extend(f"{part.title}: {note}" for note in part.notes)
    return report


def _quarter_name(query: ReportQuery) -> str:
    local = query.start.astimezone(query.zone)
    return f"{local.year}-Q{(local.month - 1) // 3 + 1}"


def _headline(parts: dict[str, tuple[Report, Report]], quarter: str, before: str) -> Table:
    this, previous = _pairs(parts)
    rows = []
    for label, kind, figure in _figures(parts):
        now, then = figure(this), figure(previous)
        rows.append({"figure": label, "this": _shown(now, kind), "previous": _shown(then, kind),
                     "change": _change(now, then, kind)})
    columns = [Column("figure", "figure", "text"), Column("this", quarter, "text"),
               Column("previous", before, "text"), Column("change", "change", "text")]
    return Table(key="headline", title=f"{quarter} against {before}", columns=columns,
                 rows=rows, notes=[CHANGE_NOTE])


def _pairs(parts: dict[str, tuple[Report, Report]]):
    """The figure functions read {name: report} of one quarter: first this, then the one
    before."""
    return ({name: pair[0] for name, pair in parts.items()},
            {name: pair[1] for name, pair in parts.items()})


Figure = Callable[[dict[str, Report]], float | int | None]


def _figures(parts) -> list[tuple[str, str, Figure]]:
    figures: list[tuple[str, str, Figure]] = []
    funnel = parts["funnel"][0]
    entered = _first_table_with(funnel, "entered")
    if entered is not None:
        for row in entered.rows:
            stage = row.get("stage")
            figures.append((f"entered {stage}", "count", _stage_value("funnel", stage,
                                                                      "entered")))
    velocity = _first_table_with(parts["velocity"][0], "median_days")
    if velocity is not None:
        for row in velocity.rows:
            stage = row.get("stage")
            if stage:
                figures.append((f"median days in {stage}", "days",
                                _stage_value("velocity", stage, "median_days")))
    figures += [
        ("median hours from MQL to sales response", "hours",
         _first_row("velocity", "mql_response", "median_hours")),
        ("MQLs", "count", _sum("sla", "mql_response", "mqls")),
        ("MQLs answered within the SLA", "rate", _sla_share),
        ("emails sent", "count", _sum("engagement", "emails", "sent")),
        ("unique open rate", "rate", _ratio("engagement", "emails", "opens", "delivered")),
        ("unique click rate", "rate", _ratio("engagement", "emails", "clicks", "delivered")),
        ("program goal reached", "rate", _ratio("goal", "goal", "reached", "enrolled")),
    ]
    return figures


def _first_table_with(report: Report, column: str) -> Table | None:
    return next((t for t in report.tables if any(c.key == column for c in t.columns)
                 and any(c.key == "stage" for c in t.columns)), None)


def _stage_value(name: str, stage: str, column: str) -> Figure:
    def read(reports: dict[str, Report]):
        table = _first_table_with(reports[name], column)
        if table is None:
            return None
        return next((row.get(column) for row in table.rows if row.get("stage") == stage), None)
    return read


def _first_row(name: str, table: str, column: str) -> Figure:
    def read(reports: dict[str, Report]):
        rows = reports[name].table(table).rows
        return rows[0].get(column) if rows else None
    return read


def _sum(name: str, table: str, column: str) -> Figure:
    return lambda reports: sum(row.get(column) or 0 for row in reports[name].table(table).rows)


def _ratio(name: str, table: str, part: str, whole: str) -> Figure:
    return lambda reports: rate(_sum(name, table, part)(reports), _sum(name, table, whole)(reports))


def _sla_share(reports: dict[str, Report]) -> float | None:
    within, late, overdue = (_sum("sla", "mql_response", key)(reports)
                             for key in ("within_sla", "late", "overdue"))
    return rate(within, within + late + overdue)


def _shown(value, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "rate":
        return f"{value:.1%}"
    if kind in ("days", "hours"):
        return f"{value:,.1f}"
    return f"{value:,}"


def _change(now, then, kind: str) -> str:
    if now is None or then is None:
        return "-"
    if kind == "rate":
        return f"{(now - then) * 100:+.1f} pts"
    if kind in ("days", "hours"):
        return f"{now - then:+.1f} {kind}"
    return f"{(now - then) / then:+.0%}" if then else ("new" if now else "-")
