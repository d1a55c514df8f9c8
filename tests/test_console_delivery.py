"""The console's Delivery page: send runs, forecast and suppressions from real sends into the
local sink, the search by address, the sink's inbox with each message framed and sandboxed,
roles, and hostile text shown back escaped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from console_helpers import Browser, Clock, add_user
from launching import launch_all
from smtp_sink import REPLIES

from engine.flows.leads import upsert_lead
from engine.programs.service import load_program
from engine.sending.delivery import deliver_due
from engine.sending.reports import forecast
from engine.sending.sink import Sink
from engine.sending.suppression import suppress
from engine.web.app import create_app

MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # 09:00 in Paris, inside the send window
SCRIPT = "<script>alert(1)</script>"


@pytest.fixture
def sink(tmp_path):
    with Sink(tmp_path / "sink", replies=REPLIES) as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock(MONDAY + timedelta(seconds=5))


@pytest.fixture
def app(env, clock, sink, monkeypatch):
    monkeypatch.setenv("NURTURE_SINK_DIR", str(sink.directory))
    app = create_app(clock=clock)
    yield app
    app.extensions["nurture.db"].dispose()


@pytest.fixture
def as_role(app, db):
    def sign_in(role: str) -> Browser:
        email = f"{role.replace('_', '-')}@x.example"
        add_user(db, email, role)
        browser = Browser(app.test_client())
        assert browser.sign_in(email).status_code == 303
        return browser

    return sign_in


@pytest.fixture
def program(db, sample_program):
    with db.session() as s:
        load_program(session=s, directory=sample_program, now=MONDAY)
        launch_all(s)


def add(db, email, first_name="Ada"):
    with db.session() as s:
        upsert_lead(session=s, fields={"email": email, "first_name": first_name, "title": "CIO",
                                       "timezone": "Europe/Paris"},
                    now=MONDAY, actor="test", program="acme-nurture")


@pytest.fixture
def delivered(db, program, sink, clock):
    """Two sends that arrive, a hard bounce (suppressed) and a temporary failure (due again)."""
    for email, name in (("ada@globex.example", "Ada"), ("bo@initech.example", "Bo"),
                        ("bounce@globex.example", "Bounce"), ("later@globex.example", "Later")):
        add(db, email, name)
    transport = sink.transport()
    try:
        report = deliver_due(db=db, transport=transport, worker="w1", clock=clock)
    finally:
        transport.close()
    assert report.counts == {"sent": 2, "failed_perm": 1, "failed_temp": 1}
    clock.advance(minutes=30)


def rows_of(page: str, caption: str) -> str:
    """The HTML of the table whose caption starts with `caption`."""
    start = page.index(f"<caption>{caption}")
    return page[start:page.index("</table>", start)]


def test_the_page_shows_the_runs_the_forecast_and_the_suppressions_of_real_sends(
        db, delivered, as_role, clock):
    page = as_role("marketer").get("/delivery")
    assert page.status_code == 200
    assert 'aria-current="page">Delivery' in page.text
    runs = rows_of(page.text, "Sends by the hour")
    # hour, due, sent, held, failed, skipped, pending
    assert ("<td>2026-11-02 08:00</td><td class=\"num\">4</td><td class=\"num\">2</td>"
            "<td class=\"num\">0</td><td class=\"num\">2</td>") in runs
    assert "failed: 550 5.1.1 No such user" in page.text

    with db.session() as s:
        expected = forecast(session=s, now=clock.now, hours=24)
    assert expected  # the temporary failure is due again
    table = rows_of(page.text, "Queued sends")
    for line in expected:
        assert f"<td>{line.hour:%Y-%m-%d %H:00}</td><td>{line.email}</td>" in table
    assert "email would go out" in page.text or "emails would go out" in page.text

    suppressions = rows_of(page.text, "The newest 100 suppressions")
    assert "<td>bounce@globex.example</td><td>bounced</td>" in suppressions
    assert "ada@globex.example" not in suppressions


def test_suppressions_are_searched_by_address_and_wildcards_are_plain_text(db, as_role):
    with db.session() as s:
        for email in ("gone@initech.example", "left@globex.example", "a_b@globex.example"):
            suppress(session=s, email=email, reason="manual", source="test", now=MONDAY)
    browser = as_role("read_only")
    found = browser.get("/delivery?q=INITECH").text
    assert "gone@initech.example" in found and "left@globex.example" not in found
    assert "whose address contains “INITECH”" in found
    underscore = browser.get("/delivery?q=a_b").text
    assert "a_b@globex.example" in underscore and "left@globex.example" not in underscore
    assert "No suppressed address contains “%”" in browser.get("/delivery?q=%25").text


def test_a_hostile_suppression_source_and_search_are_shown_escaped(db, as_role):
    with db.session() as s:
        suppress(session=s, email="x@globex.example", reason="manual", source=SCRIPT, now=MONDAY)
    page = as_role("reviewer").get(f"/delivery?q=x@globex.example{SCRIPT}")
    assert page.status_code == 200 and SCRIPT not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    page = as_role("admin").get("/delivery")
    assert SCRIPT not in page.text and "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in page.text


def test_sales_may_not_open_delivery_and_is_not_shown_it(as_role):
    browser = as_role("sales")
    assert browser.get("/delivery").status_code == 403
    assert browser.get("/delivery/inbox/1").status_code == 403
    assert "/delivery" not in browser.get("/leads").text


def test_the_local_inbox_lists_messages_and_frames_each_sandboxed(db, delivered, as_role):
    browser = as_role("marketer")
    page = browser.get("/delivery").text
    inbox = rows_of(page, "The newest 100 messages")
    assert "Welcome, Ada" in inbox and "Welcome, Bo" in inbox
    link = inbox.index('href="/delivery/inbox/')
    seq = int(inbox[link:].split("/")[3].split('"')[0])
    message = browser.get(f"/delivery/inbox/{seq}")
    assert message.status_code == 200
    assert 'sandbox="" src="/delivery/inbox/' in message.text
    assert "frame-src 'self'" in message.headers["Content-Security-Policy"]
    assert "List-Unsubscribe" in message.text
    email = browser.get(f"/delivery/inbox/{seq}/email")
    assert email.status_code == 200 and "<html" in email.text.lower()
    policy = email.headers["Content-Security-Policy"]
    assert "sandbox" in policy and "script-src" not in policy
    assert email.headers["X-Frame-Options"] == "SAMEORIGIN"


def test_an_unknown_inbox_message_is_not_found(delivered, as_role):
    browser = as_role("admin")
    assert browser.get("/delivery/inbox/999").status_code == 404
    assert browser.get("/delivery/inbox/999/email").status_code == 404


def test_without_a_sink_directory_there_is_no_inbox(env, db, clock, monkeypatch, tmp_path):
    monkeypatch.setenv("NURTURE_SINK_DIR", str(tmp_path / "no-sink"))
    app = create_app(clock=clock)
    try:
        add_user(db, "ro@x.example", "read_only")
        browser = Browser(app.test_client())
        browser.sign_in("ro@x.example")
        page = browser.get("/delivery")
        assert page.status_code == 200 and "Local inbox" not in page.text
        assert "No sends were due" in page.text and "Nothing is due" in page.text
        assert "No address is suppressed." in page.text
        assert browser.get("/delivery/inbox/1").status_code == 404
    finally:
        app.extensions["nurture.db"].dispose()
