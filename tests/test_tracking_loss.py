"""The tracking loss test (issue 5): an open, view or click the web process answered is stored
exactly once, even when the web process is killed right after answering, when Redis is down,
and when the drainer dies between storing a batch and trimming it from the buffer.

The app runs under gunicorn as a subprocess against a Redis server of its own; emails are
delivered through the real sink and their links fetched over HTTP as a browser would. One
gunicorn serves both the Redis-down and the SIGKILL phases: starting it costs seconds.
A last test: with Redis hung, the endpoints still answer within a second.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis as redis_lib
from launching import launch_all
from redis_server import RedisServer
from sqlalchemy import func, select

from engine.config import Settings
from engine.db import Database
from engine.flows.leads import upsert_lead
from engine.flows.tracking import drain_buffer, store_events
from engine.programs.service import load_program
from engine.scoring.models import ScoreEvent
from engine.sending.compose import Signing
from engine.sending.delivery import DeliveryOptions, deliver_due
from engine.sending.inbox import read_message
from engine.sending.models import OutboxMessage
from engine.sending.sink import Sink, free_port
from engine.tracking.buffer import EventBuffer
from engine.tracking.models import TrackingEvent
from engine.tracking.service import new_event
from engine.tracking.tokens import send_token, verify
from engine.web.app import create_app
from engine.web.recorder import REDIS_BYPASS

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_PROGRAM = ROOT / "assets" / "acme-nurture"
BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
           "(KHTML, like Gecko) Version/17.4 Safari/605.1.15")
TITLES = ("CIO", "CFO", "IT director")

Key = tuple[int, str, int | None, str | None]  # outbox id, kind, link index, url


class Gunicorn:
    """`gunicorn -w 2 wsgi:app` in a process group of its own, so that one SIGKILL takes the
    master and its workers down at once, as a crashed or OOM-killed host would."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "gunicorn"), "-w", "2",
                 "-b", f"127.0.0.1:{self.port}", "--no-control-socket", "wsgi:app"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                # A bad open token: a pixel that records nothing.
                if self.get("/o/not-a-token.gif").status == 200:
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"gunicorn did not start:\n{self.log.read_text(errors='replace')}")
            time.sleep(0.05)

    def get(self, path: str) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path, headers={"User-Agent": BROWSER,
                                                     "Accept": "text/html,image/*"})
            response = connection.getresponse()
            response.read()
            return response
        finally:
            connection.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@dataclass
class SentEmail:
    lead_id: int
    outbox_id: int
    links: list[str]  # the destinations stored on the outbox row at send time
    opens: list[str] = field(default_factory=list)  # paths of the open pixel
    views: list[str] = field(default_factory=list)  # view in browser
    clicks: dict[int, str] = field(default_factory=dict)  # link index -> /c/ path


