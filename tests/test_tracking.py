"""Tracking as leads (and mail scanners, and attackers) meet it: emails delivered through the
real SMTP sink, their links fetched from the public endpoints, the buffered events drained into
the database, and what that does to the lead's journey and score.

One database, sample program, sink and app serve the whole module (loading the program is the
slow part); every test delivers to leads of its own and looks only at their rows.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from conftest import SAMPLE_PROGRAM, _backends
from defects import without_advance
from launching import launch_all
from sqlalchemy import create_engine, select, text

from engine.config import Settings
from engine.db import Base, Database
from engine.flows.leads import upsert_lead
from engine.flows.tracking import drain_buffer
from engine.journeys.models import Enrollment
from engine.leads.models import Lead, LeadEvent
from engine.pages.service import page_token
from engine.programs.service import load_program
from engine.scoring.models import ScoreEvent
from engine.sending.compose import Signing
from engine.sending.delivery import DeliveryOptions, deliver_due
from engine.sending.inbox import read_message
from engine.sending.models import OutboxMessage, SentEmail
from engine.sending.sink import Sink, free_port
from engine.tracking.buffer import EventBuffer
from engine.tracking.links import HONEYPOT
from engine.tracking.models import TrackingEvent
from engine.tracking.service import new_event
from engine.tracking.tokens import click_token, send_token, sign, unsubscribe_token, verify
from engine.web.app import create_app
from engine.web.pages import CSP
from engine.web.tracking import PIXEL

SECRET = "test-secret"
BASE_URL = "http://localhost:5000"
MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # 09:00 in Paris: the send window is open
LATER = MONDAY + timedelta(hours=1)
BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
           "(KHTML, like Gecko) Version/17.4 Safari/605.1.15")
PERSON_IP = "203.0.113.7"
SAFE_PAGE = b"This link is not available"
NO_STORE = "no-store"


class Clock:
    """The app's clock, set by each test."""

    def __init__(self) -> None:
        self.now = LATER

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    db: Database
    app: object
    client: object
    clock: Clock
    sink: Sink
    transport: object
    buffer: EventBuffer
    tmp: Path


@dataclass
class Email:
    """One delivered email as its recipient got it."""

    lead_id: int
    outbox_id: int
    address: str
    html: str
    text: str
    stored: list[str]  # the outbox row's tracked destinations, by index
    clicks: dict[int, str] = field(default_factory=dict)  # link index -> /c/ path in the HTML
    text_clicks: dict[int, str] = field(default_factory=dict)
    pixel: str = ""
    view: str = ""
    unsubscribe: str = ""

    @property
    def honeypot(self) -> str:
        return self.clicks[HONEYPOT]


# -- the module's world -----------------------------------------------------------------------

@pytest.fixture(scope="module", params=_backends())
def world(request, tmp_path_factory, sqlite_template) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("tracking")
    if request.param == "sqlite":
        shutil.copy(sqlite_template, tmp / "nurture.db")
        url = f"sqlite:///{tmp / 'nurture.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    db = Database(url)
    with db.session() as s:
        # without its advance rules: here a click is measured, it moves no stage
        load_program(session=s, directory=without_advance(), now=MONDAY - timedelta(days=1))
        launch_all(s)
    settings = Settings(instance_path=tmp / "instance", database_url=url, redis_url=None,
                        secret_key=SECRET, base_url=BASE_URL)
    clock = Clock()
    app = create_app(settings, clock=clock)
    recorder = app.extensions["nurture.recorder"]
    try:
        with Sink(tmp / "sink") as sink, sink.transport() as transport:
            yield World(db=db, app=app, client=app.test_client(), clock=clock, sink=sink,
                        transport=transport, buffer=recorder.buffer, tmp=tmp)
    finally:
        app.extensions["nurture.db"].dispose()
        db.dispose()
        if request.param != "sqlite":
            engine = create_engine(url)
            with engine.begin() as conn:
                tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
                conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            engine.dispose()


@pytest.fixture(autouse=True)
def fresh(world):
    """Each test starts at MONDAY + 1 h with an empty event buffer."""
    world.clock.now = LATER
    world.buffer.redis.delete(world.buffer.key)
    yield


@pytest.fixture(scope="module")
def shared(world) -> Email:
    """An email for tests that only read: whatever they record is never drained."""
    return deliver(world)


# -- helpers ----------------------------------------------------------------------------------

def new_lead(world: World, *, title: str = "CIO", program: str = "acme-nurture",
             now: datetime = MONDAY, **fields: str) -> tuple[int, str]:
    address = f"lead-{uuid.uuid4().hex[:10]}@globex.example"
    with world.db.session() as s:
        lead, _ = upsert_lead(session=s, fields={"email": address, "title": title,
                                                 "first_name": "Ada", **fields},
                              now=now, actor="test", program=program)
        return lead.id, address


