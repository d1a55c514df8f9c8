"""Reports as users get them: `nurture report` in the terminal, as JSON, CSV and an HTML page,
and `GET /api/v1/reports/<name>`; hostile values in the data stay inert in every format."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from engine.flows.leads import upsert_lead
from engine.leads.models import Lead
from engine.leads.service import set_stage
from engine.programs.service import load_program
from engine.reports.model import Chart, Column, Report, Table
from engine.reports.output import chart_svg, to_csv, to_html
from engine.reports.query import parse_query
from engine.web.app import create_app

HOSTILE = '<script>alert(1)</script>"=HYPERLINK("http://evil.example")'


@pytest.fixture
def mqls(db, sample_program):
    """Two leads of the sample program become MQLs on Jan 10, 2026, one from a hostile
    source channel; one is accepted two days later, within the 14-day SLA."""
    with db.session() as s:
        load_program(session=s, directory=sample_program, now=datetime(2026, 1, 1, tzinfo=UTC))
        for email, channel in (("ada@globex.example", "webinar"), ("bob@globex.example", HOSTILE)):
            lead, _ = upsert_lead(session=s, fields={"email": email, "title": "CIO",
                                                     "source_channel": channel},
                                  now=datetime(2026, 1, 5, tzinfo=UTC), actor="test",
                                  program="acme-nurture")
            set_stage(session=s, lead=lead, stage="mql", reason="score", actor="test",
                      now=datetime(2026, 1, 10, tzinfo=UTC))
        ada = s.scalar(select(Lead).where(Lead.email == "ada@globex.example"))
        set_stage(session=s, lead=ada, stage="sal", reason="accepted", actor="rep",
                  now=datetime(2026, 1, 12, tzinfo=UTC))


def test_the_cli_prints_tables_json_csv_and_writes_html(cli, mqls, tmp_path):
    args = ("report", "sla", "acme-nurture", "--from", "2026-01-01", "--to", "2026-01-31")
    shown = cli(*args)
    assert shown.exit_code == 0, shown.output
    assert "SLA compliance" in shown.output and "acme-nurture · 2026-01-01 to 2026-01-31" in \
        shown.output
    data = json.loads(cli(*args, "--json").output)
    first = data["tables"][0]["rows"][0]
    assert (first["mqls"], first["within_sla"], first["unanswered"]) == (2, 1, 1)
    assert data["query"]["from"] == "2026-01-01T00:00:00+00:00"
    rows = list(csv.DictReader(io.StringIO(cli(*args, "--csv").output)))
    assert rows[0]["mqls"] == "2" and rows[0]["within_sla"] == "1"
    page = tmp_path / "sla.html"
    written = cli(*args, "--by", "month", "--html", page)
    assert written.exit_code == 0 and f"wrote {page}" in written.output
    html = page.read_text(encoding="utf-8")
    assert "<svg" in html and "<table>" in html and "<script" not in html


def test_the_cli_names_what_is_wrong(cli, mqls):
    bad = cli("report", "sla", "--from", "2026-02-30")
    assert bad.exit_code == 1 and "from: '2026-02-30' is not an ISO date" in bad.output
    missing = cli("report", "sla", "no-such-program")
    assert missing.exit_code == 1 and "no program named 'no-such-program'" in missing.output
    table = cli("report", "sla", "--csv", "--table", "nope", "--from", "2026-01-01")
    assert table.exit_code == 1 and "has no table 'nope' (tables: " in table.output
    both = cli("report", "sla", "--json", "--csv")
    assert both.exit_code == 2 and "give --json or --csv, not both" in both.output


def test_hostile_values_stay_inert_in_every_format(cli, mqls):
    query = ("report", "attribution", "acme-nurture", "--from", "2026-01-01", "--to",
             "2026-01-31")
    shown = cli(*query)
    assert HOSTILE[:20] in shown.output  # printed as typed
    rows = list(csv.reader(io.StringIO(cli(*query, "--csv").output)))
    assert any(cell == HOSTILE for row in rows for cell in row)  # data, not markup
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)


def test_html_escapes_data_and_fetches_nothing():
    table = Table("t", "A table", [Column("name", "name", "text"), Column("n", "count")],
                  rows=[{"name": HOSTILE, "n": 3}, {"name": "=1+1", "n": 1}],
                  chart=Chart("bar", "name", ("n",), "Counts"), notes=[HOSTILE])
    report = Report("sla", "Title <b>", parse_query(program=None, start="2026-01-01",
                                                     end="2026-01-31", now=datetime.now(UTC)),
                    datetime(2026, 2, 1, tzinfo=UTC), [table])
    html = to_html(report)
    assert "<script" not in html and "Title &lt;b&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    for attribute in ("src=", "href=", "@import", "url("):
        assert attribute not in html.lower()
    assert "'=1+1" in to_csv(report)


def test_each_bar_of_a_grouped_and_split_chart_names_its_period_and_split():
    rows = [{"period": month, "split": persona, "stage": stage, "n": 1}
            for month in ("2026-01", "2026-02") for persona in ("finance", "it")
            for stage in ("inquiry", "mql")]
    table = Table("t", "Stages", [Column("period", "month", "text"),
                                  Column("split", "persona", "text"),
                                  Column("stage", "stage", "text"), Column("n", "leads")],
                  rows=rows, chart=Chart("bar", "stage", ("n",), "Leads"))
    svg = str(chart_svg(table))
    labels = [f"{month} · {persona} · {stage}" for month in ("2026-01", "2026-02")
              for persona in ("finance", "it") for stage in ("inquiry", "mql")]
    assert all(svg.count(label) >= 1 for label in labels)
    by_period = Table("p", "By month", table.columns, rows=rows[:2],
                      chart=Chart("line", "period", ("n",), "Leads"))
    assert "finance · 2026-01" in str(chart_svg(by_period))  # x is the period itself


@pytest.fixture
def api(env, keys):
    app = create_app()
    client = app.test_client()
    yield lambda path, role="reviewer": client.get(
        path, headers={"Authorization": f"Bearer {keys[role]}"})
    app.extensions["nurture.db"].dispose()


def test_the_api_answers_json_and_csv_for_every_role(api, mqls):
    path = "/api/v1/reports/sla?program=acme-nurture&from=2026-01-01&to=2026-01-31"
    for role in ("admin", "marketer", "reviewer", "sales"):
        answer = api(path, role)
        assert answer.status_code == 200, (role, answer.get_json())
    body = api(path).get_json()
    assert body["report"] == "sla" and body["tables"][0]["rows"][0]["mqls"] == 2
    as_csv = api(path + "&format=csv&table=" + body["tables"][0]["key"])
    assert as_csv.status_code == 200 and as_csv.mimetype == "text/csv"
    assert as_csv.get_data(as_text=True).splitlines()[1].startswith("2,1,")


@pytest.mark.parametrize(("path", "status", "field"), [
    ("/api/v1/reports/nope", 404, None),
    ("/api/v1/reports/sla?from=yesterday", 422, "from"),
    ("/api/v1/reports/sla?by=year", 422, "by"),
    ("/api/v1/reports/sla?split=email", 422, "split"),
    ("/api/v1/reports/sla?tz=Nowhere/Else", 422, "tz"),
    ("/api/v1/reports/sla?format=xml", 422, "format"),
    ("/api/v1/reports/sla?program=" + "x" * 500, 422, "program"),
    ("/api/v1/reports/sla?program=ghost", 404, "program"),
    ("/api/v1/reports/sla?format=csv&table=nope", 422, "table"),
    ("/api/v1/reports/sla?from=" + "9" * 5000, 422, "from"),
])
def test_the_api_refuses_bad_parameters_naming_them(api, path, status, field):
    answer = api(path)
    assert answer.status_code == status, answer.get_data(as_text=True)
    if field:
        assert answer.get_json()["field"] == field


def test_the_api_needs_a_key(env):
    app = create_app()
    try:
        assert app.test_client().get("/api/v1/reports/sla").status_code == 401
    finally:
        app.extensions["nurture.db"].dispose()


def test_the_review_sets_the_quarter_against_the_one_before(cli, mqls):
    shown = cli("report", "review", "acme-nurture", "--to", "2026-02-15", "--json")
    assert shown.exit_code == 0, shown.output
    review = json.loads(shown.output)
    assert review["title"] == "Quarterly review 2026-Q1"
    assert (review["query"]["from"], review["query"]["to"]) == ("2026-01-01T00:00:00+00:00",
                                                                "2026-04-01T00:00:00+00:00")
    headline = {row["figure"]: row for row in review["tables"][0]["rows"]}
    assert headline["MQLs"] == {"figure": "MQLs", "this": "2", "previous": "0", "change": "new"}
    # ada answered in 2 days, bob never (overdue long since): 1 of 2 within the SLA
    assert headline["MQLs answered within the SLA"]["this"] == "50.0%"
    assert headline["entered sal"]["this"] == "1"
    keys = [table["key"] for table in review["tables"]]
    for part in ("funnel.funnel", "velocity.time_in_stage", "sla.mql_response",
                 "engagement.emails", "goal.goal", "attribution.attribution"):
        assert part in keys


def test_a_wide_table_prints_at_its_natural_width_and_leaves_the_console_as_it_was():
    from engine.cli_context import SafeConsole
    from engine.reports.output import to_terminal

    out = io.StringIO()
    console = SafeConsole(file=out)
    before = console._width  # None: rich measures the terminal at each print
    columns = [Column(f"column_{n}", f"a long column label {n}") for n in range(8)]
    table = Table("wide", "Wide", columns, rows=[{c.key: 123456 for c in columns}])
    report = Report("sla", "Wide", parse_query(program=None, start=None, end=None,
                                               now=datetime.now(UTC)),
                    datetime.now(UTC), [table])
    to_terminal(report, console)
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) > 150  # one row per line, not folded
    assert any("a long column label 7" in line for line in lines)
    assert console._width == before  # later output is not printed that wide
