"""Wait: a track's wait counts days and weeks on the lead's calendar, hours and minutes exactly.

DST dates used below: America/New_York springs forward on Sun 2026-03-08 (02:00 -> 03:00) and
falls back on Sun 2026-11-01 (02:00 -> 01:00); Europe/Paris on Sun 2026-03-29 and 2026-10-25.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.programs.loader import load_program_dir
from engine.programs.spec import Program, Step, Wait, parse_duration

UTC = ZoneInfo("UTC")
NEW_YORK = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")
ZONES = ["Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"]
DST_DAYS = [datetime(2026, 3, 8, tzinfo=UTC), datetime(2026, 3, 29, tzinfo=UTC),
            datetime(2026, 10, 25, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC),
            datetime(2026, 4, 5, tzinfo=UTC), datetime(2026, 10, 4, tzinfo=UTC)]  # Lord Howe


def new_york(*args, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=NEW_YORK, fold=fold)


# -- reading and writing --------------------------------------------------------------------

@pytest.mark.parametrize(("text", "wait", "written"), [
    ("3d", Wait(days=3), "3d"),
    ("1w", Wait(days=7), "1w"),
    ("2w3d", Wait(days=17), "17d"),
    ("12h", Wait(exact=timedelta(hours=12)), "12h"),
    ("72h", Wait(exact=timedelta(hours=72)), "72h"),  # stays exact: not written as 3d
    ("1d12h", Wait(days=1, exact=timedelta(hours=12)), "1d12h"),
    ("1H30M", Wait(exact=timedelta(hours=1, minutes=30)), "1h30m"),
    ("0d", Wait(), "0m"),
])
def test_a_wait_is_read_as_days_and_an_exact_part_and_written_back_the_same(text, wait, written):
    assert Wait.parse(text) == wait
    assert str(wait) == written
    assert Wait.parse(written) == wait


def test_a_stored_program_keeps_calendar_and_exact_waits_apart():
    program = load_program_dir(Path(__file__).resolve().parent / "programs" / "pinned-nurture").program
    steps = tuple(Step(wait=Wait.parse(t)) for t in ("1d12h", "36h", "7d", "168h")) + (
        Step(email="welcome_it"),)
    program = replace(program, tracks={**program.tracks, "it_manager/inquiry": steps})
    stored = json.loads(json.dumps(program.to_dict()))
    assert [s.get("wait") for s in stored["tracks"]["it_manager/inquiry"]] == [
        "1d12h", "36h", "1w", "168h", None]
    assert Program.from_dict(stored).tracks["it_manager/inquiry"] == steps


@pytest.mark.parametrize("text", ["", "3", "d", "3x", "3 d", "-1d", "1.5d", "3d 2h"])
def test_a_bad_wait_is_refused_with_the_text_in_the_message(text):
    with pytest.raises(ValueError, match="bad duration"):
        Wait.parse(text)


@given(st.integers(0, 400), st.integers(0, 100), st.integers(0, 59))
def test_what_a_wait_writes_it_reads_back(days, hours, minutes):
    wait = Wait(days=days, exact=timedelta(hours=hours, minutes=minutes))
    assert Wait.parse(str(wait)) == wait


@given(st.lists(st.tuples(st.integers(0, 50), st.sampled_from("mhdw")), min_size=1, max_size=4))
def test_a_waits_nominal_length_is_what_parse_duration_reads(parts):
    text = "".join(f"{n}{u}" for n, u in parts)
    assert Wait.parse(text).nominal == parse_duration(text)


# -- the case and the DST rules ------------------------------------------------------

def test_three_days_from_friday_1600_across_spring_forward_end_monday_1600():
    friday = new_york(2026, 3, 6, 16)
    assert Wait.parse("3d").after(friday, NEW_YORK) == new_york(2026, 3, 9, 16)
    assert Wait.parse("72h").after(friday, NEW_YORK) == new_york(2026, 3, 9, 17)  # exact


def test_three_days_from_friday_1600_across_fall_back_end_monday_1600():
    friday = new_york(2026, 10, 30, 16)
    assert Wait.parse("3d").after(friday, NEW_YORK) == new_york(2026, 11, 2, 16)
    assert Wait.parse("72h").after(friday, NEW_YORK) == new_york(2026, 11, 2, 15)  # exact


def test_a_week_keeps_the_wall_clock_across_a_dst_change():
    assert Wait.parse("1w").after(datetime(2026, 3, 25, 9, tzinfo=PARIS), PARIS) == datetime(
        2026, 4, 1, 9, tzinfo=PARIS)


def test_the_day_part_of_a_mixed_wait_is_calendar_days_then_the_hours_are_exact():
    saturday = new_york(2026, 3, 7, 8)  # EST; Sunday 08:00 is EDT
    assert Wait.parse("1d12h").after(saturday, NEW_YORK) == new_york(2026, 3, 8, 20)
    assert Wait.parse("36h").after(saturday, NEW_YORK) == new_york(2026, 3, 8, 21)


def test_a_wall_time_skipped_by_spring_forward_ends_at_the_jump():
    saturday = new_york(2026, 3, 7, 2, 30)  # Sunday has no 02:30
    ends = Wait.parse("1d").after(saturday, NEW_YORK)
    assert ends == new_york(2026, 3, 8, 3, 0) == datetime(2026, 3, 8, 7, tzinfo=UTC)


def test_a_wall_time_repeated_by_fall_back_ends_at_its_first_occurrence():
    saturday = new_york(2026, 10, 31, 1, 30)  # Sunday reads 01:30 twice
    ends = Wait.parse("1d").after(saturday, NEW_YORK)
    assert ends == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 01:30 EDT, not 01:30 EST


def test_the_end_is_in_utc_whatever_zone_the_start_is_given_in():
    friday = new_york(2026, 3, 6, 16)
    for wait in ("3d", "72h"):
        ends = Wait.parse(wait).after(friday, NEW_YORK)
        assert ends.utcoffset() == timedelta(0)
        assert ends == Wait.parse(wait).after(friday.astimezone(PARIS), NEW_YORK)


# -- properties, near DST changes and anywhere -----------------------------------------------

instants = st.one_of(
    st.integers(0, 3 * 366 * 86400).map(lambda s: datetime(2025, 1, 1, tzinfo=UTC)
                                        + timedelta(seconds=s)),
    st.builds(lambda day, s: day + timedelta(seconds=s), st.sampled_from(DST_DAYS),
              st.integers(-9 * 86400, 2 * 86400)),
)


@settings(max_examples=400)
@given(instants, st.sampled_from(ZONES), st.integers(0, 30 * 24 * 60))
def test_hours_and_minutes_are_exact_in_every_zone(start, zone, minutes):
    wait = Wait(exact=timedelta(minutes=minutes))
    assert wait.after(start, ZoneInfo(zone)) - start == timedelta(minutes=minutes)


@settings(max_examples=400)
@given(instants, st.sampled_from(ZONES), st.integers(1, 60))
def test_days_end_on_the_lead_calendar_at_the_same_wall_time_or_at_the_jump_past_it(
        start, zone, days):
    tz = ZoneInfo(zone)
    begun = start.astimezone(tz)
    ends = Wait(days=days).after(start, tz)
    wall = ends.astimezone(tz)
    assert ends > start
    assert wall.date() == begun.date() + timedelta(days=days)
    if wall.time() == begun.time().replace(fold=0):
        assert wall.fold == 0  # a repeated wall time: its first occurrence
    else:  # skipped by a spring-forward jump: the jump, the first instant that reads later
        assert wall.time() > begun.time()
        assert (ends - timedelta(seconds=1)).astimezone(tz).time() < begun.time()


@given(instants, st.sampled_from(ZONES), st.integers(0, 30), st.integers(0, 48 * 60))
def test_a_mixed_wait_is_its_days_then_its_exact_part(start, zone, days, minutes):
    tz, exact = ZoneInfo(zone), timedelta(minutes=minutes)
    assert Wait(days, exact).after(start, tz) == Wait(exact=exact).after(
        Wait(days).after(start, tz), tz)
    assert Wait(days) + Wait(exact=exact) == Wait(days, exact)