def deliver(world: World, *, title: str = "CIO", program: str = "acme-nurture",
            **fields: str) -> Email:
    """A new lead (with these fields), and the first email it gets, delivered at MONDAY
    through the real sink."""
    lead_id, address = new_lead(world, title=title, program=program, **fields)
    deliver_due(db=world.db, transport=world.transport, worker="test", clock=lambda: MONDAY,
                options=DeliveryOptions(signing=Signing(secret_key=SECRET, base_url=BASE_URL)))
    [stored] = world.sink.messages(to=address)
    message = read_message(world.sink.directory, stored)
    html = message.get_body(("html",)).get_content()
    plain = message.get_body(("plain",)).get_content()
    with world.db.session() as s:
        row = s.scalar(select(OutboxMessage).where(OutboxMessage.lead_id == lead_id))
        assert row.sent_at == MONDAY
        email = Email(lead_id=lead_id, outbox_id=row.id, address=address, html=html, text=plain,
                      stored=list(row.links))
    for href in re.findall(r'href="([^"]+)"', html):
        path = urlsplit(href.replace("&amp;", "&")).path
        if path.startswith("/c/"):
            index = verify(SECRET, "click", path[3:])["n"]
            assert email.clicks.setdefault(index, path) == path  # one token per destination
        elif path.startswith("/v/"):
            email.view = path
        elif path.startswith("/u/"):
            email.unsubscribe = path
    for url in re.findall(rf"{re.escape(BASE_URL)}/c/[\w.-]+", plain):
        path = urlsplit(url).path
        email.text_clicks[verify(SECRET, "click", path[3:])["n"]] = path
    email.pixel = urlsplit(re.search(r'<img src="([^"]+/o/[^"]+)"', html).group(1)).path
    return email


def get(world: World, path: str, *, agent: str = BROWSER, ip: str = PERSON_IP, at=None):
    if at is not None:
        world.clock.now = at
    return world.client.get(path, headers={"User-Agent": agent},
                            environ_base={"REMOTE_ADDR": ip})


def drain(world: World) -> int:
    return drain_buffer(db=world.db, buffer=world.buffer)


def tracked(world: World, lead_id: int) -> list[TrackingEvent]:
    with world.db.session() as s:
        rows = list(s.scalars(select(TrackingEvent).where(TrackingEvent.lead_id == lead_id)
                              .order_by(TrackingEvent.id)))
        s.expunge_all()
        return rows


def scores(world: World, lead_id: int) -> list[tuple[str, float, str, int | None]]:
    with world.db.session() as s:
        return [(e.kind, e.points, e.rule, e.tracking_event_id) for e in s.scalars(
            select(ScoreEvent).where(ScoreEvent.lead_id == lead_id,
                                     ScoreEvent.category == "behaviour")
            .order_by(ScoreEvent.id))]


def responses(world: World, lead_id: int) -> list[tuple[str, str | None]]:
    """The lead's journey events for opens, clicks and page visits: (kind, detail)."""
    with world.db.session() as s:
        return [(e.kind, (e.detail or {}).get("detail")) for e in s.scalars(
            select(LeadEvent).where(LeadEvent.lead_id == lead_id, LeadEvent.category == "event",
                                    LeadEvent.kind.in_(["opened", "clicked", "page_viewed"]))
            .order_by(LeadEvent.id))]


def sends_without_response(world: World, lead_id: int) -> int:
    with world.db.session() as s:
        return s.scalar(select(Enrollment.state).where(Enrollment.lead_id == lead_id))[
            "sends_without_response"]


def behaviour_score(world: World, lead_id: int) -> float:
    with world.db.session() as s:
        return s.get(Lead, lead_id).behaviour_score


def assert_safe_page(response, case="") -> None:
    assert response.status_code == 404, case
    assert response.mimetype == "text/html", case
    assert "Location" not in response.headers, case
    assert SAFE_PAGE in response.data, case
    assert b"Traceback" not in response.data, case


def assert_not_a_person(world: World, email: Email, event: TrackingEvent) -> None:
    """A filtered hit: stored with its reason, no points, no journey event, no response."""
    assert event.bot is True and event.bot_reason
    assert scores(world, email.lead_id) == []
    assert responses(world, email.lead_id) == []
    assert sends_without_response(world, email.lead_id) == 1
    assert behaviour_score(world, email.lead_id) == 0


# -- the delivered email ----------------------------------------------------------------------

def test_the_delivered_email_tracks_its_links_in_both_parts(world):
    email = deliver(world)
    assert email.stored[:2] == ["https://acme.example", "https://acme.example/docs/quick-start"]
    assert email.stored[2].startswith(f"{BASE_URL}/p/acme-nurture/pricing?t=")
    assert len(email.stored) == 3
    assert sorted(email.clicks) == [HONEYPOT, 0, 1, 2]
    assert email.text_clicks == {n: email.clicks[n] for n in (0, 1, 2)}  # same token per link
    assert email.view and email.unsubscribe  # left as they are, not behind a redirect
    assert "acme.example/docs" not in email.html and "acme.example/docs" not in email.text
    assert sends_without_response(world, email.lead_id) == 1


# -- clicks -----------------------------------------------------------------------------------

