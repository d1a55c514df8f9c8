"""What every report is made of, whatever prints it: tables of rows with typed columns, each
with an optional chart. The terminal, JSON, CSV and HTML writers (engine/reports/output.py)
read only this."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from engine.reports.query import ReportQuery

# How a column's values read: count (int), rate (0..1 or None when nothing to divide by),
# hours and days (float or None), text.
KINDS = ("count", "rate", "hours", "days", "amount", "text")


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: str = "count"


@dataclass(frozen=True)
class Chart:
    """`kind` bar or line; one bar or line per key of `series`, over the values of column `x`."""

    kind: str
    x: str
    series: tuple[str, ...]
    title: str


@dataclass
class Table:
    key: str
    title: str
    columns: list[Column]
    rows: list[dict] = field(default_factory=list)
    chart: Chart | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"key": self.key, "title": self.title,
                "columns": [{"key": c.key, "label": c.label, "kind": c.kind}
                            for c in self.columns],
                "rows": self.rows, "notes": self.notes}


@dataclass
class Report:
    name: str
    title: str
    query: ReportQuery
    generated_at: datetime
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self, key: str) -> Table:
        return next(table for table in self.tables if table.key == key)

    def to_dict(self) -> dict:
        return {"report": self.name, "title": self.title, "query": self.query.to_dict(),
                "generated_at": self.generated_at.isoformat(),
                "tables": [table.to_dict() for table in self.tables], "notes": self.notes}


def rate(part: float, whole: float) -> float | None:
    return part / whole if whole else None


DIMENSIONS = ("period", "split")  # the keys of a row's dimensions, in order


def dimension_columns(query: ReportQuery) -> list[Column]:
    """The columns every grouped or split table starts with: `period` (the bucket's label)
    when the query groups by day, week, month or quarter, then `split` when it splits."""
    columns = []
    if query.by:
        columns.append(Column("period", query.by, "text"))
    if query.split:
        columns.append(Column("split", query.split.replace("_", " "), "text"))
    return columns


def dimensions(query: ReportQuery, period: str, split: str) -> dict:
    """The first values of a row of a grouped or split table (see dimension_columns)."""
    row = {}
    if query.by:
        row["period"] = period
    if query.split:
        row["split"] = split
    return row
