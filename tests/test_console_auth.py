"""Signing in to the console: sessions and their cookie, wrong passwords, disabled users,
throttling on a clock of the test's, sessions ended by a new password, CSRF, and roles."""

from __future__ import annotations

import pytest
from console_helpers import PASSWORD, Browser, Clock, add_lead, add_user
from sqlalchemy import func, select

from engine.auth.models import SignInAttempt
from engine.auth.users import MAX_FAILURES_PER_EMAIL, MAX_FAILURES_PER_IP
from engine.leads.models import Lead, StageChange
from engine.web.app import create_app


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(env, clock):
    app = create_app(clock=clock)
    yield app
    app.extensions["nurture.db"].dispose()


@pytest.fixture
def browser(app) -> Browser:
    return Browser(app.test_client())


def session_cookie(response) -> str:
    return next(h for h in response.headers.getlist("Set-Cookie")
                if h.startswith("nurture_session="))


def test_signed_out_visitors_are_sent_to_sign_in_which_says_how_to_create_a_first_user(browser):
    assert browser.get("/").headers["Location"] == "/sign-in"
    leads = browser.get("/leads?q=x")
    assert leads.status_code == 303 and leads.headers["Location"].startswith("/sign-in?next=")
    page = browser.get("/sign-in").get_data(as_text=True)
    assert "nurture user create you@example.com --role admin" in page


def test_a_user_signs_in_sees_name_and_role_and_signs_out(browser, db):
    add_user(db, "ada@example.com", "marketer", name="Ada Lovelace")
    page = browser.get("/sign-in").get_data(as_text=True)
    assert "No users yet" not in page
    response = browser.sign_in("ADA@example.com ")
    assert response.status_code == 303 and response.headers["Location"] == "/leads"
    cookie = session_cookie(response)
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    leads = browser.get("/leads").get_data(as_text=True)
    assert "Ada Lovelace" in leads and "Marketer" in leads and "Sign out" in leads
    assert browser.sign_out().status_code == 303
    assert browser.get("/leads").status_code == 303


def test_the_session_cookie_is_secure_over_https(browser, db):
    add_user(db, "ada@example.com", "admin")
    token = browser.token("/sign-in")
    response = browser.client.post("/sign-in", base_url="https://localhost", data={
        "csrf_token": token, "email": "ada@example.com", "password": PASSWORD})
    assert response.status_code == 303
    assert "Secure" in session_cookie(response)


@pytest.mark.parametrize("target", ["//evil.example/x", "/\t/evil.example", "/\\evil.example",
                                    "https://evil.example/", "/\n/evil.example", "leads"])
def test_sign_in_goes_back_to_the_page_asked_for_but_never_off_site(browser, db, target):
    add_user(db, "ada@example.com", "admin")
    token = browser.token("/sign-in")
    off = browser.client.post("/sign-in", data={"csrf_token": token, "email": "ada@example.com",
                                                "password": PASSWORD, "next": target})
    assert off.headers["Location"] == "/leads"
    browser.sign_out()
    back = browser.client.post("/sign-in", data={"csrf_token": browser.token("/sign-in"),
                                                 "email": "ada@example.com",
                                                 "password": PASSWORD, "next": "/sales"})
    assert back.headers["Location"] == "/sales"


@pytest.mark.parametrize("email, password", [
    ("ada@example.com", "not the password at all"),
    ("nobody@example.com", PASSWORD),
    ("", ""),
])
def test_a_wrong_email_or_password_reads_the_same_and_signs_nobody_in(browser, db, email,
                                                                      password):
    add_user(db, "ada@example.com", "admin")
    response = browser.post("/sign-in", {"email": email, "password": password}, page="/sign-in")
    assert response.status_code == 422
    assert "Wrong email or password." in response.get_data(as_text=True)
    assert "nurture_session=" not in "".join(response.headers.getlist("Set-Cookie"))
    assert browser.get("/leads").status_code == 303


def test_a_disabled_user_cannot_sign_in_and_their_open_session_ends(browser, db, cli):
    add_user(db, "ada@example.com", "admin")
    browser.sign_in("ada@example.com")
    assert browser.get("/leads").status_code == 200
    assert cli("user", "disable", "ada@example.com").exit_code == 0
    assert browser.get("/leads").status_code == 303
    assert browser.sign_in("ada@example.com").status_code == 422


def test_a_new_password_ends_sessions_signed_in_with_the_old_one(browser, db, cli):
    add_user(db, "ada@example.com", "admin")
    other = Browser(browser.client.application.test_client())
    browser.sign_in("ada@example.com")
    other.sign_in("ada@example.com")
    result = cli("user", "passwd", "ada@example.com", "--password-stdin",
                 input="another long passphrase\n")
    assert result.exit_code == 0, result.output
    assert browser.get("/leads").status_code == 303
    assert other.get("/leads").status_code == 303
    assert browser.sign_in("ada@example.com").status_code == 422
    assert browser.sign_in("ada@example.com", "another long passphrase").status_code == 303
    assert browser.get("/leads").status_code == 200