def test_each_tracked_link_redirects_to_exactly_its_stored_url(world):
    email = deliver(world)
    for n in range(len(email.stored)):
        response = get(world, email.clicks[n], at=LATER + timedelta(minutes=n))
        assert response.status_code == 302
        assert response.headers["Location"] == email.stored[n]
        assert NO_STORE in response.headers["Cache-Control"]
    assert drain(world) == 3
    assert [(e.kind, e.link_index, e.url, e.bot) for e in tracked(world, email.lead_id)] == [
        ("click", n, url, False) for n, url in enumerate(email.stored)]


def test_a_person_clicking_a_minute_after_delivery_counts(world):
    email = deliver(world)
    at = MONDAY + timedelta(minutes=1)
    response = get(world, email.clicks[1], at=at)
    assert response.headers["Location"] == "https://acme.example/docs/quick-start"
    drain(world)
    [event] = tracked(world, email.lead_id)
    assert (event.kind, event.at, event.bot, event.bot_reason) == ("click", at, False, None)
    assert (event.user_agent, event.ip, event.outbox_id) == (BROWSER, PERSON_IP, email.outbox_id)
    assert responses(world, email.lead_id) == [("clicked", "welcome_it")]
    assert scores(world, email.lead_id) == [("click", 10.0, "click: +10", event.id)]
    assert behaviour_score(world, email.lead_id) == 10
    assert sends_without_response(world, email.lead_id) == 0


def test_clicks_are_capped_per_day_by_the_programs_scoring(world):
    """daily_caps: click 20 in the sample program: the third click of a day scores nothing."""
    email = deliver(world)
    for minute in (1, 2, 3):
        get(world, email.clicks[1], at=MONDAY + timedelta(minutes=minute))
    drain(world)
    assert [points for _, points, _, _ in scores(world, email.lead_id)] == [10.0, 10.0]
    assert behaviour_score(world, email.lead_id) == pytest.approx(20, abs=0.01)  # decay
    assert [e.bot for e in tracked(world, email.lead_id)] == [False, False, False]


def test_bad_click_tokens_get_a_safe_page_and_record_nothing(world):
    email = deliver(world)
    other = deliver(world)
    pending_lead, _ = new_lead(world, now=MONDAY + timedelta(days=7))  # due next week: unsent
    with world.db.session() as s:
        pending = s.scalar(select(OutboxMessage).where(OutboxMessage.lead_id == pending_lead))
        assert pending.sent_at is None and not pending.links
        pending_id = pending.id
    token = email.clicks[1][3:]
    payload, signature = token.split(".")
    lead, row, first = email.lead_id, email.outbox_id, email.stored[0]

    def flip(value: str, at: int) -> str:
        return value[:at] + ("A" if value[at] != "A" else "B") + value[at + 1:]

    cases = {
        "payload changed": f"{flip(payload, len(payload) // 2)}.{signature}",
        "signature changed": f"{payload}.{flip(signature, len(signature) // 2)}",
        "signature dropped": payload,
        "other secret": click_token("another-secret", lead_id=lead, outbox_id=row, index=1,
                                    url=email.stored[1]),
        "open token": send_token(SECRET, "open", lead_id=lead, outbox_id=row),
        "view token": send_token(SECRET, "view", lead_id=lead, outbox_id=row),
        "unsubscribe token": unsubscribe_token(SECRET, lead_id=lead, outbox_id=row),
        "page token": page_token(secret_key=SECRET, lead_id=lead),
        "index past the links": click_token(SECRET, lead_id=lead, outbox_id=row,
                                            index=len(email.stored), url=first),
        "index far past": click_token(SECRET, lead_id=lead, outbox_id=row, index=2**31 - 1,
                                      url=first),
        "index -2": click_token(SECRET, lead_id=lead, outbox_id=row, index=-2, url=first),
        "URL not in the email": click_token(SECRET, lead_id=lead, outbox_id=row, index=0,
                                            url="https://evil.example/"),
        "URL of another index": click_token(SECRET, lead_id=lead, outbox_id=row, index=0,
                                            url=email.stored[1]),
        "no digest": sign(SECRET, "click", {"l": lead, "o": row, "n": 0}),
        "ids as strings": sign(SECRET, "click", {"l": str(lead), "o": str(row), "n": "0",
                                                 "h": verify(SECRET, "click", token)["h"]}),
        "lead not owning the row": click_token(SECRET, lead_id=other.lead_id, outbox_id=row,
                                               index=0, url=first),
        "unknown lead": click_token(SECRET, lead_id=2**31 - 1, outbox_id=row, index=0, url=first),
        "unknown row": click_token(SECRET, lead_id=lead, outbox_id=2**31 - 1, index=0, url=first),
        "row not sent yet": click_token(SECRET, lead_id=pending_lead, outbox_id=pending_id,
                                        index=0, url=first),
        "garbage": "not-a-token",
        "dots": "...",
        "percent-encoded NUL": "%00",
        "non-ascii": quote("é.ü"),
        "over-long": "A" * 600,
        "valid token made over-long": token + "A" * 500,
        "valid token with a suffix": token + "/extra",
    }
    for case, bad in cases.items():
        assert_safe_page(get(world, f"/c/{bad}"), case)
    assert world.buffer.pending() == 0
    assert drain(world) == 0
    for lead_id in (email.lead_id, other.lead_id, pending_lead):
        assert tracked(world, lead_id) == []
    # the email's own link still works after all that
    assert get(world, email.clicks[1]).headers["Location"] == email.stored[1]


