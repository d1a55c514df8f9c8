"""What a report is asked for: periods read in the report's time zone, buckets cut at local
midnight (a day around a DST change is not 24 hours), and clear errors naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.errors import Invalid
from engine.reports.query import parse_query, quarter_of

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def test_dates_are_whole_days_in_the_zone_and_to_is_included():
    query = parse_query(program=None, start="2026-10-01", end="2026-12-31",
                        tz="America/New_York", now=NOW)
    assert query.start == datetime(2026, 10, 1, 4, 0, tzinfo=UTC)  # EDT: UTC-4
    assert query.end == datetime(2027, 1, 1, 5, 0, tzinfo=UTC)  # EST: UTC-5
    assert query.describe() == "2026-10-01 to 2026-12-31"


def test_month_buckets_start_at_local_midnight_across_a_dst_change():
    query = parse_query(program=None, start="2026-10-01", end="2026-12-31", by="month",
                        tz="America/New_York", now=NOW)
    buckets = query.buckets()
    assert [b.label for b in buckets] == ["2026-10", "2026-11", "2026-12"]
    assert buckets[1].start == datetime(2026, 11, 1, 4, 0, tzinfo=UTC)  # still EDT at 00:00
    assert buckets[2].start == datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    assert buckets[0].end == buckets[1].start and buckets[-1].end == query.end


def test_day_buckets_around_the_change_are_23_and_25_hours_long():
    query = parse_query(program=None, start="2026-03-28", end="2026-03-29", by="day",
                        tz="Europe/Paris", now=NOW)
    assert [b.end - b.start for b in query.buckets()] == [timedelta(hours=24),
                                                         timedelta(hours=23)]


def test_week_and_quarter_buckets_are_named_and_partial_at_the_edges():
    weeks = parse_query(program=None, start="2026-11-04", end="2026-11-17", by="week",
                        now=NOW).buckets()
    assert [b.label for b in weeks] == ["2026-W45", "2026-W46", "2026-W47"]
    assert weeks[0].start == datetime(2026, 11, 4, tzinfo=UTC)  # cut at --from, a Wednesday
    quarters = parse_query(program=None, start="2026-02-15", end="2026-08-01", by="quarter",
                           now=NOW).buckets()
    assert [b.label for b in quarters] == ["2026-Q1", "2026-Q2", "2026-Q3"]


def test_the_default_period_is_the_last_30_days():
    query = parse_query(program=None, start=None, end=None, now=NOW)
    assert (query.start, query.end) == (NOW - timedelta(days=30), NOW)
    assert [b.label for b in query.buckets()] == ["2026-10-21 to 2026-11-20"]


def test_a_quarter_is_found_in_the_zone():
    start, end = quarter_of(datetime(2026, 10, 1, 2, 0, tzinfo=UTC),
                            __import__("zoneinfo").ZoneInfo("America/New_York"))
    assert (start, end) == (datetime(2026, 7, 1, 4, tzinfo=UTC),
                            datetime(2026, 10, 1, 4, tzinfo=UTC))  # still Q3 in New York


@pytest.mark.parametrize(("kwargs", "field", "message"), [
    ({"start": "2026-13-01"}, "from", "is not an ISO date"),
    ({"end": "yesterday"}, "to", "is not an ISO date"),
    ({"start": "2026-11-10", "end": "2026-11-01"}, "from", "must be before to"),
    ({"start": "2010-01-01", "end": "2026-01-01"}, "to", "at most 5 years"),
    ({"by": "year"}, "by", "unknown grouping 'year'"),
    ({"split": "email"}, "split", "unknown split 'email'"),
    ({"tz": "Mars/Olympus"}, "tz", "unknown time zone"),
    ({"tz": "../../etc/passwd"}, "tz", "unknown time zone"),
    ({"tz": "x" * 100}, "tz", "at most 64"),
    ({"program": " "}, "program", "a program's name"),
    ({"start": "2" * 500}, "from", "expected an ISO date"),
])
def test_bad_input_names_the_field(kwargs, field, message):
    args = {"program": None, "start": None, "end": None, **kwargs}
    with pytest.raises(Invalid) as caught:
        parse_query(**args, now=NOW)
    assert caught.value.field == field and message in caught.value.detail
