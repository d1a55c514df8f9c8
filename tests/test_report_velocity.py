"""The velocity report against a stage history whose durations are worked out by hand below
(tests/report_history.py lists the leads and their dates), on SQLite and PostgreSQL.
Medians and p90s are nearest-rank: ranks ceil(n/2) and ceil(9n/10) of the sorted values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from launching import launch_all
from report_history import NOW, pick, quarter, rows_by, write_history

from engine.flows.leads import change_stage, upsert_lead
from engine.programs.service import load_program
from engine.reports import build_report
from engine.reports.query import parse_query
from engine.reports.velocity import build
from engine.sales.service import accept, reject

SPREAD = ("stays", "median_days", "p90_days")
RESPONSE = ("responses", "median_hours", "p90_hours", "ended_by_engine")
MILESTONE = ("leads", "median_days", "p90_days", "not_from_inquiry")


@pytest.fixture
def history(db):
    write_history(db)
    return db


def velocity(db, **kwargs):
    with db.session() as s:
        return build(s, quarter(**kwargs))


def approx(values: tuple) -> tuple:
    return tuple(pytest.approx(v) if isinstance(v, float) else v for v in values)


def test_time_in_stage_for_stays_that_ended_in_the_quarter(history):
    rows = rows_by(velocity(history).table("time_in_stage"), "stage")
    # Stays whose ending change is in [Jan 1 05:00, Apr 1 04:00) UTC, in days:
    # inquiry: ann Dec 10 12:00 -> Jan 5 12:00 = 26; bob 1; cy 1; eve Jan 1 03:00 -> Mar 10
    #   12:00 = 68.375; fay Mar 2 -> Mar 5 = 3 (hal's ends after the quarter)
    #   sorted 1 1 3 26 68.375: median rank 3 = 3, p90 rank 5 = 68.375
    # engaged: ann 5; bob 17; cy Jan 16 -> Jan 25 = 9 and, regressed, Feb 1 03:00 -> Mar 1
    #   12:00 = 28.375; sorted 5 9 17 28.375: median rank 2 = 9, p90 rank 4 = 28.375
    # mql: ann 0.5; bob 1 and, back from recycled, 0.5; cy Jan 25 12:00 -> Feb 1 03:00 =
    #   6.625; dee 2; fay Mar 5 12:00 -> Apr 1 03:00 = 26.625; sorted 0.5 0.5 1 2 6.625 26.625:
    #   median rank 3 = 1, p90 rank 6 = 26.625
    # sal: ann Jan 11 00:00 -> Feb 10 12:00 = 30.5; dee Feb 12 -> Mar 20 = 36: median rank 1,
    #   p90 rank 2. opportunity: ann Feb 10 -> Mar 15 = 33. recycled: bob Jan 21 -> Feb 5 = 15.
    #   customer, disqualified: no stay ended.
    expected = {
        "inquiry": (5, 3.0, 68.375),
        "engaged": (4, 9.0, 28.375),
        "mql": (6, 1.0, 26.625),
        "sal": (2, 30.5, 36.0),
        "opportunity": (1, 33.0, 33.0),
        "customer": (0, None, None),
        "recycled": (1, 15.0, 15.0),
        "disqualified": (0, None, None),
    }
    assert {stage: pick(row, *SPREAD) for stage, row in rows.items()} == {
        stage: approx(values) for stage, values in expected.items()}


def test_time_in_stage_by_month_in_new_york(history):
    rows = rows_by(velocity(history, by="month").table("time_in_stage"), "period", "stage")
    # mql stays by the month they ended, in New York: January ann 0.5, bob 1, cy 6.625 (ended
    # Feb 1 03:00 UTC, Jan 31 there); February bob 0.5, dee 2; March fay 26.625 (ended Apr 1
    # 03:00 UTC, Mar 31 there).
    assert pick(rows["2026-01", "mql"], *SPREAD) == approx((3, 1.0, 6.625))
    assert pick(rows["2026-02", "mql"], *SPREAD) == approx((2, 0.5, 2.0))
    assert pick(rows["2026-03", "mql"], *SPREAD) == approx((1, 26.625, 26.625))
    # engaged: January ann 5, bob 17, cy 9; March cy 28.375 (regressed stay); none in February.
    assert pick(rows["2026-01", "engaged"], *SPREAD) == approx((3, 9.0, 17.0))
    assert pick(rows["2026-02", "engaged"], *SPREAD) == (0, None, None)
    assert pick(rows["2026-03", "engaged"], *SPREAD) == approx((1, 28.375, 28.375))


def test_mql_to_sales_response(history):
    report = velocity(history)
    (row,) = report.table("mql_response").rows
    # Responses (an mql stay ended by a person): ann 12 h (accepted), bob 24 h (rejected) and
    # 12 h (accepted when back), dee 48 h, fay 639 h (Mar 5 12:00 -> Apr 1 03:00). cy's stay
    # was ended by an advance rule: not a response. Sorted 12 12 24 48 639: median rank 3,
    # p90 rank 5.
    assert pick(row, *RESPONSE) == approx((5, 24.0, 639.0, 1))
    months = rows_by(velocity(history, by="month").table("mql_response"), "period")
    # January ann 12, bob 24 (cy's engine move Jan 31 in New York); February bob 12, dee 48;
    # March fay 639.
    assert pick(months["2026-01"], *RESPONSE) == approx((2, 12.0, 24.0, 1))
    assert pick(months["2026-02"], *RESPONSE) == approx((2, 12.0, 48.0, 0))
    assert pick(months["2026-03"], *RESPONSE) == approx((1, 639.0, 639.0, 0))
    chart = report.table("mql_response").chart
    assert chart is None  # one row: nothing to draw
    chart = velocity(history, by="month").table("mql_response").chart
    assert (chart.kind, chart.x) == ("line", "period")


def test_mql_response_split_by_owner(history):
    rows = rows_by(velocity(history, split="owner").table("mql_response"), "split")
    # rep@acme: ann 12, bob 24 and 12 -> sorted 12 12 24: median rank 2, p90 rank 3.
    # sam@acme: dee 48, fay 639. No owner: cy, ended by the engine only.
    assert pick(rows["rep@acme"], *RESPONSE) == approx((3, 12.0, 24.0, 0))
    assert pick(rows["sam@acme"], *RESPONSE) == approx((2, 48.0, 639.0, 0))
    assert pick(rows["(none)"], *RESPONSE) == (0, None, None, 1)


def test_inquiry_to_opportunity_and_to_customer(history):
    rows = rows_by(velocity(history).table("milestones"), "milestone")
    # First opportunity in the quarter: ann (Feb 10, inquiry Dec 10: 62 days) and dee (Mar 20,
    # created as mql: no inquiry, counted apart). First customer: ann (Mar 15: 95 days).
    assert pick(rows["inquiry → opportunity"], *MILESTONE) == approx((1, 62.0, 62.0, 1))
    assert pick(rows["inquiry → customer"], *MILESTONE) == approx((1, 95.0, 95.0, 0))
    months = rows_by(velocity(history, by="month").table("milestones"), "period", "milestone")
    assert pick(months["2026-02", "inquiry → opportunity"], *MILESTONE) == approx(
        (1, 62.0, 62.0, 0))
    assert pick(months["2026-03", "inquiry → opportunity"], *MILESTONE) == (0, None, None, 1)
    assert pick(months["2026-01", "inquiry → customer"], *MILESTONE) == (0, None, None, 0)


def test_split_by_persona_and_channel(history):
    rows = rows_by(velocity(history, split="persona").table("time_in_stage"), "split", "stage")
    # inquiry stays: cio ann 26, bob 1, eve 68.375 -> median rank 2 = 26, p90 rank 3;
    # dev cy 1, fay 3 -> median rank 1 = 1, p90 rank 2 = 3.
    assert pick(rows["cio", "inquiry"], *SPREAD) == approx((3, 26.0, 68.375))
    assert pick(rows["dev", "inquiry"], *SPREAD) == approx((2, 1.0, 3.0))
    channels = rows_by(velocity(history, split="source_channel").table("milestones"),
                       "split", "milestone")
    assert pick(channels["web", "inquiry → customer"], *MILESTONE) == approx((1, 95.0, 95.0, 0))
    assert pick(channels["list", "inquiry → opportunity"], *MILESTONE) == (0, None, None, 1)


def test_the_program_scopes_the_leads(history):
    everyone = rows_by(velocity(history, program=None).table("time_in_stage"), "stage")
    # gus (program "other") adds an inquiry stay of 1 day: 1 1 1 3 26 68.375, median rank 3.
    assert pick(everyone["inquiry"], *SPREAD) == approx((6, 1.0, 68.375))


def test_through_the_engine(db, sample_program):
    """Leads created and moved by the engine's own functions, sales answering through
    accept and reject (engine/sales/service.py)."""
    day = datetime(2026, 2, 2, 15, tzinfo=UTC)
    with db.session() as s:
        load_program(session=s, directory=sample_program, now=day - timedelta(days=30))
        launch_all(s)
        leads = {}
        for name in ("ann", "bob", "cy"):
            leads[name], _ = upsert_lead(session=s, fields={"email": f"{name}@globex.example"},
                                         now=day, actor="test", program="acme-nurture")
            change_stage(session=s, lead=leads[name], stage="mql", reason="test",
                         actor="scoring", now=day + timedelta(days=1))
        accept(session=s, lead=leads["ann"], actor="rep@acme", now=day + timedelta(days=1, hours=4))
        reject(session=s, lead=leads["bob"], reason="too small", actor="rep@acme",
               now=day + timedelta(days=1, hours=10))
        change_stage(session=s, lead=leads["cy"], stage="engaged", reason="back to nurture",
                     actor="advance", now=day + timedelta(days=3))
    query = parse_query(program="acme-nurture", start="2026-02-01", end="2026-02-28",
                        tz="America/New_York", now=NOW)
    with db.session() as s:
        report = build_report("velocity", s, query)
    # Responses: ann accepted after 4 h, bob rejected after 10 h; cy moved by the engine.
    (row,) = report.table("mql_response").rows
    assert pick(row, *RESPONSE) == approx((2, 4.0, 10.0, 1))
    rows = rows_by(report.table("time_in_stage"), "stage")
    # inquiry: 1 day each (3); mql: 4 h, 10 h, 2 days -> median rank 2 = 10 h.
    assert pick(rows["inquiry"], *SPREAD) == approx((3, 1.0, 1.0))
    assert pick(rows["mql"], *SPREAD) == approx((3, 10 / 24, 2.0))