@pytest.mark.parametrize("attempt", [
    "/c/{token}?url=https://evil.example",
    "/c/{token}?next=//evil.example&redirect=https%3A%2F%2Fevil.example",
    "/c/{token}/https://evil.example",
    "/c/{token}%2F%2Fevil.example",
    "/c//evil.example",
    "/c///evil.example",
    "/c/https://evil.example",
    "/c/https:/evil.example",
    "/c/%2F%2Fevil.example",
    "/c/%2f%2fevil.example%2f",
    "/c/https%3A%2F%2Fevil.example",
    "/c/%5C%5Cevil.example",
    "/c/\\\\evil.example",
    "/c/%09//evil.example",
    "/c/evil.example",
    "/c/..%2F..%2F%2F%2Fevil.example",
    "/c/%68ttps://evil.example",
    "/c/{payload}.aHR0cHM6Ly9ldmlsLmV4YW1wbGU",
])
def test_open_redirect_attempts_never_leave_for_an_unsigned_url(world, shared, attempt):
    email = shared
    token = email.clicks[0][3:]
    path = attempt.format(token=token, payload=token.split(".")[0])
    response = get(world, path)
    for _ in range(3):  # follow our own redirects (the router merges //) to where they end
        location = response.headers.get("Location")
        if location is None or location in email.stored:
            break
        target = urlsplit(location)
        assert target.netloc in ("", "localhost"), location
        assert "evil" not in target.netloc
        response = get(world, target.path + (f"?{target.query}" if target.query else ""))
    location = response.headers.get("Location")
    assert location is None or location == email.stored[0], location
    if location is None:
        assert_safe_page(response, path)


def test_the_hidden_honeypot_link_answers_no_content_and_marks_a_bot(world):
    email = deliver(world)
    response = get(world, email.honeypot)
    assert response.status_code == 204 and "Location" not in response.headers
    assert response.data == b""
    drain(world)
    [event] = tracked(world, email.lead_id)
    assert (event.kind, event.link_index) == ("click", HONEYPOT)
    assert event.bot_reason == "followed the hidden honeypot link"
    assert_not_a_person(world, email, event)


# -- opens ------------------------------------------------------------------------------------

def test_the_pixel_always_answers_a_gif_that_is_never_cached(world):
    email = deliver(world)
    payload = email.pixel[3:].removesuffix(".gif")
    middle = len(payload) - 10  # inside the signature, clear of base64's unused last bits
    tampered = payload[:middle] + ("A" if payload[middle] != "A" else "B") + payload[middle + 1:]
    bad = ["/o/.gif", "/o/x.gif", "/o/x", f"/o/{tampered}.gif", f"/o/{payload}",
           "/o/" + email.clicks[0][3:] + ".gif", "/o/" + email.view[3:] + ".gif",
           "/o/" + "A" * 5000 + ".gif", "/o/%00.gif", "/o/a/b/c.gif",
           "/o/" + send_token("another-secret", "open", lead_id=email.lead_id,
                              outbox_id=email.outbox_id) + ".gif"]
    for path in [*bad, email.pixel]:
        response = get(world, path)
        assert response.status_code == 200, path
        assert response.mimetype == "image/gif", path
        assert response.data == PIXEL and PIXEL.startswith(b"GIF8"), path
        assert NO_STORE in response.headers["Cache-Control"], path
        assert response.headers["Pragma"] == "no-cache", path
    assert world.buffer.pending() == 2  # the good pixel, and the same token without ".gif"
    drain(world)
    assert [(e.kind, e.outbox_id) for e in tracked(world, email.lead_id)] == [
        ("open", email.outbox_id)] * 2


def test_a_person_opening_the_email_is_an_open_that_scores(world):
    email = deliver(world)
    get(world, email.pixel)
    drain(world)
    [event] = tracked(world, email.lead_id)
    assert (event.kind, event.bot, event.at) == ("open", False, LATER)
    assert responses(world, email.lead_id) == [("opened", "welcome_it")]
    assert scores(world, email.lead_id) == [("open", 1.0, "open: +1", event.id)]
    assert sends_without_response(world, email.lead_id) == 0


@pytest.mark.parametrize(("agent", "ip"), [("Mozilla/5.0", PERSON_IP), (BROWSER, "17.58.101.12")])
def test_an_apple_mail_privacy_protection_prefetch_is_not_an_open(world, agent, ip):
    email = deliver(world)
    assert get(world, email.pixel, agent=agent, ip=ip).data == PIXEL
    drain(world)
    [event] = tracked(world, email.lead_id)
    assert event.bot_reason == "Apple Mail Privacy Protection prefetch"
    assert event.ip == ip
    assert_not_a_person(world, email, event)


