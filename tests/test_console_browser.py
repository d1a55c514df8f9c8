"""The console in a real browser: Playwright drives Debian's Chromium against the app served
over HTTP by werkzeug on a free port. A marketer signs in, searches a lead, opens it and sets
its stage; a sales rep accepts an MQL and it leaves the queue; a reviewer opens a proof sent to
them, sees the email in its sandboxed frame, approves it and finds it in the history; an admin
reads the Delivery page and a message of the local inbox; a read-only user runs the funnel
for a program and sees its chart. Every page visited is saved as a
screenshot under test-artifacts/console/ and checked with axe-core (tests/vendor/axe-core) for
serious or critical accessibility violations.

Without Chromium (or NURTURE_CHROMIUM) or the playwright package these tests skip locally;
with CI=true they fail instead, as .ci/run promises.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest
from console_helpers import PASSWORD, add_lead, add_user
from launching import send_proofs_to
from report_history import write_history
from werkzeug.serving import make_server

from engine.db import utcnow
from engine.sending.sink import free_port
from engine.web.app import create_app
from qa.screenshots import find_browser

ROOT = Path(__file__).resolve().parent.parent
AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
ARTIFACTS = Path(os.environ.get("NURTURE_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "console"
PHONE = {"width": 375, "height": 740}


def _browser_or_skip() -> str:
    """Chromium's path; a skip without it (or without playwright), a failure on CI."""
    missing = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the playwright package is not installed (pip install playwright)"
    path = find_browser()
    if path is None:
        missing = missing or "no Chromium: `apt-get install chromium` (or set NURTURE_CHROMIUM)"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: the browser tests need a browser: {missing}", pytrace=False)
        pytest.skip(missing)
    return path


@pytest.fixture
def server(env, db):
    """The console served over real HTTP on a free port, in a thread of this process."""
    app = create_app()
    port = free_port()
    httpd = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()
    thread.join(timeout=10)
    app.extensions["nurture.db"].dispose()


@pytest.fixture
def page():
    executable = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable,
                                             args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        context.set_default_timeout(15_000)
        yield context.new_page()
        context.close()
        browser.close()


