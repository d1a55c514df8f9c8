"""The funnel report against a stage history whose figures are worked out by hand below
(tests/report_history.py lists the leads and their dates), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from launching import launch_all
from report_history import NOW, pick, quarter, rows_by, write_history

from engine.flows.leads import change_stage, upsert_lead
from engine.programs.service import load_program
from engine.reports import build_report
from engine.reports.funnel import build
from engine.reports.query import parse_query
from engine.sales.service import accept, reject

FLOWS = ("entered", "balance_start", "inflow", "outflow", "balance_end")
PATH = ("inquiry", "engaged", "mql", "sal", "opportunity", "customer")


@pytest.fixture
def history(db):
    write_history(db)
    return db


def funnel(db, **kwargs):
    with db.session() as s:
        return build(s, quarter(**kwargs))


def test_whole_quarter_flows_and_balances_come_from_the_history(history):
    report = funnel(history)
    rows = rows_by(report.table("funnel"), "stage")
    # Opening (before Jan 1 05:00 UTC): ann (inquiry since Dec 10) and eve (inquiry since
    # Jan 1 03:00 UTC, Dec 31 in New York): 2 in inquiry.
    # entered: inquiry bob cy fay hal; engaged ann bob cy (cy twice, counted once); mql ann bob
    # cy dee fay; sal ann bob dee fay; opportunity ann dee; customer ann.
    # inflow/outflow (changes): inquiry in 4 creations, out ann bob cy fay eve = 5;
    # engaged in ann bob cy cy = 4, out ann bob cy->mql, cy->mql in March = 4; mql in ann bob
    # bob(from recycled) cy cy dee(created) fay = 7, out ann bob->recycled bob cy->engaged
    # dee fay = 6; sal in ann bob dee fay, out ann dee; opportunity in ann dee, out ann;
    # customer in ann.
    # End (before Apr 1 04:00 UTC): hal inquiry (engaged only after the end, whatever its
    # stage column says), cy mql, bob and fay sal, dee opportunity, ann customer.
    assert {stage: pick(rows[stage], *FLOWS) for stage in PATH} == {
        "inquiry": (4, 2, 4, 5, 1),
        "engaged": (3, 0, 4, 4, 0),
        "mql": (5, 0, 7, 6, 1),
        "sal": (4, 0, 4, 2, 2),
        "opportunity": (2, 0, 2, 1, 1),
        "customer": (1, 0, 1, 0, 1),
    }
    assert "period" not in rows["mql"] and "split" not in rows["mql"]


def test_conversion_to_next_and_cumulative_at_all(history):
    rows = rows_by(funnel(history).table("funnel"), "stage")
    # Next stage by the end, after the first entry in the quarter: inquiry bob cy (not fay, who
    # skipped engaged, nor hal, engaged after the end) 2/4; engaged ann bob cy 3/3; mql ann bob
    # dee fay (not cy) 4/5; sal ann dee 2/4; opportunity ann 1/2; customer has no next stage.
    # Cohort: inquiries of the quarter bob cy fay hal (4); reached at all: engaged bob cy,
    # mql bob cy fay, sal bob fay, no opportunity nor customer (ann's inquiry was in December,
    # dee never was an inquiry).
    got = {stage: pick(rows[stage], "converted_next", "conversion_next", "reached",
                       "cumulative_from_inquiry") for stage in PATH}
    assert got == {
        "inquiry": (2, 0.5, 4, 1.0),
        "engaged": (3, 1.0, 2, 0.5),
        "mql": (4, 0.8, 3, 0.75),
        "sal": (2, 0.5, 2, 0.5),
        "opportunity": (1, 0.5, 0, 0.0),
        "customer": (None, None, 0, 0.0),
    }


def test_in_order_leaves_out_skipped_stages_and_leads_created_past_inquiry(history):
    rows = rows_by(funnel(history).table("in_order"), "stage")
    # entered in order: inquiry bob cy fay hal; engaged ann bob cy; mql ann bob cy (not dee,
    # created as mql, nor fay, who skipped engaged); sal ann bob; opportunity ann (not dee);
    # customer ann. Converted in order: inquiry bob cy 2/4; engaged 3/3; mql ann bob 2/3;
    # sal ann 1/2; opportunity ann 1/1. Cohort bob cy fay hal: in order engaged bob cy, mql
    # bob cy (fay skipped engaged), sal bob.
    got = {stage: pick(rows[stage], "entered_in_order", "converted_next_in_order",
                       "conversion_next_in_order", "reached_in_order", "cumulative_in_order")
           for stage in PATH}
    assert got == {
        "inquiry": (4, 2, 0.5, 4, 1.0),
        "engaged": (3, 3, 1.0, 2, 0.5),
        "mql": (3, 2, 2 / 3, 2, 0.5),
        "sal": (2, 1, 0.5, 1, 0.25),
        "opportunity": (1, 1, 1.0, 0, 0.0),
        "customer": (1, None, None, 0, 0.0),
    }


def test_detours_recycled_and_disqualified(history):
    report = funnel(history)
    detours = rows_by(report.table("detours"), "stage")
    # bob left mql for recycled (Jan 21) and came back into mql (Feb 5); eve left inquiry for
    # disqualified (Mar 10).
    got = {stage: pick(detours[stage], "left_for_recycled", "left_for_disqualified",
                       "back_from_recycled") for stage in PATH}
    assert got == {"inquiry": (0, 1, 0), "engaged": (0, 0, 0), "mql": (1, 0, 1),
                   "sal": (0, 0, 0), "opportunity": (0, 0, 0), "customer": (0, 0, 0)}
    stages = rows_by(report.table("detour_stages"), "stage")
    assert pick(stages["recycled"], *FLOWS) == (1, 0, 1, 1, 0)
    assert pick(stages["disqualified"], *FLOWS) == (1, 0, 1, 0, 1)


def test_by_month_in_new_york_puts_the_edge_changes_in_their_local_month(history):
    report = funnel(history, by="month")
    table = report.table("funnel")
    assert [c.key for c in table.columns][:2] == ["period", "stage"]
    rows = rows_by(table, "period", "stage")
    assert [row["period"] for row in table.rows[::6]] == ["2026-01", "2026-02", "2026-03"]
    # January (to Feb 1 05:00 UTC): cy's regression at Feb 1 03:00 UTC is Jan 31 in New York.
    #   inquiry: 2 at start (ann eve), in bob cy, out ann bob cy: end 1 (eve).
    #   engaged: in ann bob cy cy = 4, out ann bob cy = 3: end 1 (cy). mql: in ann bob cy,
    #   out ann(sal) bob(recycled) cy(engaged): end 0. sal: in ann: end 1.
    # February: mql in bob(from recycled) dee(created), out both to sal; sal 1 + 2 - 1 (ann
    #   to opportunity) = 2; opportunity in ann.
    # March (to Apr 1 04:00 UTC): fay's sal at Apr 1 03:00 UTC is Mar 31 in New York.
    #   inquiry 1 + fay hal - eve fay = 1 (hal); engaged 1 - cy = 0; mql cy fay in, fay out
    #   = 1; sal 2 + fay - dee = 2; opportunity 1 + dee - ann = 1; customer ann.
    expected = {
        ("2026-01", "inquiry"): (2, 2, 2, 3, 1),
        ("2026-01", "engaged"): (3, 0, 4, 3, 1),
        ("2026-01", "mql"): (3, 0, 3, 3, 0),
        ("2026-01", "sal"): (1, 0, 1, 0, 1),
        ("2026-01", "opportunity"): (0, 0, 0, 0, 0),
        ("2026-02", "inquiry"): (0, 1, 0, 0, 1),
        ("2026-02", "engaged"): (0, 1, 0, 0, 1),
        ("2026-02", "mql"): (2, 0, 2, 2, 0),
        ("2026-02", "sal"): (2, 1, 2, 1, 2),
        ("2026-02", "opportunity"): (1, 0, 1, 0, 1),
        ("2026-03", "inquiry"): (2, 1, 2, 2, 1),
        ("2026-03", "engaged"): (0, 1, 0, 1, 0),
        ("2026-03", "mql"): (2, 0, 2, 1, 1),
        ("2026-03", "sal"): (1, 2, 1, 1, 2),
        ("2026-03", "opportunity"): (1, 1, 1, 1, 1),
        ("2026-03", "customer"): (1, 0, 1, 0, 1),
    }
    assert {key: pick(rows[key], *FLOWS) for key in expected} == expected
    # Conversion per month, by the end of the quarter: January mql ann bob (bob's sal is in
    # February) of ann bob cy; February sal dee (opportunity Mar 20) of bob dee; March mql
    # fay of cy fay, inquiry none of fay hal (hal engaged after the end).
    assert pick(rows["2026-01", "mql"], "converted_next", "conversion_next") == (2, 2 / 3)
    assert pick(rows["2026-02", "sal"], "converted_next", "conversion_next") == (1, 0.5)
    assert pick(rows["2026-03", "mql"], "converted_next", "conversion_next") == (1, 0.5)
    assert pick(rows["2026-03", "inquiry"], "converted_next", "conversion_next") == (0, 0.0)
    # No inquiry in February: no cohort, no cumulative rate. March's cohort fay hal: fay
    # reached mql and sal at all, never in order (she skipped engaged).
    assert rows["2026-02", "mql"]["cumulative_from_inquiry"] is None
    assert pick(rows["2026-03", "sal"], "reached", "cumulative_from_inquiry") == (1, 0.5)
    in_order = rows_by(report.table("in_order"), "period", "stage")
    assert pick(in_order["2026-03", "sal"], "reached_in_order", "cumulative_in_order") == (0, 0.0)
    # In March, cy's mql is in order (inquiry, engaged, mql in January, then back); fay's not.
    assert in_order["2026-03", "mql"]["entered_in_order"] == 1
    # February in order: bob back into mql (in order since January) and on to sal; dee not.
    assert pick(in_order["2026-02", "mql"], "entered_in_order", "converted_next_in_order") == (1, 1)
    assert pick(in_order["2026-02", "sal"], "entered_in_order", "conversion_next_in_order") == (
        1, 0.0)


def test_in_utc_the_edge_changes_fall_in_the_other_month(history):
    rows = rows_by(funnel(history, by="month", tz="UTC").table("funnel"), "period", "stage")
    # In UTC the quarter starts Jan 1 00:00: eve's creation (03:00) is inside it, so only ann
    # is in inquiry at the start, and January has 3 inquiries in; cy's regression (Feb 1
    # 03:00) is February's; fay's sal (Apr 1 03:00) is after the end.
    assert pick(rows["2026-01", "inquiry"], "balance_start", "inflow") == (1, 3)
    assert pick(rows["2026-01", "engaged"], "inflow", "balance_end") == (3, 0)
    assert pick(rows["2026-02", "engaged"], "inflow", "balance_end") == (1, 1)
    assert pick(rows["2026-03", "mql"], "outflow", "balance_end") == (0, 2)
    assert pick(rows["2026-03", "mql"], "converted_next", "conversion_next") == (0, 0.0)


def test_by_quarter_is_one_period_with_the_quarter_figures(history):
    rows = rows_by(funnel(history, by="quarter").table("funnel"), "period", "stage")
    assert list(rows)[:2] == [("2026-Q1", "inquiry"), ("2026-Q1", "engaged")]
    assert pick(rows["2026-Q1", "mql"], *FLOWS) == (5, 0, 7, 6, 1)


def test_split_by_persona(history):
    report = funnel(history, split="persona")
    rows = rows_by(report.table("funnel"), "split", "stage")
    assert {split for split, _ in rows} == {"cio", "dev"}
    # cio: ann bob eve, and hal (persona from its enrollment); dev: cy dee fay.
    # cio inquiry: ann eve at start, in bob hal, out ann bob eve: end 1 (hal). dev inquiry:
    # in cy fay, out both.
    assert pick(rows["cio", "inquiry"], *FLOWS) == (2, 2, 2, 3, 1)
    assert pick(rows["dev", "inquiry"], *FLOWS) == (2, 0, 2, 2, 0)
    # mql: cio ann bob (bob twice in, recycled between); dev cy dee fay.
    assert pick(rows["cio", "mql"], *FLOWS) == (2, 0, 3, 3, 0)
    assert pick(rows["dev", "mql"], *FLOWS) == (3, 0, 4, 3, 1)
    # Cohorts: cio bob hal (bob reached mql), dev cy fay (both reached mql, only cy in order).
    assert pick(rows["cio", "mql"], "reached", "cumulative_from_inquiry") == (1, 0.5)
    assert pick(rows["dev", "mql"], "reached", "cumulative_from_inquiry") == (2, 1.0)
    in_order = rows_by(report.table("in_order"), "split", "stage")
    assert pick(in_order["dev", "mql"], "reached_in_order", "cumulative_in_order") == (1, 0.5)
    assert [c.key for c in report.table("detours").columns][:2] == ["split", "stage"]


def test_split_by_source_channel_and_by_owner(history):
    rows = rows_by(funnel(history, split="source_channel").table("funnel"), "split", "stage")
    # web: ann cy fay; ads: bob; list: dee; none: eve hal.
    assert {split for split, _ in rows} == {"web", "ads", "list", "(none)"}
    assert rows["list", "mql"]["entered"] == 1
    assert pick(rows["(none)", "inquiry"], "balance_start", "balance_end") == (1, 1)  # eve; hal
    assert pick(rows["web", "mql"], "entered", "converted_next") == (3, 2)  # ann fay; not cy
    owners = rows_by(funnel(history, split="owner").table("funnel"), "split", "stage")
    # rep@acme: ann bob; sam@acme: dee fay; none: cy eve hal.
    assert pick(owners["sam@acme", "sal"], "entered", "balance_end") == (2, 1)  # fay; dee left
    assert owners["rep@acme", "customer"]["entered"] == 1


def test_the_program_scopes_the_leads(history):
    everyone = rows_by(funnel(history, program=None).table("funnel"), "stage")
    # gus (enrolled in "other" only) counts when no program is named: inquiry and engaged.
    assert pick(everyone["inquiry"], "entered", "inflow", "outflow") == (5, 5, 6)
    assert pick(everyone["engaged"], "entered", "converted_next") == (4, 3)


def test_the_report_has_a_chart_and_its_definitions(history):
    report = funnel(history)
    chart = report.table("funnel").chart
    assert (chart.kind, chart.x, chart.series) == ("bar", "stage", ("entered",))
    assert [table["key"] for table in report.to_dict()["tables"]] == [
        "funnel", "in_order", "detours", "detour_stages"]
    assert all(table.notes for table in report.tables[:3])


def test_through_the_engine(db, sample_program):
    """Leads created and moved by the engine's own functions: each change is stamped with
    the `now` it is given."""
    day = datetime(2026, 2, 2, 15, tzinfo=UTC)  # a Monday, 10:00 in New York
    with db.session() as s:
        load_program(session=s, directory=sample_program, now=day - timedelta(days=30))
        launch_all(s)
        leads = {}
        for name in ("ann", "bob", "cy"):
            leads[name], _ = upsert_lead(session=s, fields={"email": f"{name}@globex.example"},
                                         now=day, actor="test", program="acme-nurture")
        for name in ("ann", "bob"):
            change_stage(session=s, lead=leads[name], stage="mql", reason="test",
                         actor="test", now=day + timedelta(days=1))
        accept(session=s, lead=leads["ann"], actor="rep@acme", now=day + timedelta(days=2))
        reject(session=s, lead=leads["bob"], reason="too small", actor="rep@acme",
               now=day + timedelta(days=2))
    query = parse_query(program="acme-nurture", start="2026-02-01", end="2026-02-28",
                        tz="America/New_York", now=NOW)
    with db.session() as s:
        report = build_report("funnel", s, query)
    rows = rows_by(report.table("funnel"), "stage")
    # 3 inquiries created; ann and bob to mql, ann accepted (sal), bob rejected (recycled).
    assert pick(rows["inquiry"], *FLOWS) == (3, 0, 3, 2, 1)
    assert pick(rows["mql"], *FLOWS) == (2, 0, 2, 2, 0)
    assert pick(rows["mql"], "converted_next", "conversion_next") == (1, 0.5)
    assert pick(rows["sal"], "entered", "balance_end") == (1, 1)
    assert pick(rows["inquiry"], "reached", "cumulative_from_inquiry") == (3, 1.0)
    assert rows_by(report.table("detours"), "stage")["mql"]["left_for_recycled"] == 1