# -- view in browser --------------------------------------------------------------------------

def test_view_in_browser_shows_the_email_with_its_tracked_links(world):
    email = deliver(world)
    response = get(world, email.view)
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.text
    assert "Welcome, Ada" in page and "Solutions engineering, Acme Cloud" in page
    shown = {urlsplit(h.replace("&amp;", "&")).path
             for h in re.findall(r'href="([^"]+)"', page) if "/c/" in h}
    assert shown == set(email.clicks.values())  # the very links of the email, all tracked
    assert "acme.example/docs" not in page
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert NO_STORE in response.headers["Cache-Control"]
    drain(world)
    [event] = tracked(world, email.lead_id)
    assert (event.kind, event.bot) == ("view", False)
    assert responses(world, email.lead_id) == [("opened", "welcome_it")]
    # and a link clicked from that page goes where the email's link goes
    assert get(world, email.clicks[1], at=LATER + timedelta(minutes=5)).headers[
        "Location"] == email.stored[1]


def test_bad_view_tokens_get_a_safe_page(world):
    email = deliver(world)
    other = deliver(world)
    pending_lead, _ = new_lead(world, now=MONDAY + timedelta(days=7))
    with world.db.session() as s:
        pending_id = s.scalar(select(OutboxMessage.id).where(OutboxMessage.lead_id == pending_lead))
    token = email.view[3:]
    cases = {
        "tampered": token[:5] + ("A" if token[5] != "A" else "B") + token[6:],
        "click token": email.clicks[1][3:],
        "open token": send_token(SECRET, "open", lead_id=email.lead_id,
                                 outbox_id=email.outbox_id),
        "unsubscribe token": email.unsubscribe[3:],
        "other secret": send_token("x", "view", lead_id=email.lead_id, outbox_id=email.outbox_id),
        "another lead's email": send_token(SECRET, "view", lead_id=other.lead_id,
                                           outbox_id=email.outbox_id),
        "unknown email": send_token(SECRET, "view", lead_id=email.lead_id, outbox_id=2**31 - 1),
        "not sent yet": send_token(SECRET, "view", lead_id=pending_lead, outbox_id=pending_id),
        "garbage": "garbage",
        "over-long": "A" * 5000,
    }
    for case, bad in cases.items():
        response = get(world, f"/v/{bad}")
        assert_safe_page(response, case)
        assert "Welcome" not in response.text, case
    assert world.buffer.pending() == 0


def _launched_program(world, program, program_yaml: str, emails: dict[str, str]):
    """A program directory with these emails and the sample's pricing page, loaded and
    launched a day before MONDAY."""
    for folder in ("emails", "pages"):
        (program / folder).mkdir(parents=True)
    shutil.copy(SAMPLE_PROGRAM / "pages" / "pricing.html", program / "pages" / "pricing.html")
    for name, source in emails.items():
        (program / "emails" / name).write_text(source)
    (program / "program.yaml").write_text(program_yaml)
    with world.db.session() as s:
        load_program(session=s, directory=program, now=MONDAY - timedelta(days=1))
        launch_all(s)
    return program


def _one_email_yaml(slug: str, email: str, subject: str) -> str:
    """program.yaml of a program with one email, sent at once to IT managers."""
    return f"""
program: {slug}
timezone: Europe/Paris
sender: {{from: "Acme Cloud <hello@acme.example>"}}
send_window: {{days: [mon, tue, wed, thu, fri], from: "09:00", to: "17:00"}}
personas:
  it_manager: {{name: IT manager, match: {{title_contains: [CIO]}}, default: true}}
pages:
  pricing: {{file: pages/pricing.html, slug: pricing}}
emails:
  {email}: {{file: emails/{email}.mjml, subject: "{subject}"}}
tracks:
  it_manager/inquiry: [{{email: {email}}}]
"""


def test_view_in_browser_still_shows_what_was_sent_after_the_email_is_edited(world, tmp_path):
    welcome = (SAMPLE_PROGRAM / "emails" / "welcome_it.mjml").read_text()
    program = _launched_program(world, tmp_path / "acme-edited",
                                _one_email_yaml("acme-edited", "welcome_it", "Welcome"),
                                {"welcome_it.mjml": welcome})
    mjml = program / "emails" / "welcome_it.mjml"
    email = deliver(world, program="acme-edited")
    mjml.write_text(mjml.read_text().replace("https://acme.example/docs/quick-start",
                                             "https://acme.example/docs/new-start")
                    .replace("Open the quick-start guide", "Read our new guide"))
    with world.db.session() as s:
        load_program(session=s, directory=program, now=MONDAY + timedelta(minutes=30))
        launch_all(s)
    page = get(world, email.view).text
    assert "Open the quick-start guide" in page and "Read our new guide" not in page
    quick_start = [h for h in re.findall(r'href="([^"]+)"', page) if "/c/" in h][1]
    assert get(world, urlsplit(quick_start).path).headers.get("Location") == email.stored[1]


