"""Public landing pages under /p/<program>/<slug> as a visitor (and an attacker) sees them."""

from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import func, select

from engine.db import utcnow
from engine.flows.leads import upsert_lead
from engine.leads.models import Lead, LeadEvent
from engine.pages import service as pages_service
from engine.pages.models import FormSubmission
from engine.pages.service import page_token
from engine.web.app import create_app
from engine.web.pages import CSP, CSRF

DEMO = "/p/acme-nurture/demo"
PRICING = "/p/acme-nurture/pricing"


@pytest.fixture
def app(env, loaded_program):
    app = create_app()
    yield app
    app.extensions["nurture.db"].dispose()


def make_lead(db, **fields) -> int:
    with db.session() as s:
        lead, _ = upsert_lead(session=s, fields={"email": "ada@example.com", **fields},
                              now=utcnow(), actor="test", program="acme-nurture")
        return lead.id


def token_for(lead_id: int) -> str:
    return page_token(secret_key="test-secret", lead_id=lead_id)


def csrf(client, url: str = DEMO) -> str:
    """GET the page (which sets the cookie) and read the form's token."""
    response = client.get(url)
    assert response.status_code == 200
    return re.search(r'name="csrf_token" value="([^"]+)"', response.text).group(1)


def count(db, model) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def form_events(db, lead_id: int) -> list[LeadEvent]:
    with db.session() as s:
        return list(s.scalars(select(LeadEvent).where(LeadEvent.lead_id == lead_id,
                                                      LeadEvent.kind == "form_submitted")))


# -- GET --------------------------------------------------------------------------------------

def test_anonymous_page_renders_with_strict_headers(client):
    response = client.get(DEMO)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "Hi there," in response.text
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    cookie = response.headers["Set-Cookie"]
    assert CSRF.cookie in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_page_personalised_with_a_valid_token(client, db):
    lead_id = make_lead(db, first_name="Ada")
    response = client.get(f"{DEMO}?t={token_for(lead_id)}")
    assert response.status_code == 200
    assert "Hi Ada," in response.text


@pytest.mark.parametrize("token", ["forged", "", "x" * 5000, "MQ.forgedsig"])
def test_bad_token_renders_anonymously(client, db, token):
    make_lead(db, first_name="Ada")
    response = client.get(f"{DEMO}?t={token}")
    assert response.status_code == 200
    assert "Hi there," in response.text


def test_token_for_a_deleted_lead_renders_anonymously(client):
    response = client.get(f"{DEMO}?t={token_for(999_999)}")
    assert response.status_code == 200
    assert "Hi there," in response.text


def test_lead_fields_are_escaped(client, db):
    lead_id = make_lead(db, first_name="<script>alert(1)</script>")
    response = client.get(f"{DEMO}?t={token_for(lead_id)}")
    assert "<script>alert(1)" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text


@pytest.mark.parametrize("path", ["/p/acme-nurture/nope", "/p/no-such-program/demo",
                                  "/p/acme-nurture/" + "x" * 300, "/p/acme%00/demo"])
