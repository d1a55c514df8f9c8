"""What a report is asked for: a program (or all), a period, buckets and a split. One parser
for the CLI and the API, so both refuse the same input with the same message."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.errors import Invalid

GROUPINGS = ("day", "week", "month", "quarter")
SPLITS = ("persona", "source_channel", "source_offer", "source_partner", "owner")
LONGEST_PERIOD = timedelta(days=366 * 5)


@dataclass(frozen=True)
class Bucket:
    """One row of a grouped report: [start, end) in UTC, named in the report's time zone."""

    label: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class ReportQuery:
    start: datetime  # inclusive, UTC
    end: datetime  # exclusive, UTC
    program: str | None = None  # a program's name; None: all programs
    by: str | None = None  # one of GROUPINGS; None: the whole period as one bucket
    split: str | None = None  # one of SPLITS; None: no split
    tz: str = "UTC"  # days, weeks, months and quarters start at midnight here

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def buckets(self) -> list[Bucket]:
        """The period cut at midnight of each day, Monday, 1st of the month or quarter in the
        report's zone; the first and last bucket may be partial."""
        if self.by is None:
            return [Bucket(self.describe(), self.start, self.end)]
        return list(_buckets(self.start, self.end, self.by, self.zone))

    def describe(self) -> str:
        last = (self.end - timedelta(microseconds=1)).astimezone(self.zone)
        return f"{self.start.astimezone(self.zone):%Y-%m-%d} to {last:%Y-%m-%d}"

    def to_dict(self) -> dict:
        return {"program": self.program, "from": self.start.isoformat(),
                "to": self.end.isoformat(), "by": self.by, "split": self.split, "tz": self.tz}


def parse_query(*, program: str | None, start: str | None, end: str | None,
                by: str | None = None, split: str | None = None, tz: str | None = None,
                now: datetime) -> ReportQuery:
    """From strings as typed: `start` and `end` are ISO dates (whole days in `tz`, `end`
    included) or times; unset, the last 30 days up to now."""
    zone_name = (tz or "UTC").strip()
    if len(zone_name) > 64:
        raise Invalid("a time zone name is at most 64 characters", field="tz")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Invalid(f"unknown time zone {zone_name!r} (an IANA name such as Europe/Paris)",
                      field="tz") from None
    until = parse_instant(end, zone, field="to", end_of_day=True) if end else now
    since = parse_instant(start, zone, field="from") if start else until - timedelta(days=30)
    if since >= until:
        raise Invalid(f"from ({since.isoformat()}) must be before to ({until.isoformat()})",
                      field="from")
    if until - since > LONGEST_PERIOD:
        raise Invalid("the period may be at most 5 years long", field="to")
    if by is not None and by not in GROUPINGS:
        raise Invalid(f"unknown grouping {by!r} (expected one of {', '.join(GROUPINGS)})",
                      field="by")
    if split is not None and split not in SPLITS:
        raise Invalid(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})",
                      field="split")
    if program is not None and not 0 < len(program.strip()) <= 200:
        raise Invalid("program must be a program's name (1 to 200 characters)",
                      field="program")
    return ReportQuery(start=since, end=until, program=program, by=by, split=split,
                       tz=zone_name)


def parse_instant(text: str, zone: ZoneInfo, *, field: str,
                  end_of_day: bool = False) -> datetime:
    """An ISO date (its start in `zone`; with end_of_day, the next day's) or time."""
    value = text.strip()
    if len(value) > 40:
        raise Invalid("expected an ISO date or time", field=field)
    try:
        day = date.fromisoformat(value)
    except ValueError:
        pass
    else:  # a whole day in the report's zone; `to` includes it
        if end_of_day:
            day += timedelta(days=1)
        return datetime.combine(day, time(), zone).astimezone(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{text!r} is not an ISO date (2026-10-01) or time "
                      "(2026-10-01T09:00+02:00)", field=field) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).astimezone(UTC)


def quarter_of(moment: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The calendar quarter holding `moment` in `zone`, as [start, end) in UTC."""
    local = moment.astimezone(zone)
    first = datetime(local.year, 3 * ((local.month - 1) // 3) + 1, 1, tzinfo=zone)
    return first.astimezone(UTC), _next_start(first, "quarter").astimezone(UTC)


def _buckets(start: datetime, end: datetime, by: str, zone: ZoneInfo) -> Iterator[Bucket]:
    cursor = _floor(start.astimezone(zone), by)
    while cursor.astimezone(UTC) < end:
        following = _next_start(cursor, by)
        yield Bucket(_label(cursor, by), max(start, cursor.astimezone(UTC)),
                     min(end, following.astimezone(UTC)))
        cursor = following


def _floor(local: datetime, by: str) -> datetime:
    day = local.date()
    if by == "week":
        day -= timedelta(days=day.weekday())
    elif by == "month":
        day = day.replace(day=1)
    elif by == "quarter":
        day = day.replace(month=3 * ((day.month - 1) // 3) + 1, day=1)
    return datetime.combine(day, time(), local.tzinfo)


def _next_start(local: datetime, by: str) -> datetime:
    """Midnight of the next bucket, in the zone (a day is not always 24 hours long)."""
    day = local.date()
    if by == "day":
        day += timedelta(days=1)
    elif by == "week":
        day += timedelta(days=7)
    else:
        months = 1 if by == "month" else 3
        month = day.month - 1 + months
        day = day.replace(year=day.year + month // 12, month=month % 12 + 1, day=1)
    return datetime.combine(day, time(), local.tzinfo)


def _label(local: datetime, by: str) -> str:
    if by == "day":
        return f"{local:%Y-%m-%d}"
    if by == "week":
        year, week, _ = local.isocalendar()
        return f"{year}-W{week:02d}"
    if by == "month":
        return f"{local:%Y-%m}"
    return f"{local.year}-Q{(local.month - 1) // 3 + 1}"