LEAD_DATA_EMAIL = """<mjml><mj-body><mj-section><mj-column>
  <mj-text>Hello {{ lead.first_name }} of {{ lead.company }}, site {{ lead.website }}.</mj-text>
  <mj-text>Read <a href="https://acme.example/guide?for={{ lead.company }}">the guide</a>, or
    see <a href="{{ links.page('pricing') }}">pricing</a>. Docs: https://acme.example/docs</mj-text>
  <mj-button href="{{ lead.website }}">Your own site</mj-button>
  <mj-text><a href="{{ links.unsubscribe }}">Unsubscribe</a></mj-text>
</mj-column></mj-section></mj-body></mjml>
"""


def test_urls_in_a_leads_own_fields_never_become_tracked_redirects(world, tmp_path):
    """Anyone may fill in a form: a URL in their fields must not come back as a redirect on
    our tracking domain, in either part. The asset's own links are still tracked."""
    _launched_program(world, tmp_path / "acme-lead-data",
                      _one_email_yaml("acme-lead-data", "hello", "Hello {{ lead.first_name }}"),
                      {"hello.mjml": LEAD_DATA_EMAIL})
    email = deliver(world, program="acme-lead-data", first_name="https://evil.example/first",
                    company="https://evil.example/company", website="https://evil.example/site")
    html, plain, destinations = email.html, email.text, email.stored
    assert destinations[0] == "https://acme.example/guide?for=https://evil.example/company"
    assert destinations[1].startswith(f"{BASE_URL}/p/acme-lead-data/pricing?t=")
    assert destinations[2:] == ["https://acme.example/docs"]
    for part in (plain, html):
        for name in ("first", "company", "site"):
            assert f"https://evil.example/{name}" in part
        for token in re.findall(r"/c/([\w.-]+)", part):
            assert verify(SECRET, "click", token)["n"] in (HONEYPOT, 0, 1, 2)
    assert 'href="https://evil.example/site"' in html  # the lead's own site: direct, untracked
    for n, url in enumerate(destinations):
        token = click_token(SECRET, lead_id=email.lead_id, outbox_id=email.outbox_id, index=n,
                            url=url)
        assert f"{BASE_URL}/c/{token}" in plain


# -- the event buffer -------------------------------------------------------------------------

def test_events_wait_in_the_buffer_and_are_stored_exactly_once(world):
    email = deliver(world)
    get(world, email.pixel, at=LATER)
    get(world, email.clicks[1], at=LATER + timedelta(minutes=1))
    get(world, email.view, at=LATER + timedelta(minutes=2))
    assert world.buffer.pending() == 3
    assert tracked(world, email.lead_id) == []  # the request only pushed it
    raw = world.buffer.redis.lrange(world.buffer.key, 0, -1)
    assert drain(world) == 3
    stored = tracked(world, email.lead_id)
    assert [e.kind for e in stored] == ["open", "click", "view"]
    awarded = scores(world, email.lead_id)
    assert drain(world) == 0 and world.buffer.pending() == 0
    # a drainer that died after storing, before trimming, leaves the batch to be drained again
    world.buffer.redis.rpush(world.buffer.key, *raw)
    assert drain(world) == 3
    assert [e.id for e in tracked(world, email.lead_id)] == [e.id for e in stored]
    assert scores(world, email.lead_id) == awarded
    assert len(responses(world, email.lead_id)) == 3


def test_malformed_buffered_items_are_skipped_without_losing_the_good_ones(world):
    email = deliver(world)

    def event(**changes) -> bytes:
        item = new_event("open", lead_id=email.lead_id, outbox_id=email.outbox_id, at=LATER,
                         user_agent=BROWSER, ip=PERSON_IP)
        item.update(changes)
        return json.dumps({k: v for k, v in item.items() if v != "DROP"}).encode()

    good_first = event(kind="click", n=1, url=email.stored[1])
    good_last = event(at=(LATER + timedelta(minutes=5)).isoformat())
    malformed = [
        b"not json", b"", b"\xff\xfe", b"[1, 2, 3]", b'"a string"', b"null", b"{}",
        event(kind="purchase"), event(kind="DROP"), event(k="DROP"), event(k=""),
        event(k="x" * 41), event(k=5), event(l="DROP"), event(l="1"), event(l=0), event(l=-1),
        event(l=True), event(l=2**31 - 1), event(l=1.5), event(o="7"), event(o=2**40),
        event(at="DROP"), event(at="yesterday"), event(at=5),
    ]
    world.buffer.redis.rpush(world.buffer.key, good_first, *malformed, good_last)
    assert drain(world) == len(malformed) + 2
    assert world.buffer.pending() == 0
    assert [(e.kind, e.at) for e in tracked(world, email.lead_id)] == [
        ("click", LATER), ("open", LATER + timedelta(minutes=5))]


@pytest.mark.parametrize("changes", [{"ua": 123}, {"at": "2026-11-02T09:00:00"}],
                         ids=["ua-not-a-string", "naive-time"])
