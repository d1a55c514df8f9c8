"""The console's Reviews page: a reviewer's queue of proofs (sent for real to the local sink),
a proof's page with its email framed and sandboxed, approve or reject with a comment through
the public review link's service, roles, CSRF, hostile comments and hostile email HTML."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from console_helpers import START, Browser, Clock, add_user
from sqlalchemy import select
from test_review_pages import BASE
from test_review_pages import send as send_to_reviewers

from engine.assets.service import current_version, upload
from engine.launch.approvals import approval_status
from engine.launch.models import Approval, Proof
from engine.launch.service import record_launch
from engine.programs.models import ProgramRecord
from engine.sending.sink import Sink
from engine.web.app import create_app

REVIEWER = "rita@acme.example"
SCRIPT = "<script>alert(1)</script>"
EMAILS = 15  # the sample program's emails, each proofed for 2 personas


@pytest.fixture
def sink(tmp_path):
    with Sink(tmp_path / "sink") as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(env, clock, monkeypatch):
    monkeypatch.setenv("NURTURE_BASE_URL", BASE)
    app = create_app(clock=clock)
    yield app
    app.extensions["nurture.db"].dispose()


@pytest.fixture
def as_role(app, db):
    """as_role("reviewer") -> a Browser signed in as a user of that role (the reviewer is
    REVIEWER, the address the proofs go to)."""

    def sign_in(role: str, email: str | None = None) -> Browser:
        email = email or (REVIEWER if role == "reviewer" else f"{role.replace('_', '-')}@x.example")
        add_user(db, email, role)
        browser = Browser(app.test_client())
        assert browser.sign_in(email).status_code == 303
        return browser

    return sign_in


def send(db, sink, reviewers=(REVIEWER,), now=START) -> list[int]:
    return send_to_reviewers(db, sink, reviewers=reviewers, now=now)


def proof_of(db, email_key: str, reviewer: str = REVIEWER) -> int:
    with db.session() as s:
        return s.scalar(select(Proof.id).where(Proof.email_key == email_key,
                                               Proof.reviewer == reviewer)
                        .order_by(Proof.id.desc()).limit(1))


def approvals(db) -> list[tuple]:
    with db.session() as s:
        return [(a.reviewer, a.decision, a.comment, a.proof_id)
                for a in s.scalars(select(Approval).order_by(Approval.id))]


def state(db, email_key: str) -> tuple[str, int | None]:
    with db.session() as s:
        item = next(i for i in approval_status(session=s, program_name="acme-nurture")
                    if i.email_key == email_key)
    return item.state, item.version


def decide(browser: Browser, proof_id: int, **form):
    return browser.post(f"/reviews/{proof_id}/decision", form, page=f"/reviews/{proof_id}")


def test_the_queue_lists_each_email_version_sent_to_the_reviewer_once(db, loaded_program, sink,
                                                                       as_role):
    send(db, sink, reviewers=(REVIEWER, "other@acme.example"))
    browser = as_role("reviewer")
    page = browser.get("/reviews")
    assert page.status_code == 200
    assert f"{EMAILS} emails to review, sent to {REVIEWER}" in page.text
    assert page.text.count('<article class="card"') == EMAILS  # one per email, not per persona
    assert "for 2 personas" in page.text and "welcome_it" in page.text
    assert '<a href="/reviews"' in page.text and 'aria-current="page">Reviews' in page.text

    proof = browser.get(f"/reviews/{proof_of(db, 'welcome_it')}")
    assert proof.status_code == 200
    for fact in ("emails/welcome_it.mjml", "Acme Cloud perpetual nurture", "Approve version 1",
                 "Reject version 1", "Persona it_manager", "Persona finance"):
        assert fact in proof.text, fact
    assert "frame-src 'self'" in proof.headers["Content-Security-Policy"]

    # a proof sent to someone else can be read, not decided from here
    other = browser.get(f"/reviews/{proof_of(db, 'welcome_it', 'other@acme.example')}")
    assert "only they can decide" in other.text and 'name="decision"' not in other.text
    assert browser.get("/reviews/999999").status_code == 404


def test_a_reviewer_approves_and_the_decision_is_recorded_and_listed(db, loaded_program, sink,
                                                                      as_role, clock):
    send(db, sink)
    browser = as_role("reviewer")
    proof_id = proof_of(db, "welcome_it")
    clock.advance(minutes=10)

    done = decide(browser, proof_id, decision="approve")
    assert done.status_code == 303 and done.headers["Location"].endswith("/reviews#history")
    assert approvals(db) == [(REVIEWER, "approved", None, proof_id)]
    assert state(db, "welcome_it") == ("approved", 1)  # the launch gate sees it

    page = browser.get("/reviews")
    assert "You approved welcome_it (version 1)." in page.text
    assert f"{EMAILS - 1} emails to review" in page.text
    history = page.text.split('id="history"')[1]
    assert "2026-12-07 09:10" in history and REVIEWER in history and "approved" in history


def test_reject_needs_a_comment_and_stores_it(db, loaded_program, sink, as_role):
    send(db, sink)
    browser = as_role("reviewer")
    proof_id = proof_of(db, "guide_it")
    for comment in ("", "   \n  "):
        refused = decide(browser, proof_id, decision="reject", comment=comment)
        assert refused.status_code == 422
        assert "a comment is required to reject" in refused.text and 'role="alert"' in refused.text
    assert decide(browser, proof_id, decision="maybe").status_code == 422
    too_long = decide(browser, proof_id, decision="reject", comment="x" * 2001)
    assert too_long.status_code == 422
    assert approvals(db) == []

    done = decide(browser, proof_id, decision="reject", comment="The CTA names the wrong guide")
    assert done.status_code == 303
    assert approvals(db) == [(REVIEWER, "rejected", "The CTA names the wrong guide", proof_id)]
    assert state(db, "guide_it") == ("rejected", 1)
    assert "The CTA names the wrong guide" in browser.get("/reviews").text


def test_roles_that_may_not_decide_are_refused(db, loaded_program, sink, as_role):
    send(db, sink, reviewers=(REVIEWER, "mia@x.example"))
    proof_id = proof_of(db, "welcome_it")

    sales = as_role("sales")
    assert sales.get("/reviews").status_code == 403
    assert sales.get(f"/reviews/{proof_id}").status_code == 403
    assert sales.get(f"/reviews/{proof_id}/email").status_code == 403
    assert ">Reviews<" not in sales.get("/sales").text  # not in its navigation
    assert decide(sales, proof_id, decision="approve").status_code == 403  # (token from /sales)

    # a marketer sees the page and the history but decides nothing, even on its own proof
    marketer = as_role("marketer", "mia@x.example")
    assert marketer.get("/reviews").status_code == 200
    mine = proof_of(db, "welcome_it", "mia@x.example")
    assert 'name="decision"' not in marketer.get(f"/reviews/{mine}").text
    refused = marketer.post(f"/reviews/{mine}/decision", {"decision": "approve"}, page="/reviews")
    assert refused.status_code == 403 and "Marketer" in refused.text

    # a reviewer or an admin decides only on proofs sent to them: the decision is theirs
    admin = as_role("admin")
    refused = admin.post(f"/reviews/{proof_id}/decision", {"decision": "approve"},
                         page="/reviews")
    assert refused.status_code == 403 and REVIEWER in refused.text
    assert approvals(db) == []


def test_a_decision_without_a_valid_csrf_token_stores_nothing(db, loaded_program, sink, app,
                                                               as_role):
    send(db, sink)
    browser = as_role("reviewer")
    proof_id = proof_of(db, "welcome_it")
    foreign = Browser(app.test_client()).token("/sign-in")  # signed for another browser
    for form in ({"decision": "approve"},
                 {"decision": "approve", "csrf_token": "abc.def.ghi"},
                 {"decision": "approve", "csrf_token": foreign}):
        response = browser.client.post(f"/reviews/{proof_id}/decision", data=form)
        assert response.status_code == 400, form
        assert "Traceback" not in response.text
    assert approvals(db) == []


def test_a_hostile_comment_is_shown_back_escaped(db, loaded_program, sink, as_role):
    send(db, sink)
    browser = as_role("reviewer")
    proof_id = proof_of(db, "welcome_it")
    hostile = f'{SCRIPT}"><img src=x onerror=alert(2)>'
    assert decide(browser, proof_id, decision="reject", comment=hostile).status_code == 303
    for path in ("/reviews", f"/reviews/{proof_id}"):
        page = browser.get(path).text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, path
        assert SCRIPT not in page and "<img src=x" not in page, path

    # refused (too long) with a hostile comment: the form shows it back escaped
    refused = decide(browser, proof_id, decision="reject", comment=SCRIPT + "x" * 2000)
    assert refused.status_code == 422 and SCRIPT not in refused.text


def test_hostile_email_html_never_runs_in_the_console(db, loaded_program, sample_program, sink,
                                                      as_role):
    source = (sample_program / "emails" / "welcome_it.mjml").read_text()
    hostile = source.replace("Spin up a sandbox project.",
                             "Spin up<script>alert('proof')</script>"
                             "<img src=\"x\" onerror=\"alert('img')\"> a sandbox project.")
    with db.session() as s:
        upload(session=s, program="acme-nurture", filename="welcome_it.mjml",
               data=hostile.encode(), now=START)
    send(db, sink)
    browser = as_role("reviewer")
    proof_id = proof_of(db, "welcome_it")

    page = browser.get(f"/reviews/{proof_id}")
    assert page.status_code == 200
    assert "alert(" not in page.text and "<script" not in page.text  # the HTML is not inline
    frames = re.findall(r"<iframe[^>]*>", page.text)
    assert len(frames) == 2 and all('sandbox=""' in f and "srcdoc" not in f for f in frames)
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "unsafe" not in csp

    email = browser.get(f"/reviews/{proof_id}/email")
    assert email.status_code == 200 and "a sandbox project" in email.text
    csp = email.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert re.search(r"(^|; )sandbox(;|$)", csp) and "form-action 'none'" in csp
    assert email.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert "frame-ancestors 'self'" in csp


def test_a_superseded_proof_cannot_be_decided(db, loaded_program, sample_program, sink, as_role):
    send(db, sink)
    browser = as_role("reviewer")
    proof_id = proof_of(db, "welcome_it")
    token_page = f"/reviews/{proof_id}"
    token = browser.token(token_page)
    source = (sample_program / "emails" / "welcome_it.mjml").read_text()
    with db.session() as s:
        upload(session=s, program="acme-nurture", filename="welcome_it.mjml",
               data=source.replace("Spin up", "Start").encode(), now=START + timedelta(hours=1))
    page = browser.get(token_page)
    assert "a decision on it would not count" in page.text and 'name="decision"' not in page.text
    assert f"{EMAILS - 1} emails to review" in browser.get("/reviews").text
    refused = browser.client.post(f"/reviews/{proof_id}/decision",
                                  data={"csrf_token": token, "decision": "approve"})
    assert refused.status_code == 409 and "newer version" in refused.text
    assert approvals(db) == []


def test_a_proof_shows_the_findings_of_its_last_refused_launch(db, loaded_program, sink,
                                                               as_role):
    send(db, sink)
    with db.session() as s:
        record = s.scalar(select(ProgramRecord).where(ProgramRecord.name == "acme-nurture"))
        checked = current_version(session=s, program_id=record.id, path="emails/welcome_it.mjml")
        record_launch(session=s, record=record, version=record.current_version, by="test",
                      now=START, launched=False, assets={"emails/welcome_it.mjml": checked},
                      summary="format.alt-text emails/welcome_it.mjml line 12: an image has "
                              "no alt text\napproval.missing emails/welcome_it.mjml : not "
                              "approved\nlinks.broken emails/guide_it.mjml line 3: 404")
    browser = as_role("reviewer")
    page = browser.get(f"/reviews/{proof_of(db, 'welcome_it')}").text
    assert "format.alt-text line 12: an image has no alt text" in page
    assert "approval.missing" not in page and "links.broken" not in page
    assert "No launch attempt has named a finding" in browser.get(
        f"/reviews/{proof_of(db, 'guide_it')}").text