def test_a_session_lasts_twelve_hours_from_sign_in(browser, db, clock):
    add_user(db, "ada@example.com", "admin")
    browser.sign_in("ada@example.com")
    clock.advance(hours=11, minutes=59)
    assert browser.get("/leads").status_code == 200
    clock.advance(minutes=2)
    assert browser.get("/leads").status_code == 303


def test_five_failures_for_an_email_throttle_it_until_the_window_has_passed(browser, db, clock):
    add_user(db, "ada@example.com", "admin")
    for _ in range(MAX_FAILURES_PER_EMAIL):
        assert browser.sign_in("ada@example.com", "wrong password!!").status_code == 422
        clock.advance(minutes=1)
    refused = browser.sign_in("ada@example.com")  # even the right password
    assert refused.status_code == 429
    assert "Try again after 09:15 UTC" in refused.get_data(as_text=True)
    assert 0 < int(refused.headers["Retry-After"]) <= 15 * 60
    assert browser.get("/leads").status_code == 303
    clock.advance(minutes=10)  # 09:15: the first failure has left the window
    assert browser.sign_in("ada@example.com").status_code == 303


def test_twenty_failures_from_one_address_throttle_every_email_from_it(browser, db):
    add_user(db, "ada@example.com", "admin")
    for n in range(MAX_FAILURES_PER_IP):
        browser.sign_in(f"guess{n}@example.com", "wrong password!!")
    assert browser.sign_in("ada@example.com").status_code == 429
    elsewhere = Browser(browser.client.application.test_client())
    response = elsewhere.client.post(
        "/sign-in", environ_base={"REMOTE_ADDR": "198.51.100.9"},
        data={"csrf_token": elsewhere.token("/sign-in"), "email": "ada@example.com",
              "password": PASSWORD})
    assert response.status_code == 303
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(SignInAttempt)) == MAX_FAILURES_PER_IP


@pytest.mark.parametrize("token", [None, "", "forged", "foreign"])
def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(browser, db, app, token):
    add_user(db, "ada@example.com", "admin")
    lead_id = add_lead(db, "lead@example.com")
    browser.sign_in("ada@example.com")
    with db.session() as s:
        changes = s.scalar(select(func.count()).select_from(StageChange))
    if token == "foreign":  # a token signed for the reviewer pages' forms
        from engine.web.review import CSRF as REVIEW_CSRF

        with app.test_request_context():
            token = REVIEW_CSRF.token(browser.client.get_cookie("nurture_console_csrf").value)
    data = {"stage": "engaged", "reason": "called"}
    if token is not None:
        data["csrf_token"] = token
    response = browser.client.post(f"/leads/{lead_id}/stage", data=data)
    assert response.status_code == 400
    with db.session() as s:
        assert s.get(Lead, lead_id).stage == "inquiry"
        assert s.scalar(select(func.count()).select_from(StageChange)) == changes
    signed_out = browser.client.post("/sign-out", data={})
    assert signed_out.status_code == 400
    assert browser.get("/leads").status_code == 200  # still signed in


def test_sign_in_itself_needs_the_csrf_token(browser, db):
    add_user(db, "ada@example.com", "admin")
    response = browser.client.post("/sign-in", data={"email": "ada@example.com",
                                                     "password": PASSWORD})
    assert response.status_code == 400
    assert browser.get("/leads").status_code == 303


def test_oversized_sign_in_fields_are_refused(browser, db):
    add_user(db, "ada@example.com", "admin")
    response = browser.post("/sign-in", {"email": "ada@example.com", "password": "x" * 5000},
                            page="/sign-in")
    assert response.status_code == 422
    assert "password is longer than 1024" in response.get_data(as_text=True)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(SignInAttempt)) == 0


def test_console_pages_send_a_strict_content_security_policy(browser):
    response = browser.get("/sign-in")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_an_unknown_or_disabled_email_still_costs_a_password_verification(db, monkeypatch):
    from engine.auth import users as service
    from engine.db import utcnow

    add_user(db, "ada@example.com", "admin")
    calls = []
    real = service._verify
    monkeypatch.setattr(service, "_verify",
                        lambda stored, password: calls.append(stored) or real(stored, password))
    with db.session() as s:
        for email in ("nobody@example.com", "ada@example.com"):
            assert service.sign_in(session=s, email=email, password="wrong password!",
                                   ip="192.0.2.1", now=utcnow()) is None
        service.disable_user(session=s, email="ada@example.com", now=utcnow())
        assert service.sign_in(session=s, email="ada@example.com", password=PASSWORD,
                               ip="192.0.2.1", now=utcnow()) is None
    assert len(calls) == 3 and calls[0] == service._DUMMY_HASH
    assert calls[1] != service._DUMMY_HASH


def test_the_session_cookie_is_secure_when_the_base_url_is_https(env, db, monkeypatch):
    monkeypatch.setenv("NURTURE_BASE_URL", "https://nurture.example")
    app = create_app(clock=Clock())
    try:
        add_user(db, "ada@example.com", "admin")
        response = Browser(app.test_client()).sign_in("ada@example.com")  # over plain http
        assert response.status_code == 303
        assert "; Secure" in session_cookie(response)
    finally:
        app.extensions["nurture.db"].dispose()