def test_a_type_confused_buffered_item_does_not_block_the_buffer(world, changes):
    email = deliver(world)
    bad = new_event("click", lead_id=email.lead_id, outbox_id=email.outbox_id, at=LATER,
                    user_agent=BROWSER, link_index=1, url=email.stored[1])
    bad.update(changes)
    good = new_event("open", lead_id=email.lead_id, outbox_id=email.outbox_id,
                     at=LATER + timedelta(minutes=1), user_agent=BROWSER)
    world.buffer.redis.rpush(world.buffer.key, json.dumps(bad), json.dumps(good))
    try:
        drain(world)
    finally:
        pending = world.buffer.pending()
        world.buffer.redis.delete(world.buffer.key)
    assert pending == 0
    assert "open" in [e.kind for e in tracked(world, email.lead_id)]


def test_when_redis_is_unreachable_the_request_answers_and_the_event_is_stored(world):
    email = deliver(world)
    url = str(world.app.extensions["nurture.settings"].database_url)
    settings = Settings(instance_path=world.tmp / "instance-redis-down", database_url=url,
                        redis_url=f"redis://127.0.0.1:{free_port()}/0", secret_key=SECRET,
                        base_url=BASE_URL)
    clock = Clock()
    app = create_app(settings, clock=clock)
    client = app.test_client()
    try:
        started = time.perf_counter()
        clock.now = LATER
        click = client.get(email.clicks[1], headers={"User-Agent": BROWSER},
                           environ_base={"REMOTE_ADDR": PERSON_IP})
        clock.now = LATER + timedelta(minutes=1)
        pixel = client.get(email.pixel, headers={"User-Agent": BROWSER},
                           environ_base={"REMOTE_ADDR": PERSON_IP})
        clock.now = LATER + timedelta(minutes=2)
        scanner = client.get(email.clicks[0], headers={"User-Agent": "python-requests/2.31"})
        elapsed = time.perf_counter() - started
    finally:
        app.extensions["nurture.db"].dispose()
    assert click.status_code == 302 and click.headers["Location"] == email.stored[1]
    assert pixel.status_code == 200 and pixel.data == PIXEL
    assert scanner.headers["Location"] == email.stored[0]
    assert elapsed < 5
    stored = tracked(world, email.lead_id)  # in the database already, no drain needed
    assert [(e.kind, e.bot) for e in stored] == [("click", False), ("open", False),
                                                 ("click", True)]
    assert [kind for kind, *_ in scores(world, email.lead_id)] == ["click", "open"]
    assert world.buffer.pending() == 0


# -- mail scanners and bots, end to end ------------------------------------------------------

@pytest.mark.parametrize("agent", ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) Barracuda",
                                   "python-requests/2.31", ""])
def test_a_scanner_user_agent_gets_the_redirect_but_counts_for_nothing(world, agent):
    email = deliver(world)
    response = get(world, email.clicks[1], agent=agent)
    assert response.headers["Location"] == email.stored[1]  # scanning must not break links
    drain(world)
    [event] = tracked(world, email.lead_id)
    if agent:
        assert event.bot_reason.startswith("scanner or preview user agent")
    else:
        assert event.bot_reason == "no user agent"
    assert_not_a_person(world, email, event)


def test_a_click_seconds_after_delivery_is_a_scanner(world):
    email = deliver(world)
    response = get(world, email.clicks[1], at=MONDAY + timedelta(seconds=3))
    assert response.headers["Location"] == email.stored[1]
    drain(world)
    [event] = tracked(world, email.lead_id)
    assert event.bot_reason == "clicked 3 s after delivery"
    assert_not_a_person(world, email, event)


def test_a_click_ten_seconds_after_delivery_is_a_person(world):
    email = deliver(world)
    get(world, email.clicks[1], at=MONDAY + timedelta(seconds=10))
    drain(world)
    [event] = tracked(world, email.lead_id)
    assert event.bot is False
    assert responses(world, email.lead_id) == [("clicked", "welcome_it")]


def test_a_second_link_clicked_within_seconds_is_a_scanner(world):
    email = deliver(world)
    get(world, email.clicks[0], at=LATER)
    get(world, email.clicks[1], at=LATER + timedelta(seconds=2))
    drain(world)
    _, second = tracked(world, email.lead_id)
    assert second.bot is True
    assert second.bot_reason == "several links of one email clicked within seconds"
    assert all(tracking_id != second.id for *_, tracking_id in scores(world, email.lead_id))
    assert len(responses(world, email.lead_id)) <= 1  # the second click is no response


def test_the_same_link_clicked_twice_within_seconds_is_a_person(world):
    email = deliver(world)
    get(world, email.clicks[1], at=LATER)
    get(world, email.clicks[1], at=LATER + timedelta(seconds=1))
    drain(world)
    assert [e.bot for e in tracked(world, email.lead_id)] == [False, False]