def test_unknown_page_is_a_plain_404(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "Page not found" in response.text
    assert "acme" not in response.text.lower()  # nothing internal named


def test_api_errors_stay_json(client):
    response = client.get("/api/v1/nothing-here")
    assert response.status_code in (401, 404)
    assert response.mimetype == "application/problem+json"


# -- marketer code runs once for anonymous visitors -------------------------------------------

@pytest.fixture
def renders(monkeypatch) -> list[str]:
    """The page file of every render of a page template (with an empty page cache)."""
    monkeypatch.setattr(pages_service, "_anonymous_pages", {})
    seen: list[str] = []
    real = pages_service.render_template

    def counting(tmpl, variables, *, where):
        seen.append(where)
        return real(tmpl, variables, where=where)

    monkeypatch.setattr(pages_service, "render_template", counting)
    return seen


@pytest.fixture
def hostile_pricing(sample_program):
    """The pricing page with an operation that once allocated about 1 GB per visit."""
    page = sample_program / "pages" / "pricing.html"
    page.write_text(page.read_text().replace("</body>", "{{ '%999999999s' % 'a' }}</body>"))


def test_anonymous_visits_render_the_page_once(client, app, db, renders):
    first, other = csrf(client), app.test_client()
    second = csrf(other)
    assert first != second  # each visitor gets a CSRF token of their own...
    assert renders == ["pages/demo-request.html"]  # ...in a page rendered once
    assert other.post(DEMO, data={"csrf_token": second, "email": "a@example.com"}).status_code \
        == 303
    assert client.get(PRICING).status_code == 200
    assert renders == ["pages/demo-request.html", "pages/pricing.html"]
    lead_id = make_lead(db, first_name="Ada")
    for _ in range(2):
        assert "Hi Ada," in client.get(f"{DEMO}?t={token_for(lead_id)}").text
    assert len(renders) == 4  # a lead's page is rendered for the lead at each visit


def test_a_page_over_a_limit_fails_quickly_and_once(hostile_pricing, client, db, renders):
    for _ in range(3):
        started = time.thread_time()
        response = client.get(PRICING)
        assert response.status_code == 500
        assert "%999999999s" not in response.text
        assert time.thread_time() - started < 0.5
    assert renders == ["pages/pricing.html"]
    lead_id = make_lead(db)
    # a lead's render is bounded the same way, then falls back to the (failed) anonymous page
    assert client.get(f"{PRICING}?t={token_for(lead_id)}").status_code == 500
    assert len(renders) == 2


def test_a_page_that_ran_out_of_time_is_tried_again_at_the_next_visit(client, renders,
                                                                       monkeypatch):
    from engine.render import personalise

    monkeypatch.setattr(personalise, "MAX_RENDER_SECONDS", 0.0)  # a very busy moment
    assert client.get(PRICING).status_code == 500
    monkeypatch.setattr(personalise, "MAX_RENDER_SECONDS", 1.0)
    assert client.get(PRICING).status_code == 200  # not remembered as failed
    assert renders == ["pages/pricing.html", "pages/pricing.html"]


# -- POST -------------------------------------------------------------------------------------

def test_post_stores_submission_and_feeds_known_lead(client, db):
    lead_id = make_lead(db, first_name="Ada")
    token = csrf(client)
    response = client.post(DEMO, data={"csrf_token": token, "email": "ADA@example.com",
                                       "name": "Ada", "message": "<b>hi</b>"})
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/p/acme-nurture/demo?submitted=1")
    with db.session() as s:
        (sub,) = s.scalars(select(FormSubmission)).all()
        assert (sub.lead_id, sub.email, sub.page) == (lead_id, "ada@example.com", "demo")
        assert sub.fields == {"name": "Ada", "message": "<b>hi</b>"}
        assert sub.remote_addr == "127.0.0.1"
    assert len(form_events(db, lead_id)) == 1
    thanks = client.get(response.headers["Location"])
    assert thanks.status_code == 200 and "Thank you" in thanks.text
    assert thanks.headers["Content-Security-Policy"] == CSP


def test_post_from_unknown_email_creates_the_lead(client, db):
    token = csrf(client)
    response = client.post(DEMO, data={"csrf_token": token, "email": "new@example.com"})
    assert response.status_code == 303
    with db.session() as s:
        (sub,) = s.scalars(select(FormSubmission)).all()
        assert sub.lead_id is not None and sub.email == "new@example.com"
    assert len(form_events(db, sub.lead_id)) == 1  # tests/test_lifecycle.py follows it further


def test_next_parameter_is_ignored(client):
    token = csrf(client)
    response = client.post(f"{DEMO}?next=https://evil.example",
                           data={"csrf_token": token, "email": "a@example.com",
                                 "next": "https://evil.example"})
    assert response.status_code == 303
    assert "evil" not in response.headers["Location"]
    assert response.headers["Location"].endswith("/p/acme-nurture/demo?submitted=1")


def test_missing_csrf_is_refused(client, db):
    csrf(client)
    response = client.post(DEMO, data={"email": "a@example.com"})
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert count(db, FormSubmission) == 0


def test_forged_csrf_is_refused(client, db):
    csrf(client)
    response = client.post(DEMO, data={"csrf_token": "abc.def.ghi", "email": "a@example.com"})
    assert response.status_code == 400
    assert count(db, FormSubmission) == 0


def test_csrf_token_without_its_cookie_is_refused(client, app, db):
    token = csrf(client)
    other = app.test_client()  # another browser: no cookie, or a cookie of its own
    assert other.post(DEMO, data={"csrf_token": token, "email": "a@example.com"}).status_code == 400
    csrf(other)
    assert other.post(DEMO, data={"csrf_token": token, "email": "a@example.com"}).status_code == 400
    assert count(db, FormSubmission) == 0


@pytest.mark.parametrize("form", [
    {},
    {"email": ""},
    {"email": "not-an-email"},
    {"email": "a@example.com", "message": "x" * 1001},
    {"email": "a@example.com", **{f"f{i}": "v" for i in range(20)}},
    {"email": "a@example.com", "message": "nul\x00byte"},
])
def test_invalid_fields_rerender_with_422(client, db, form):
    lead_id = make_lead(db)
    token = csrf(client)
    response = client.post(DEMO, data={"csrf_token": token, **form})
    assert response.status_code == 422
    assert response.mimetype == "text/html"
    assert 'role="alert"' in response.text and 'name="csrf_token"' in response.text
    assert response.headers["Content-Security-Policy"] == CSP
    assert count(db, FormSubmission) == 0
    assert form_events(db, lead_id) == []


@pytest.mark.parametrize("character", ["\x85", "\x9b"])
def test_a_control_character_is_named_without_advice_about_files(client, db, character):
    token = csrf(client)
    response = client.post(DEMO, data={"csrf_token": token, "email": "a@example.com",
                                       "first_name": f"Ada{character}Lovelace"})
    assert response.status_code == 422
    assert f"first_name: control character U+{ord(character):04X} at position 4" in response.text
    assert "--encoding" not in response.text  # advice for `nurture leads import` alone
    assert count(db, FormSubmission) == 0


@pytest.mark.parametrize("form, message", [
    ({"first_name": "x" * 201}, "first_name: value longer than 200 characters"),
    ({"job_title": "x" * 301}, "job_title: value longer than 300 characters"),  # lead field: title
    ({"team_size": "4\x1b0"}, "team_size: control character U+001B at position 2"),
    ({"message": "x" * 1001}, "message: longer than 1000 characters"),
    ({"first_name": ["Ada", "Grace"]}, "first_name: posted more than once"),
    ({"job_title": ["CIO", "CTO"]}, "job_title: posted more than once"),
    ({"email": ["b@example.com", "c@example.com"]}, "email: posted more than once"),
])
def test_a_refused_form_names_the_field_as_the_form_does_and_stores_nothing(client, db, form,
                                                                             message):
    lead_id = make_lead(db, first_name="Ada")
    token = csrf(client)
    response = client.post(DEMO, data={"csrf_token": token, "email": "ada@example.com", **form})
    assert response.status_code == 422
    assert message in response.text
    assert count(db, FormSubmission) == 0 and form_events(db, lead_id) == []
    with db.session() as s:
        assert s.scalars(select(Lead.first_name)).all() == ["Ada"]


def test_invalid_message_is_escaped(client):
    token = csrf(client)
    response = client.post(DEMO, data={"csrf_token": token, "email": "<img src=x>"})
    assert response.status_code == 422
    assert "<img src=x>" not in response.text


def test_oversized_body_is_refused(client, db):
    token = csrf(client)
    response = client.post(DEMO, data={"csrf_token": token, "email": "a@example.com",
                                       "message": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 413
    assert response.mimetype == "text/html"
    assert count(db, FormSubmission) == 0


def test_get_never_stores(client, db):
    client.get(f"{DEMO}?email=a@example.com&csrf_token=x")
    assert count(db, FormSubmission) == 0
