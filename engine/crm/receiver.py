"""A reference CRM webhook receiver, for the demo and the tests (`nurture crm receiver`).

    with Receiver(tmp_path / "crm", secret="s3cret") as receiver:   # a free port on 127.0.0.1
        ... deliver to receiver.url ...
        assert [r.event_type for r in receiver.received()] == ["lead_created", "stage_change"]

Like the SMTP sink (engine/sending/sink.py) it stores what it receives before it answers:
every request is one line of `received.jsonl` in its directory (written and synced, then
answered), with the answer it got, whether its X-Nurture-Signature checked out, its
Idempotency-Key, and whether an earlier request accepted that key already (`duplicate`; it is
accepted again, as an idempotent CRM would). Read them with `received(...)` or
`nurture crm received`.

A request whose signature does not check out (with a secret given) is answered 401, and a
body over MAX_BODY 413. Otherwise the answer is 200 unless configured failures say otherwise
(`Answers`): the first K requests answered a status (--fail-first), a scripted sequence of
answers (--status 503 --status 429 ...), or a random share of them (--fail-rate, seeded). A
scripted answer may also be `hang` (store it, then answer only after `hang_seconds`: the
sender times out though the event arrived) or `close` (drop the connection unanswered,
nothing stored).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

from engine.crm.webhook import ATTEMPT_HEADER, EVENT_HEADER, IDEMPOTENCY_HEADER
from engine.errors import Unauthorized
from engine.sending.sink import free_port
from engine.signatures import SIGNATURE_HEADER, verify_signature

RECEIVED_NAME = "received.jsonl"
MAX_BODY = 1024 * 1024
HANG, CLOSE = "hang", "close"


@dataclass(frozen=True)
class Received:
    seq: int  # 1, 2, 3... in order of arrival
    received_at: str  # ISO 8601, UTC
    answered: int  # the status answered (0: the connection was closed unanswered)
    verified: bool | None  # None: no secret to check with
    idempotency_key: str
    event_type: str
    attempt: str
    duplicate: bool  # an earlier request with this key was accepted already
    body: dict | str  # the JSON body, or the text when it is not JSON
    error: str = ""  # why it was refused

    @property
    def accepted(self) -> bool:
        return 200 <= self.answered < 300

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Received:
        data = json.loads(line)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def received(directory: Path | str, *, accepted_only: bool = False,
             event_type: str | None = None) -> list[Received]:
    """What the receiver stored, oldest first."""
    path = Path(directory) / RECEIVED_NAME
    if not path.exists():
        return []
    found = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = Received.from_json(line)
            except (ValueError, TypeError):
                continue  # a torn last line after a crash: that request was not answered
            if accepted_only and not entry.accepted:
                continue
            if event_type and entry.event_type != event_type:
                continue
            found.append(entry)
    return found


def parse_answer(value: str) -> int | str:
    """`--status` values: an HTTP status (200-599), `hang` or `close`."""
    text = value.strip().lower()
    if text in (HANG, CLOSE):
        return text
    if text.isdigit() and 200 <= int(text) <= 599:
        return int(text)
    raise ValueError(f"expected an HTTP status from 200 to 599, {HANG!r} or {CLOSE!r}, "
                     f"not {value!r}")


@dataclass
class Answers:
    """The configured failures; with none, every good request gets 200."""

    script: list[int | str] = field(default_factory=list)  # answered in order, then the rest
    fail_first: int = 0  # the first K requests (after the script) answered fail_status
    fail_status: int = 503
    fail_rate: float = 0.0  # a share of the requests after those answered fail_status
    seed: int | None = None
    retry_after: str | None = None  # sent with 429 and 503 answers
    hang_seconds: float = 1.0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._count = 0

    def next(self) -> int | str:
        self._count += 1
        n = self._count
        if n <= len(self.script):
            return self.script[n - 1]
        if n <= len(self.script) + self.fail_first:
            return self.fail_status
        if self.fail_rate and self._rng.random() < self.fail_rate:
            return self.fail_status
        return 200


class _Store:
    """Appends one synced line per request; knows the keys accepted so far."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        earlier = received(directory)
        self.seq = earlier[-1].seq if earlier else 0
        self.accepted_keys = {r.idempotency_key for r in earlier if r.accepted}

    def add(self, entry: Received) -> None:
        fd = os.open(self.directory / RECEIVED_NAME,
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, (entry.to_json() + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        if entry.accepted:
            self.accepted_keys.add(entry.idempotency_key)


class Receiver:
    """The reference receiver. port=0 picks a free port. `on_request` is called with each
    stored request (the CLI prints it)."""

    def __init__(self, directory: Path | str, *, host: str = "127.0.0.1", port: int = 0,
                 secret: str | None = None, answers: Answers | None = None,
                 on_request=None) -> None:
        self.directory = Path(directory)
        self.host = host
        self.port = port or free_port(host)
        self.secret = secret
        self.answers = answers or Answers()
        self.on_request = on_request
        self._store = _Store(self.directory)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/crm/events"

    def start(self) -> Self:
        if self._server is not None:
            return self
        server = ThreadingHTTPServer((self.host, self.port), _handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"crm-receiver-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def received(self, **filters) -> list[Received]:
        return received(self.directory, **filters)

    def handle(self, headers, body: bytes | None, error: str = "") -> tuple[int | str, Received]:
        """Decide the answer to one request and store it; (answer, what was stored)."""
        verified, answer = None, None
        if body is None:
            answer = 413
        elif self.secret:
            try:
                verify_signature(secret=self.secret, header=headers.get(SIGNATURE_HEADER),
                                 body=body, now=int(time.time()))
                verified = True
            except Unauthorized as exc:
                verified, answer, error = False, 401, str(exc)
        with self._lock:
            if answer is None:
                answer = self.answers.next()
            key = headers.get(IDEMPOTENCY_HEADER) or ""
            entry = Received(
                seq=self._store.seq + 1,
                received_at=datetime.now(UTC).isoformat(timespec="microseconds"),
                answered=200 if answer == HANG else (0 if answer == CLOSE else answer),
                verified=verified, idempotency_key=key,
                event_type=headers.get(EVENT_HEADER) or "", attempt=headers.get(ATTEMPT_HEADER)
                or "", duplicate=bool(key) and key in self._store.accepted_keys,
                body=_body(body), error=error)
            if answer != CLOSE:
                self._store.add(entry)
                self._store.seq = entry.seq
        if answer != CLOSE and self.on_request:
            self.on_request(entry)
        return answer, entry


def _body(body: bytes | None) -> dict | str:
    if body is None:
        return ""
    text = body.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text[:2000]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "nurture-crm-receiver"
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length <= MAX_BODY else None
            if body is None:
                self.close_connection = True  # the body was not read
            answer, entry = receiver.handle(self.headers, body)
            if answer == CLOSE:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if answer == HANG:
                time.sleep(receiver.answers.hang_seconds)
                answer = 200
            self._answer(answer, entry)

        def do_GET(self) -> None:
            self._send(200, {"received": len(receiver.received())})

        def _answer(self, status: int, entry: Received) -> None:
            extra = {}
            if status in (429, 503) and receiver.answers.retry_after:
                extra["Retry-After"] = receiver.answers.retry_after
            if 300 <= status < 400:
                extra["Location"] = "/crm/moved"
            if status == 401:
                extra["WWW-Authenticate"] = f'HMAC-SHA256 header="{SIGNATURE_HEADER}"'
            self._send(status, {"seq": entry.seq, "duplicate": entry.duplicate,
                                **({"error": entry.error} if entry.error else {})}, extra)

        def _send(self, status: int, data: dict, headers: dict | None = None) -> None:
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args) -> None:
            pass  # the CLI prints each stored request through on_request

    return Handler