def test_a_scanner_clicking_every_link_at_once_counts_for_nothing(world):
    """Its first click too: the drainer judges it with the rest of the burst in view."""
    email = deliver(world)
    for n in range(len(email.stored)):
        get(world, email.clicks[n], at=LATER + timedelta(milliseconds=300 * n))
    drain(world)
    events = tracked(world, email.lead_id)
    assert len(events) == 3 and all(e.bot for e in events)
    assert {e.bot_reason for e in events} == {"several links of one email clicked within seconds"}
    assert_not_a_person(world, email, events[0])


def test_each_send_keeps_what_its_recipient_and_the_machines_did(world):
    """The engagement report reads these figures from the send, not from its events."""
    email = deliver(world)

    def figures():
        with world.db.session() as s:
            row = s.get(SentEmail, email.outbox_id)
            return row.opened, row.clicked, row.bot_opens, row.bot_clicks

    get(world, email.clicks[1], at=MONDAY + timedelta(seconds=3))  # a scanner's click
    get(world, email.pixel, agent="Mozilla/5.0", ip="17.58.101.12")  # Apple's prefetch
    drain(world)
    assert figures() == (False, False, 1, 1)
    get(world, email.clicks[1], at=LATER)  # a person's click: an open too (images blocked)
    get(world, email.clicks[1], at=LATER + timedelta(seconds=1))
    drain(world)
    assert figures() == (True, True, 1, 1)


@pytest.mark.xfail(strict=True, reason=(
    "bug: tracking.service._store judges a click once, with the clicks already stored and "
    "those of its own batch: when a drain (or the direct store while Redis is down) falls "
    "inside a scanner's burst, its first click scores and counts as a response for good"))
def test_a_scanner_burst_split_across_two_drains_counts_for_nothing(world):
    email = deliver(world)
    get(world, email.clicks[0], at=LATER)
    drain(world)
    get(world, email.clicks[1], at=LATER + timedelta(milliseconds=300))
    drain(world)
    assert [e.bot for e in tracked(world, email.lead_id)] == [True, True]
    assert scores(world, email.lead_id) == []
    assert sends_without_response(world, email.lead_id) == 1


def test_a_scanner_following_the_pricing_link_does_not_score_the_pricing_page(world):
    email = deliver(world)
    at = MONDAY + timedelta(seconds=2)
    location = get(world, email.clicks[2], at=at).headers["Location"]
    target = urlsplit(location)
    assert get(world, f"{target.path}?{target.query}", at=at).status_code == 200
    drain(world)
    assert [e.kind for e in tracked(world, email.lead_id)] == ["click", "page_view"]
    assert all(e.bot for e in tracked(world, email.lead_id))
    assert scores(world, email.lead_id) == []


# -- landing pages ----------------------------------------------------------------------------

def pricing_visit(world: World, email: Email) -> None:
    at = MONDAY + timedelta(minutes=2)
    location = get(world, email.clicks[2], at=at).headers["Location"]
    target = urlsplit(location)
    assert (target.path, target.query) == ("/p/acme-nurture/pricing",
                                           "t=" + page_token(secret_key=SECRET,
                                                             lead_id=email.lead_id))
    visit = get(world, f"{target.path}?{target.query}", at=at + timedelta(seconds=3))
    assert visit.status_code == 200 and "Pricing" in visit.text
    drain(world)


def test_a_visit_from_the_emails_pricing_link_is_a_page_view_that_scores_the_pricing_page(world):
    email = deliver(world)
    pricing_visit(world, email)
    click, visit = tracked(world, email.lead_id)
    assert (click.kind, click.bot, visit.kind, visit.bot) == ("click", False, "page_view", False)
    assert visit.outbox_id is None and visit.ip == PERSON_IP
    assert responses(world, email.lead_id) == [("clicked", "welcome_it"),
                                               ("page_viewed", "pricing")]
    assert scores(world, email.lead_id) == [
        ("click", 10.0, "click: +10", click.id), ("page_view", 3.0, "page_view: +3", visit.id),
        ("page_view", 20.0, "page pricing: +20", visit.id)]
    assert behaviour_score(world, email.lead_id) == pytest.approx(33, abs=0.01)


def test_the_stored_page_view_names_the_page_visited_without_the_token(world):
    from engine.sales.queue import timeline_entries

    email = deliver(world)
    pricing_visit(world, email)
    visit = tracked(world, email.lead_id)[-1]
    assert visit.url == "/p/acme-nurture/pricing"  # not the lead's personal ?t= token
    with world.db.session() as s:
        assert "pricing" in timeline_entries(s, email.lead_id)[-1]["what"]


def test_a_page_visit_without_a_valid_token_records_nothing(world):
    email = deliver(world)
    good = page_token(secret_key=SECRET, lead_id=email.lead_id)
    for query in ("", "?t=", "?t=garbage", f"?t={good[:-2]}AA",
                  f"?t={page_token(secret_key='x', lead_id=email.lead_id)}",
                  f"?t={email.clicks[1][3:]}", f"?t={email.view[3:]}"):
        assert get(world, f"/p/acme-nurture/pricing{query}").status_code == 200, query
    assert world.buffer.pending() == 0
