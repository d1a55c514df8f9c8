"""Unsubscribing from the List-Unsubscribe header of a delivered email (RFC 8058)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

import pytest
from sqlalchemy import func, select

from engine.flows.leads import upsert_lead
from engine.journeys.models import Enrollment
from engine.leads.models import LeadEvent
from engine.pages.service import page_token
from engine.sending.compose import Signing
from engine.sending.delivery import DeliveryOptions, deliver_due
from engine.sending.inbox import read_message
from engine.sending.models import OutboxMessage, SentEmail, Suppression
from engine.sending.sink import Sink
from engine.tracking.tokens import click_token, send_token, sign, unsubscribe_token, verify
from engine.web.app import create_app

MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # 09:00 in Paris


@pytest.fixture
def client(env, loaded_program):
    app = create_app()
    yield app.test_client()
    app.extensions["nurture.db"].dispose()


@pytest.fixture
def unsubscribe_path(db, env, loaded_program, tmp_path):
    """The path of the List-Unsubscribe URL in the email ada received."""
    with db.session() as s:
        upsert_lead(session=s, fields={"email": "ada@globex.example", "title": "CIO"},
                    now=MONDAY, actor="test", program="acme-nurture")
    with Sink(tmp_path / "sink") as sink, sink.transport() as transport:
        deliver_due(db=db, transport=transport, worker="w", clock=lambda: MONDAY,
                    options=DeliveryOptions(signing=Signing(secret_key=env["SECRET_KEY"])))
        [stored] = sink.messages()
        header = read_message(sink.directory, stored)["List-Unsubscribe"]
    url = header.split(",")[0].strip(" <>")
    return urlsplit(url).path


def state(db):
    with db.session() as s:
        return (s.scalar(select(func.count()).select_from(Suppression)),
                s.scalar(select(Enrollment.status)))


def test_get_only_asks_for_confirmation(client, db, unsubscribe_path):
    response = client.get(unsubscribe_path)
    assert response.status_code == 200
    assert b"Stop all emails to <strong>ada@globex.example</strong>?" in response.data
    assert state(db) == (0, "active")  # a scanner fetching the link changes nothing


def unsubscribed_events(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(LeadEvent).where(
            LeadEvent.category == "event", LeadEvent.kind == "unsubscribed"))


def test_one_click_post_unsubscribes_once_without_redirect(client, db, unsubscribe_path):
    response = client.post(unsubscribe_path, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200 and "Location" not in response.headers
    assert b"You are unsubscribed" in response.data
    assert state(db) == (1, "exited") and unsubscribed_events(db) == 1
    again = client.post(unsubscribe_path, data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200 and b"You are unsubscribed" in again.data
    assert state(db) == (1, "exited") and unsubscribed_events(db) == 1
    with db.session() as s:
        assert s.scalar(select(Suppression.reason)) == "unsubscribed"
        # the engagement report counts it on the email it answered, once
        assert s.execute(select(OutboxMessage.status, SentEmail.unsubscribed).join(
            SentEmail, SentEmail.outbox_id == OutboxMessage.id)).all() == [("sent", True)]


def test_the_confirm_button_after_a_one_click_changes_nothing_more(client, db, unsubscribe_path):
    assert client.post(unsubscribe_path, data={"confirm": "yes"}).status_code == 200
    assert client.get(unsubscribe_path).status_code == 200  # the link keeps working
    response = client.post(unsubscribe_path, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200 and b"You are unsubscribed" in response.data
    assert state(db) == (1, "exited") and unsubscribed_events(db) == 1


def _bad_tokens(unsubscribe_path: str, secret: str) -> dict[str, str]:
    token = unsubscribe_path.removeprefix("/u/")
    payload, signature = token.split(".")
    ids = verify(secret, "unsubscribe", token)
    lead, row = ids["l"], ids["o"]

    def flip(value: str, at: int) -> str:
        return value[:at] + ("A" if value[at] != "A" else "B") + value[at + 1:]

    return {
        "garbage": "not-a-token",
        "forged payload": "eyJsIjoxLCJvIjoxfQ.forged",
        "payload changed": f"{flip(payload, len(payload) // 2)}.{signature}",
        "signature changed": f"{payload}.{flip(signature, len(signature) // 2)}",
        "signature dropped": payload,
        "last characters changed": token[:-3] + "abc",
        "other secret": unsubscribe_token("another-secret", lead_id=lead, outbox_id=row),
        "click token": click_token(secret, lead_id=lead, outbox_id=row, index=0,
                                   url="https://acme.example/"),
        "open token": send_token(secret, "open", lead_id=lead, outbox_id=row),
        "view token": send_token(secret, "view", lead_id=lead, outbox_id=row),
        "page token": page_token(secret_key=secret, lead_id=lead),
        "unknown lead": unsubscribe_token(secret, lead_id=2**31 - 1, outbox_id=row),
        "lead id out of range": sign(secret, "unsubscribe", {"l": 2**70, "o": row}),
        "lead id as a string": sign(secret, "unsubscribe", {"l": str(lead), "o": row}),
        "lead id as a boolean": sign(secret, "unsubscribe", {"l": True, "o": row}),
        "no lead id": sign(secret, "unsubscribe", {"o": row}),
        "not an object": sign(secret, "unsubscribe", [lead, row]),
        "over-long": "x" * 5000,
        "valid token made over-long": token + "A" * 500,
        "valid token with a suffix": token + "/extra",
        "percent-encoded NUL": "%00",
        "non-ascii": quote("é.ü"),
    }


def test_bad_tokens_get_404_and_the_invalid_page_and_change_nothing(
        client, db, env, unsubscribe_path):
    for case, bad in _bad_tokens(unsubscribe_path, env["SECRET_KEY"]).items():
        path = f"/u/{bad}"
        for method, response in (
                ("GET", client.get(path)),
                ("one-click POST", client.post(path, data={"List-Unsubscribe": "One-Click"})),
                ("form POST", client.post(path, data={"confirm": "yes"}))):
            where = f"{case}, {method}"
            assert response.status_code == 404, where  # never a 2xx a mail provider trusts
            assert b"This link is not valid" in response.data, where
            assert "Location" not in response.headers, where
            assert response.headers["Cache-Control"] == "no-store", where
    assert state(db) == (0, "active") and unsubscribed_events(db) == 0
    # the real link still works after all that
    assert client.post(unsubscribe_path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert state(db) == (1, "exited")


def test_an_unsubscribe_is_put_on_the_email_whose_link_was_used(client, db, env, tmp_path,
                                                                  unsubscribe_path):
    """Ada unsubscribes through the first email's link after a second email went out: the
    first email counts the unsubscribe, as the engagement report reads it, and so does the
    count made again from the log (migration 0024's)."""
    from engine.journeys.service import run_due
    from engine.sending.responses import mark_all_responses

    later = MONDAY
    with Sink(tmp_path / "sink2") as sink, sink.transport() as transport:
        for days in range(1, 30):  # until the second email of the track goes out
            later = MONDAY + timedelta(days=days)
            with db.session() as s:
                run_due(session=s, now=later)
            deliver_due(db=db, transport=transport, worker="w", clock=lambda at=later: at,
                        options=DeliveryOptions(signing=Signing(secret_key=env["SECRET_KEY"])))
            if sink.messages():
                break
    with db.session() as s:
        first, second = s.scalars(select(SentEmail.outbox_id).order_by(SentEmail.out_at)).all()
    client.application.extensions["nurture.clock"] = lambda: later
    assert client.post(unsubscribe_path, data={"List-Unsubscribe": "One-Click"}).status_code == 200

    def flags():
        with db.session() as s:
            return dict(s.execute(select(SentEmail.outbox_id, SentEmail.unsubscribed)).all())

    assert flags() == {first: True, second: False}
    with db.engine.begin() as connection:
        connection.execute(SentEmail.__table__.update().values(unsubscribed=False))
        mark_all_responses(connection)
    assert flags() == {first: True, second: False}
