"""The console's Reports page: the funnel drawn from a known history (tables and an SVG chart),
the same refusals as the API, unknown reports, the CSV download, hostile program names and
sources shown escaped, and signed-out visitors sent to sign in."""

from __future__ import annotations

import pytest
from console_helpers import Browser, Clock, add_user
from report_history import NOW, write_history

from engine.leads.models import Lead
from engine.programs.models import ProgramRecord
from engine.web.app import create_app

QUARTER = "program=p&from=2026-01-01&to=2026-03-31"
SCRIPT = "<script>alert(1)</script>"


@pytest.fixture
def app(env):
    app = create_app(clock=Clock(NOW))
    yield app
    app.extensions["nurture.db"].dispose()


@pytest.fixture
def browser(app, db) -> Browser:
    write_history(db)
    add_user(db, "ro@x.example", "read_only")
    browser = Browser(app.test_client())
    assert browser.sign_in("ro@x.example").status_code == 303
    return browser


def test_the_list_names_every_report_and_offers_the_loaded_programs(browser):
    page = browser.get("/reports")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'href="/reports/funnel"' in html and 'href="/reports/review"' in html
    assert '<option value="p">p</option>' in html and '<option value="other">' in html


def test_the_report_select_goes_to_the_report_with_the_other_fields(browser):
    page = browser.get(f"/reports?report=velocity&{QUARTER}&by=")
    assert page.status_code == 303
    assert page.headers["Location"].startswith("/reports/velocity?")
    assert "from=2026-01-01" in page.headers["Location"] and "by=" not in page.headers["Location"]


def test_the_funnel_shows_its_table_and_an_svg_chart_without_script(browser):
    page = browser.get(f"/reports/funnel?{QUARTER}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<svg" in html and "<script" not in html
    assert "<table>" in html and "Funnel report" in html
    assert "2026-01-01 to 2026-03-31" in html
    csp = page.headers["Content-Security-Policy"]
    assert "script-src" not in csp and "'unsafe-inline'" not in csp and "'sha256-" in csp


def test_from_after_to_is_refused_with_the_parsers_message(browser):
    page = browser.get("/reports/funnel?from=2026-03-01&to=2026-01-01")
    assert page.status_code == 422
    html = page.get_data(as_text=True)
    assert "Invalid: from: from (2026-03-01" in html and "must be before to" in html
    assert 'value="2026-03-01"' in html and "<svg" not in html


def test_a_bad_date_and_a_bad_grouping_are_refused(browser):
    assert browser.get("/reports/funnel?from=yesterday").status_code == 422
    assert browser.get("/reports/funnel?by=fortnight").status_code == 422
    assert browser.get("/reports/funnel/csv?by=fortnight").status_code == 422


def test_an_unknown_report_is_not_found(browser):
    assert browser.get("/reports/nosuch").status_code == 404
    assert browser.get("/reports/nosuch/csv").status_code == 404


def test_the_csv_download_is_the_first_table(browser):
    page = browser.get(f"/reports/funnel/csv?{QUARTER}")
    assert page.status_code == 200
    assert page.mimetype == "text/csv"
    assert 'filename="funnel.csv"' in page.headers["Content-Disposition"]
    assert page.get_data(as_text=True).splitlines()[0].startswith("stage,")
    html = browser.get(f"/reports/funnel?{QUARTER}").get_data(as_text=True)
    assert "/reports/funnel/csv?" in html


def test_a_hostile_program_name_and_source_are_shown_escaped(browser, db):
    with db.session() as s:
        s.add(ProgramRecord(name=SCRIPT, current_version=1, created_at=NOW))
        for lead in s.query(Lead).filter(Lead.source_channel == "web"):
            lead.source_channel = SCRIPT
    html = browser.get("/reports").get_data(as_text=True)
    assert SCRIPT not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    escaped = "&lt;script&gt;alert(1)&lt;/script"
    page = browser.get(f"/reports/attribution?{QUARTER}&split=source_channel")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert SCRIPT not in html and f"<td>{escaped}&gt;</td>" in html  # the table's cells
    html = browser.get(f"/reports/funnel?{QUARTER}&split=source_channel").get_data(as_text=True)
    assert "<svg" in html and SCRIPT not in html
    assert f"<title>{escaped}" in html  # the chart's x labels, inside the SVG
    page = browser.get("/reports/funnel", query_string={"program": SCRIPT})
    assert SCRIPT not in page.get_data(as_text=True)


def test_a_signed_out_visitor_is_sent_to_sign_in(app, db):
    page = app.test_client().get(f"/reports/funnel?{QUARTER}")
    assert page.status_code == 303 and "/sign-in" in page.headers["Location"]


@pytest.mark.parametrize("role", ["admin", "marketer", "reviewer", "sales", "read_only"])
def test_every_role_reads_reports(app, db, role):
    email = f"{role.replace('_', '-')}@x.example"
    add_user(db, email, role)
    browser = Browser(app.test_client())
    browser.sign_in(email)
    page = browser.get("/reports")
    assert page.status_code == 200 and 'aria-current="page">Reports' in page.get_data(as_text=True)