class _TrackedUrls(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("aria-hidden") == "true":
            return  # the honeypot: a person never sees it
        url = values.get("href") if tag == "a" else values.get("src") if tag == "img" else None
        if url:
            self.urls.append(urlsplit(url).path)


def _past_monday_morning() -> datetime:
    """A time in the sample program's send window, over a week ago: clicks made now are long
    after delivery, so the bot filter's "clicked seconds after delivery" rule does not apply."""
    now = datetime.now(UTC)
    monday = now - timedelta(days=7 + now.weekday())
    return monday.replace(hour=10, minute=0, second=0, microsecond=0)  # 11:00 in Paris


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop_for_good()


@pytest.fixture
def app(env: dict[str, str], redis_server: RedisServer, tmp_path: Path) -> Iterator[Gunicorn]:
    """The app under gunicorn, booting while the test's other fixtures deliver its emails."""
    server = Gunicorn({**os.environ, **env, "REDIS_URL": redis_server.url,
                       "NURTURE_BASE_URL": "http://nurture.test"}, tmp_path / "gunicorn.log")
    yield server
    server.kill()


@pytest.fixture
def sent_emails(db: Database, env: dict[str, str], tmp_path: Path) -> list[SentEmail]:
    """One email delivered to each of three leads through the sink, with its tracked paths."""
    sent_at = _past_monday_morning()
    with db.session() as s:
        load_program(session=s, directory=SAMPLE_PROGRAM, now=sent_at - timedelta(hours=1))
        launch_all(s)
        for n, title in enumerate(TITLES):
            upsert_lead(session=s, fields={"email": f"lead{n}@globex.example", "title": title},
                        now=sent_at, actor="test", program="acme-nurture")
    with Sink(tmp_path / "sink") as sink, sink.transport() as transport:
        report = deliver_due(db=db, transport=transport, worker="w", clock=lambda: sent_at,
                             options=DeliveryOptions(signing=Signing(
                                 secret_key=env["SECRET_KEY"], base_url="http://nurture.test")))
        assert report.counts == {"sent": len(TITLES)}
        bodies = [read_message(sink.directory, stored).get_body(("html",)).get_content()
                  for stored in sink.messages()]
    emails = []
    with db.session() as s:
        rows = {row.id: row for row in s.scalars(select(OutboxMessage))}
    for body in bodies:
        parser = _TrackedUrls()
        parser.feed(body)
        email = None
        for path in parser.urls:
            kind, _, token = path.strip("/").partition("/")
            if kind == "c":
                payload = verify(env["SECRET_KEY"], "click", token)
                email = email or _email_for(rows[payload["o"]])
                email.clicks.setdefault(payload["n"], path)
            elif kind in ("o", "v"):
                purpose = "open" if kind == "o" else "view"
                payload = verify(env["SECRET_KEY"], purpose, token.removesuffix(".gif"))
                email = email or _email_for(rows[payload["o"]])
                (email.opens if kind == "o" else email.views).append(path)
        assert email is not None and email.opens and email.views and len(email.clicks) >= 2
        emails.append(email)
    return emails


def _email_for(row: OutboxMessage) -> SentEmail:
    return SentEmail(lead_id=row.lead_id, outbox_id=row.id, links=list(row.links))


def _fetch_as_a_reader(app: Gunicorn, emails: list[SentEmail]) -> Counter[Key]:
    """Per email: opens it twice, views it in the browser, clicks one of its links twice (two
    links of one email clicked within seconds would look like a scanner). Checks every answer
    and returns what should be stored, one entry per answered request."""
    answered: Counter[Key] = Counter()
    for n, email in enumerate(emails):
        for _ in range(2):
            response = app.get(email.opens[0])
            assert response.status == 200 and response.getheader("Content-Type") == "image/gif"
            answered[email.outbox_id, "open", None, None] += 1
        response = app.get(email.views[0])
        assert response.status == 200 and "text/html" in response.getheader("Content-Type")
        answered[email.outbox_id, "view", None, None] += 1
        index = sorted(email.clicks)[n % len(email.clicks)]  # a different link per email
        for _ in range(2):
            response = app.get(email.clicks[index])
            assert response.status == 302
            assert response.getheader("Location") == email.links[index]
            answered[email.outbox_id, "click", index, email.links[index]] += 1
    return answered


def _stored(db: Database) -> Counter[Key]:
    with db.session() as s:
        return Counter(tuple(row) for row in s.execute(select(
            TrackingEvent.outbox_id, TrackingEvent.kind, TrackingEvent.link_index,
            TrackingEvent.url)))


def _flagged_as_bots(db: Database) -> list[str | None]:
    with db.session() as s:
        return list(s.scalars(select(TrackingEvent.bot_reason).where(TrackingEvent.bot)))


def _score_events(db: Database) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(ScoreEvent))