def visit_check(page, name: str) -> None:
    """Save a full-page screenshot as <name>.png and assert axe-core finds no serious or
    critical violation on the page as it is now."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))  # CDP evaluation: the CSP allows it
    violations = page.evaluate("async () => (await axe.run(document)).violations.map("
                               "v => ({id: v.id, impact: v.impact, help: v.help,"
                               " nodes: v.nodes.map(n => n.target.join(' '))}))")
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not bad, f"{name}: {bad}"


def sign_in(page, server: str, email: str) -> None:
    page.goto(f"{server}/")
    assert page.url.endswith("/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")  # the keyboard alone signs in
    page.wait_for_url(re.compile(r"/leads$"))


def test_a_marketer_finds_a_lead_and_sets_its_stage(server, page, db):
    add_user(db, "mia@example.com", "marketer", name="Mia Marketer")
    lead_id = add_lead(db, "ada@analytical.example", first_name="Ada", last_name="Lovelace",
                       company="Analytical Engines")
    add_lead(db, "grace@navy.example", first_name="Grace", company="Navy")

    page.goto(f"{server}/")
    visit_check(page, "sign-in")
    sign_in(page, server, "mia@example.com")
    assert "Mia Marketer" in page.locator("header").inner_text()
    visit_check(page, "leads")

    page.keyboard.press("Tab")  # the first stop is the skip link
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"

    page.get_by_label("Email, name or company").fill("lovelace")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"q=lovelace"))
    assert page.get_by_role("link", name="grace@navy.example").count() == 0
    visit_check(page, "leads-search")

    page.get_by_role("link", name="ada@analytical.example").click()
    page.wait_for_url(re.compile(rf"/leads/{lead_id}$"))
    visit_check(page, "lead")

    page.get_by_label("New stage").select_option("customer")  # not allowed from inquiry
    page.get_by_label("Reason").fill("signed a contract")
    page.get_by_role("button", name="Set stage").click()
    assert "illegal stage change inquiry -> customer" in page.get_by_role("alert").inner_text()
    visit_check(page, "lead-illegal-stage")

    page.get_by_label("New stage").select_option("engaged")
    page.get_by_label("Reason").fill("asked for a demo at the fair")
    page.get_by_role("button", name="Set stage").click()
    page.wait_for_url(re.compile(rf"/leads/{lead_id}#history$"))
    assert "Moved from inquiry to engaged." in page.get_by_role("status").first.inner_text()
    row = page.locator("#history tbody tr").last
    assert "asked for a demo at the fair" in row.inner_text()
    assert "user:mia@example.com" in row.inner_text()
    visit_check(page, "lead-stage-set")

    page.set_viewport_size(PHONE)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the lead page scrolls sideways on a phone ({width}px)"
    visit_check(page, "lead-phone")
    page.goto(f"{server}/leads")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    visit_check(page, "leads-phone")


def test_a_sales_rep_accepts_an_mql_and_it_leaves_the_queue(server, page, db):
    add_user(db, "sam@example.com", "sales", name="Sam Sales")
    add_lead(db, "hot@globex.example", stage="mql", company="Globex")
    add_lead(db, "warm@initech.example", stage="mql", company="Initech")

    sign_in(page, server, "sam@example.com")
    page.get_by_role("link", name="Sales").click()
    page.wait_for_url(re.compile(r"/sales$"))
    assert "2 MQLs" in page.get_by_role("status").first.inner_text()
    visit_check(page, "sales")

    card = page.locator("article", has_text="hot@globex.example")
    card.get_by_role("button", name="Accept").click()
    page.wait_for_url(re.compile(r"/sales$"))
    assert "Accepted hot@globex.example" in page.locator(".notice").inner_text()
    assert page.locator("article", has_text="hot@globex.example").count() == 0
    assert page.locator("article", has_text="warm@initech.example").count() == 1
    visit_check(page, "sales-accepted")

    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    visit_check(page, "sales-phone")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/sign-in"))
    page.goto(f"{server}/sales")
    assert "/sign-in" in page.url


def test_a_reviewer_approves_a_proof_and_sees_it_in_the_history(server, page, db,
                                                                 loaded_program, tmp_path):
    from engine.sending.sink import Sink

    add_user(db, "rita@acme.example", "reviewer", name="Rita Reviewer")
    with Sink(tmp_path / "sink") as sink:
        send_proofs_to(db, sink, ["rita@acme.example"], program=loaded_program,
                       base_url=server, now=utcnow())

    sign_in(page, server, "rita@acme.example")
    page.get_by_role("link", name="Reviews").click()
    page.wait_for_url(re.compile(r"/reviews$"))
    assert "15 emails to review" in page.get_by_role("status").first.inner_text()
    visit_check(page, "reviews")

    page.get_by_role("link", name=re.compile(r"^welcome_it")).click()
    page.wait_for_url(re.compile(r"/reviews/\d+$"))
    frame = page.frame_locator("iframe[title='welcome_it for persona it_manager']")
    assert "sandbox project" in frame.locator("body").inner_text()  # the email is shown
    assert page.locator("iframe").first.get_attribute("sandbox") == ""
    visit_check(page, "review")

    page.get_by_role("button", name="Approve version 1").click()
    page.wait_for_url(re.compile(r"/reviews#history$"))
    assert "You approved welcome_it (version 1)." in page.locator(".notice").inner_text()
    assert "14 emails to review" in page.get_by_role("status").nth(1).inner_text()
    row = page.locator("#history tbody tr").first
    assert "rita@acme.example" in row.inner_text() and "approved" in row.inner_text()
    assert "welcome_it" in row.inner_text()
    visit_check(page, "reviews-approved")

    row.get_by_role("link", name="welcome_it").click()
    page.wait_for_url(re.compile(r"/reviews/\d+$"))
    assert "approved on" in page.locator(".fields").inner_text()
    # a full-page screenshot leaves the sandboxed frame (another process) blank: shoot it alone
    page.locator("iframe").first.screenshot(path=str(ARTIFACTS / "review-email.png"))

    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    visit_check(page, "reviews-phone")


def test_an_admin_reads_delivery_and_opens_a_message_of_the_local_inbox(server, page, db, env,
                                                                       loaded_program):
    from engine.sending.sink import Sink
    from engine.sending.suppression import suppress

    add_user(db, "ada@acme.example", "admin", name="Ada Admin")
    with db.session() as s:
        suppress(session=s, email="gone@globex.example", reason="unsubscribed",
                 source="<b>form</b>", now=utcnow())
    # proofs into the app's own sink directory (instance/sink), listed because it exists
    with Sink(Path(env["NURTURE_INSTANCE"]) / "sink") as sink:
        send_proofs_to(db, sink, ["rita@acme.example"], program=loaded_program,
                       base_url=server, now=utcnow())

    sign_in(page, server, "ada@acme.example")
    page.get_by_role("link", name="Delivery").click()
    page.wait_for_url(re.compile(r"/delivery$"))
    assert "No sends were due in the last 24 hours" in page.locator("main").inner_text()
    suppressions = page.get_by_role("region", name="Suppressed addresses")
    assert "gone@globex.example" in suppressions.inner_text()
    assert "<b>form</b>" in suppressions.inner_text()  # shown as text
    visit_check(page, "delivery")

    page.get_by_label("Email address contains").fill("nobody")
    page.get_by_label("Email address contains").press("Enter")
    page.wait_for_url(re.compile(r"/delivery\?q=nobody"))
    assert "No suppressed address contains" in page.locator("#suppressions").inner_text()

    page.goto(f"{server}/delivery")
    inbox = page.get_by_role("region", name="Messages received")
    assert inbox.locator("tbody tr").count() == 30  # 15 emails x 2 personas, newest first
    inbox.get_by_role("link").first.click()
    page.wait_for_url(re.compile(r"/delivery/inbox/30$"))
    frame = page.locator("iframe").first
    assert frame.get_attribute("sandbox") == ""
    assert "PROOF FOR REVIEW" in page.frame_locator("iframe").locator("body").inner_text()
    visit_check(page, "delivery-message")
    # a full-page screenshot leaves the sandboxed frame blank: shoot it alone
    frame.screenshot(path=str(ARTIFACTS / "delivery-email.png"))

    page.set_viewport_size(PHONE)
    page.goto(f"{server}/delivery")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    visit_check(page, "delivery-phone")


def test_a_read_only_user_runs_the_funnel_for_a_program_and_sees_its_chart(server, page, db):
    write_history(db)
    add_user(db, "rob@acme.example", "read_only", name="Rob Reader")
    refused = []  # the chart's <style> is allowed by its hash: nothing should be refused
    page.on("console", lambda message: refused.append(message.text)
            if "Content Security Policy" in message.text else None)
    sign_in(page, server, "rob@acme.example")
    page.get_by_role("link", name="Reports").click()
    page.wait_for_url(re.compile(r"/reports$"))
    visit_check(page, "reports")

    page.get_by_label("Report", exact=True).select_option("funnel")
    page.get_by_label("Program", exact=True).select_option("p")
    page.get_by_label("From", exact=True).fill("2026-01-01")
    page.get_by_label("To", exact=True).fill("2026-03-31")
    page.get_by_label("By", exact=True).select_option("month")
    page.get_by_role("button", name="Show report").click()
    page.wait_for_url(re.compile(r"/reports/funnel\?"))
    chart = page.locator("figure.chart svg").first
    assert chart.is_visible() and chart.bounding_box()["width"] > 300
    assert "2026-01-01 to 2026-03-31" in page.locator("main").inner_text()
    assert page.locator("table").count() >= 1
    assert not refused, refused
    visit_check(page, "report-funnel")

    page.get_by_label("From", exact=True).fill("2026-04-01")
    page.get_by_role("button", name="Show funnel").click()
    assert "must be before to" in page.get_by_role("alert").inner_text()
    visit_check(page, "report-invalid")
