"""Unsubscribing from the List-Unsubscribe header of a delivered email (RFC 8058)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from engine.journeys.models import Enrollment
from engine.leads.service import upsert_lead
from engine.sending.compose import Signing
from engine.sending.delivery import DeliveryOptions, deliver_due
from engine.sending.inbox import read_message
from engine.sending.models import Suppression
from engine.sending.sink import Sink
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


def test_one_click_post_unsubscribes_once_without_redirect(client, db, unsubscribe_path):
    response = client.post(unsubscribe_path, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200 and "Location" not in response.headers
    assert b"You are unsubscribed" in response.data
    assert state(db) == (1, "exited")
    again = client.post(unsubscribe_path, data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200 and state(db) == (1, "exited")
    with db.session() as s:
        assert s.scalar(select(Suppression.reason)) == "unsubscribed"


@pytest.mark.parametrize("path", ["/u/not-a-token", "/u/eyJsIjoxLCJvIjoxfQ.forged", "/u/" + "x" * 5000])
def test_bad_tokens_get_a_safe_page_and_change_nothing(client, db, unsubscribe_path, path):
    for response in (client.get(path), client.post(path, data={"List-Unsubscribe": "One-Click"})):
        assert response.status_code == 200
        assert b"This link is not valid" in response.data
    tampered = unsubscribe_path[:-3] + "abc"
    assert b"This link is not valid" in client.post(tampered).data
    assert state(db) == (0, "active")