def test_answered_requests_are_stored_once_with_redis_down_and_after_a_sigkill(
        db, redis_server, app, sent_emails):
    app.wait_until_serving()
    try:
        # Redis down: the web process stores each event itself before it answers.
        redis_server.stop()
        direct = _fetch_as_a_reader(app, sent_emails)
        assert _stored(db) == direct
        # Redis back (and the recorder's short bypass after a failure over): events go to the
        # buffer, and the app dies right after the last answer (no graceful shutdown, no
        # flush), as an OOM-killed host would.
        redis_server.start()
        time.sleep(REDIS_BYPASS + 0.2)
        buffered = _fetch_as_a_reader(app, sent_emails)
    finally:
        app.kill()

    buffer = EventBuffer(redis_lib.Redis.from_url(redis_server.url))
    answered = buffered.total()
    assert answered == 15 and buffer.pending() == answered
    assert _stored(db) == direct  # nothing stored in between: the buffered events wait in Redis
    assert drain_buffer(db=db, buffer=buffer, batch=4) == answered  # batches across emails
    assert _stored(db) == direct + buffered
    assert _flagged_as_bots(db) == []  # a person's requests: they score
    assert buffer.pending() == 0
    scored = _score_events(db)
    assert scored > 0

    assert drain_buffer(db=db, buffer=buffer) == 0
    assert _stored(db) == direct + buffered and _score_events(db) == scored


def test_a_drainer_that_dies_after_storing_stores_nothing_twice(
        db, sent_emails, redis_server):
    buffer = EventBuffer(redis_lib.Redis.from_url(redis_server.url))
    now = datetime.now(UTC)
    events = []
    for email in sent_emails:
        events.append(new_event("open", lead_id=email.lead_id, outbox_id=email.outbox_id, at=now,
                                user_agent=BROWSER, ip="192.0.2.1"))
        events.append(new_event("click", lead_id=email.lead_id, outbox_id=email.outbox_id,
                                link_index=0, url=email.links[0], at=now, user_agent=BROWSER,
                                ip="192.0.2.1"))
    for event in events:
        buffer.push(event)
    expected = Counter((e["o"], e["kind"], e["n"], e["url"]) for e in events)

    def store_then_die(batch: list[dict]) -> None:
        with db.session() as session:
            store_events(session=session, events=batch)
        raise RuntimeError("drainer killed after its commit, before trimming the buffer")

    with pytest.raises(RuntimeError, match="drainer killed"):
        buffer.drain(store_then_die, batch=4)
    assert _stored(db) == Counter((e["o"], e["kind"], e["n"], e["url"]) for e in events[:4])
    assert buffer.pending() == len(events)  # nothing trimmed: the batch is replayed

    assert drain_buffer(db=db, buffer=buffer, batch=4) == len(events)  # the lock was released
    assert _stored(db) == expected and buffer.pending() == 0
    scored = _score_events(db)
    assert scored > 0
    with db.session() as session:  # the whole lot once more, as a second drainer would
        assert store_events(session=session, events=events) == 0
    assert _stored(db) == expected and _score_events(db) == scored


def test_the_pixel_answers_within_a_second_while_redis_hangs(tmp_path, sqlite_template):
    hole = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    database = tmp_path / "nurture.db"
    shutil.copy(sqlite_template, database)
    settings = Settings.from_env({
        "DATABASE_URL": f"sqlite:///{database}", "NURTURE_INSTANCE": str(tmp_path / "instance"),
        "SECRET_KEY": "test-secret", "REDIS_URL": f"redis://127.0.0.1:{hole.getsockname()[1]}/0"})
    app = create_app(settings)
    token = send_token("test-secret", "open", lead_id=1, outbox_id=1)
    statuses: list[int] = []

    def fetch() -> None:
        response = app.test_client().get(f"/o/{token}.gif", headers={"User-Agent": BROWSER})
        statuses.append(response.status_code)

    request = threading.Thread(target=fetch, daemon=True)
    request.start()
    request.join(1.0)
    answered_within_a_second = not request.is_alive()
    hole.close()  # resets the waiting connection, so a request still waiting ends now
    request.join(10)
    app.extensions["nurture.db"].dispose()
    assert statuses == [200]  # it does answer, and stores the event directly, but late
    assert answered_within_a_second
