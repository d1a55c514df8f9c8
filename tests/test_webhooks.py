"""POST /api/v1/webhooks/bounces: HMAC-signed bounces and complaints from a mail provider."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

import pytest
from launching import launch_all
from sqlalchemy import func, select

from engine.flows.leads import upsert_lead
from engine.journeys.models import Enrollment
from engine.leads.models import Lead, LeadEvent
from engine.programs.service import load_program
from engine.sending.models import OutboxMessage, Suppression
from engine.signatures import TOLERANCE_SECONDS, sign_webhook
from engine.web.app import create_app
from engine.web.webhooks import MAX_EVENTS

SECRET = "whsec-test-0123456789"
URL = "/api/v1/webhooks/bounces"
MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


@pytest.fixture
def app(env, monkeypatch):
    monkeypatch.setenv("NURTURE_WEBHOOK_SECRET", SECRET)
    app = create_app()
    yield app
    app.extensions["nurture.db"].dispose()


@pytest.fixture
def leads(db, sample_program) -> list[str]:
    emails = ["ada@globex.example", "bo@initech.example"]
    with db.session() as s:
        load_program(session=s, directory=sample_program, now=MONDAY)
        launch_all(s)
        for email in emails:
            upsert_lead(session=s, fields={"email": email, "title": "CIO"}, now=MONDAY,
                        actor="test", program="acme-nurture")
    return emails


def post(client, payload, *, secret: str = SECRET, t: int | None = None, body: bytes | None = None,
         headers: dict | None = None):
    raw = body if body is not None else json.dumps(payload).encode()
    signature = sign_webhook(secret, raw, int(time.time()) if t is None else t)
    return client.post(URL, data=raw, content_type="application/json",
                       headers={"X-Nurture-Signature": signature} if headers is None else headers)


def stored(db) -> dict[str, str]:
    with db.session() as s:
        return dict(s.execute(select(Suppression.email, Suppression.reason)).all())


def journey(db, email: str) -> tuple[str, str | None]:
    with db.session() as s:
        enrollment = s.scalar(select(Enrollment).join(Lead, Lead.id == Enrollment.lead_id)
                              .where(Lead.email == email))
        return enrollment.status, enrollment.state["exit_reason"]


def assert_problem(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.data
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status
    if field is not None:
        assert body["field"] == field
    return body


def hard(email: str, **more) -> dict:
    return {"email": email, "type": "hard", "reason": "550 5.1.1 user unknown", **more}


def test_signature_format_is_hmac_sha256_of_timestamp_dot_body():
    expected = hmac.new(SECRET.encode(), b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign_webhook(SECRET, b"{}", 1700000000) == f"t=1700000000,v1={expected}"


def test_signed_hard_bounce_suppresses_and_ends_journeys(client, db, leads):
    response = post(client, {"events": [hard("Ada@Globex.example")]})
    assert response.status_code == 200, response.data
    assert response.get_json() == {"suppressed": 1, "soft": 0, "ignored": 0}
    assert stored(db) == {"ada@globex.example": "bounced"}
    assert journey(db, "ada@globex.example") == ("exited", "hard_bounce")
    assert journey(db, "bo@initech.example")[0] == "active"


def test_complaint_suppresses_and_ends_journeys_like_an_unsubscribe(client, db, leads):
    response = post(client, {"email": "bo@initech.example", "type": "complaint",
                             "reason": "abuse"})  # a single event object
    assert response.get_json() == {"suppressed": 1, "soft": 0, "ignored": 0}
    assert stored(db) == {"bo@initech.example": "complained"}
    assert journey(db, "bo@initech.example") == ("exited", "unsubscribed")


def test_soft_bounce_is_counted_and_suppresses_nothing(client, db, leads):
    response = post(client, {"events": [{"email": "ada@globex.example", "type": "soft",
                                         "reason": "452 4.2.2 mailbox full"}]})
    assert response.get_json() == {"suppressed": 0, "soft": 1, "ignored": 0}
    assert stored(db) == {}
    with db.session() as s:
        assert s.scalar(select(LeadEvent.detail).where(LeadEvent.kind == "bounced")) == {
            "detail": "soft", "reason": "452 4.2.2 mailbox full", "message_id": None,
            "source": "webhook"}


def test_message_id_matches_a_rewritten_recipient(client, db, leads):
    with db.session() as s:
        message_id = s.scalar(select(OutboxMessage.message_id).join(
            Lead, Lead.id == OutboxMessage.lead_id).where(Lead.email == "ada@globex.example"))
    response = post(client, {"events": [hard("forwarded@elsewhere.example",
                                             message_id=message_id)]})
    assert response.get_json() == {"suppressed": 1, "soft": 0, "ignored": 0}
    assert stored(db) == {"ada@globex.example": "bounced"}


def test_the_same_events_twice_change_nothing_the_second_time(client, db, leads):
    payload = {"events": [hard("ada@globex.example"), hard("nobody@example.com"),
                          {"email": "bo@initech.example", "type": "soft", "reason": "4.2.2"}]}
    assert post(client, payload).get_json() == {"suppressed": 2, "soft": 1, "ignored": 0}
    assert post(client, payload).get_json() == {"suppressed": 0, "soft": 0, "ignored": 3}
    assert stored(db) == {"ada@globex.example": "bounced", "nobody@example.com": "bounced"}
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(LeadEvent).where(
            LeadEvent.kind == "bounced", LeadEvent.category == "event")) == 2  # hard + soft


@pytest.mark.parametrize("case", ["tampered body", "wrong secret", "old timestamp",
                                  "future timestamp", "missing header", "garbage header",
                                  "no v1", "text timestamp"])
def test_bad_signatures_are_refused_and_store_nothing(client, db, leads, case):
    raw = json.dumps({"events": [hard("ada@globex.example")]}).encode()
    now = int(time.time())
    header = sign_webhook(SECRET, raw, now)
    body = raw
    if case == "tampered body":
        body = raw.replace(b"ada@", b"bo@")
    elif case == "wrong secret":
        header = sign_webhook("not-the-secret", raw, now)
    elif case == "old timestamp":  # a captured request replayed later
        header = sign_webhook(SECRET, raw, now - TOLERANCE_SECONDS - 30)
    elif case == "future timestamp":
        header = sign_webhook(SECRET, raw, now + TOLERANCE_SECONDS + 30)
    elif case == "garbage header":
        header = "sha256=" + "0" * 64
    elif case == "no v1":
        header = f"t={now}"
    elif case == "text timestamp":
        header = header.replace(f"t={now}", "t=now")
    headers = {} if case == "missing header" else {"X-Nurture-Signature": header}
    response = client.post(URL, data=body, content_type="application/json", headers=headers)
    problem = assert_problem(response, 401, "X-Nurture-Signature")
    assert response.headers["WWW-Authenticate"].startswith("HMAC-SHA256")
    assert "ada@globex.example" not in json.dumps(problem)
    assert stored(db) == {}


def test_a_recent_timestamp_within_the_tolerance_is_accepted(client, db, leads):
    response = post(client, hard("ada@globex.example"), t=int(time.time()) - TOLERANCE_SECONDS + 10)
    assert response.status_code == 200


def test_one_of_several_v1_signatures_may_match(client, db, leads):
    raw = json.dumps(hard("ada@globex.example")).encode()
    t = int(time.time())
    good = sign_webhook(SECRET, raw, t).split(",")[1]
    header = f"t={t},v1={'f' * 64},{good}"
    response = client.post(URL, data=raw, headers={"X-Nurture-Signature": header})
    assert response.status_code == 200 and stored(db) == {"ada@globex.example": "bounced"}


def test_unset_secret_refuses_every_request(env, db, leads, monkeypatch):
    monkeypatch.delenv("NURTURE_WEBHOOK_SECRET", raising=False)
    app = create_app()
    try:
        response = post(app.test_client(), hard("ada@globex.example"), secret="")
        assert_problem(response, 503)
        response = post(app.test_client(), hard("ada@globex.example"), secret="anything")
        assert_problem(response, 503)
    finally:
        app.extensions["nurture.db"].dispose()
    assert stored(db) == {}


@pytest.mark.parametrize(("body", "field"), [
    (b'{"events": [', "body"),
    (b"\xff\xfe not utf-8", "body"),
    (b"[]", "body"),
    (b'"hello"', "body"),
    (b'{"events": []}', "events"),
    (b'{"events": {"email": "ada@globex.example"}}', "events"),
    (b'{"events": [{"email": "ada@globex.example", "type": "bogus"}]}', "events.0.type"),
    (b'{"events": [{"email": 5, "type": "hard"}]}', "events.0.email"),
    (b'{"events": [{"type": "hard"}]}', "events.0.email"),
    (b'{"events": [{"email": "ada@globex.example", "type": "hard", "reason": 7}]}',
     "events.0.reason"),
    (b'{"events": [{"email": "ada@globex.example", "type": "hard", "reason": "a\\u0000b"}]}',
     "events.0.reason"),
    (b'{"email": "not an email", "type": "hard"}', "events.0.email"),
])
def test_malformed_bodies_are_422_naming_the_field(client, db, leads, body, field):
    assert_problem(post(client, None, body=body), 422, field)
    assert stored(db) == {}


def test_a_bad_email_in_event_3_stores_nothing(client, db, leads):
    events = [hard("ada@globex.example"), hard("bo@initech.example"),
              {"email": "cy@hooli.example", "type": "complaint"},
              hard("not-an-address@"), hard("dee@globex.example")]
    problem = assert_problem(post(client, {"events": events}), 422, "events.3.email")
    assert "events.3.email" in problem["detail"]
    assert stored(db) == {}
    assert journey(db, "ada@globex.example")[0] == "active"


def test_10000_events_are_refused_whole(client, db, leads):
    events = [hard(f"user{i}@globex.example") for i in range(10_000)]
    problem = assert_problem(post(client, {"events": events}), 422, "events")
    assert str(MAX_EVENTS) in problem["detail"]
    assert stored(db) == {}


def test_the_largest_batch_is_recorded(client, db, leads):
    events = [hard(f"user{i}@globex.example") for i in range(MAX_EVENTS)]
    assert post(client, {"events": events}).get_json() == {
        "suppressed": MAX_EVENTS, "soft": 0, "ignored": 0}
    assert len(stored(db)) == MAX_EVENTS


def test_a_body_over_1_mb_is_refused(client, db, leads):
    body = json.dumps({"events": [hard("ada@globex.example", reason="x" * 2_000_000)]}).encode()
    assert_problem(post(client, None, body=body), 413)
    assert stored(db) == {}


def test_get_is_not_allowed(client):
    assert_problem(client.get(URL), 405)
