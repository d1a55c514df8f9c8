"""SQL pieces the stage-history reports (funnel, velocity) share: which bucket an instant falls
in, the seconds between two stored instants, and nearest-rank percentiles computed by the
database (the same method on SQLite and PostgreSQL, so both answer the same).

Percentiles are nearest-rank: of n values in ascending order, the p-th percentile is the value
at rank ceil(p * n) (1-based). The median is the value at rank ceil(n / 2) (of an even count,
the lower of the two middle values: no average is taken), the p90 the value at rank
ceil(9n / 10). This is PostgreSQL's percentile_disc; it is computed here with row_number()
and count() windows, which SQLite has too, so only one row per percentile leaves the database.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Float, Select, cast, func, or_, select
from sqlalchemy.orm import Session

from engine.leads.stages import SUCCESS_PATH, Stage
from engine.reports.query import ReportQuery
from engine.reports.scope import UNSET

DETOURS: tuple[str, ...] = (str(Stage.RECYCLED), str(Stage.DISQUALIFIED))
NEXT_STAGE: dict[str, str] = dict(itertools.pairwise(SUCCESS_PATH))


def seconds_between(session: Session, later: ColumnElement,
                    earlier: ColumnElement) -> ColumnElement:
    """`later - earlier` in seconds, as a float, on either database."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.extract("epoch", later - earlier), Float)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


@dataclass(frozen=True)
class Spread:
    """How long something took: count, and nearest-rank median and p90 (None when count 0)."""

    count: int = 0
    median: float | None = None
    p90: float | None = None


def spreads(session: Session, rows: Select, keys: Sequence[str],
            unit_seconds: float) -> dict[tuple, Spread]:
    """Per group of `keys`, the count and nearest-rank median and p90 of the `seconds` column
    of `rows` (a select labelling its columns `keys` and `seconds`), in units of
    `unit_seconds` (3600: hours, 86400: days)."""
    sub = rows.subquery("durations")
    group = [sub.c[key] for key in keys]
    if session.get_bind().dialect.name == "postgresql":  # the same figures, sorted once
        picked = select(*group, func.count(), *(
            func.percentile_disc(fraction).within_group(sub.c.seconds)
            for fraction in (0.5, 0.9))).group_by(*group)
        return {tuple(row[:len(keys)]): Spread(row[len(keys)], *(
                    round(float(value), 3) / unit_seconds for value in row[len(keys) + 1:]))
                for row in session.execute(picked)}
    ranked = select(*group, sub.c.seconds,
                    func.row_number().over(partition_by=group, order_by=sub.c.seconds)
                    .label("rank"),
                    func.count().over(partition_by=group).label("n")).subquery("ranked")
    median_rank = (ranked.c.n + 1) // 2  # ceil(n / 2)
    p90_rank = (9 * ranked.c.n + 9) // 10  # ceil(9n / 10)
    picked = select(*(ranked.c[key] for key in keys), ranked.c.n, ranked.c.rank,
                    ranked.c.seconds).where(or_(ranked.c.rank == median_rank,
                                                ranked.c.rank == p90_rank))
    found: dict[tuple, dict] = {}
    for row in session.execute(picked):
        key = tuple(row[:len(keys)])
        n, rank, seconds = row[len(keys):]
        value = round(float(seconds), 3) / unit_seconds  # SQLite's julianday: to the ms
        entry = found.setdefault(key, {"count": n})
        if rank == (n + 1) // 2:
            entry["median"] = value
        if rank == (9 * n + 9) // 10:
            entry["p90"] = value
    return {key: Spread(**entry) for key, entry in found.items()}


def split_values(query: ReportQuery, seen: Iterable[str]) -> list[str]:
    """The split values `seen` in a report's figures, sorted; [UNSET] for a report that is not
    split, so that it has its rows (of zeros) even when nothing happened."""
    if query.split is None:
        return [UNSET]
    return sorted(set(seen))


