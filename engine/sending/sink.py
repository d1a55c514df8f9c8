"""A local SMTP sink on aiosmtpd: accepts every message and stores it on disk.

    with Sink(tmp_path / "sink") as sink:            # a free port on 127.0.0.1
        transport = sink.transport()
        ...
        assert sink.messages()[0].subject == "Hello"

Each message is written to a temporary file, synced, renamed to `NNNNNN-xxxxxxxx.eml` (so a
reader never sees half a message) and the directory synced; then its line is appended to
`index.jsonl` and synced (see engine.sending.inbox), and only then does the sink answer 250.
Readers see indexed messages only. The stored file starts with the sink's own Return-Path and
Received lines, followed by the message exactly as received.

A message that cannot be stored is answered with a temporary reply, never a 5xx (which tells
the sender to drop the message): `452 4.3.1` when the disk or quota is full (ENOSPC, EDQUOT),
`451 4.3.0` for any other storage error or a bug of ours; the sender retries later. Nothing of
it stays visible: the temporary file is removed, a partly written index line is cut off, and a
message whose index line failed has its file removed again. If the index line cannot be cut
off either (a second failure), the file is kept so that no index entry lacks its file; the
sender's retry may then store it twice. After a crash between the rename and the index line,
the `.eml` file is an orphan that readers never see (the sender got no 250 and sends again);
leftover temporary files are removed when the sink starts.

No recipient is refused by default. For tests, `replies` answers a fixed SMTP reply at RCPT for
matching recipients: {"bounce@": "550 5.1.1 No such user", "later@example.com": "451 4.3.0
Try later", "@throttled.example": "421 4.7.28 Slow down"}. A key is a full address, a local
part ending in "@" or a domain starting with "@".
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import socket
import ssl
import threading
import uuid
import weakref
from datetime import UTC, datetime
from email import policy
from email.parser import BytesHeaderParser
from email.utils import format_datetime
from pathlib import Path
from typing import Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from engine.sending.inbox import INDEX_NAME, StoredMessage, list_messages

log = logging.getLogger(__name__)

SERVER_NAME = "nurture-sink"
INSUFFICIENT_STORAGE = "452 4.3.1 Insufficient system storage"
LOCAL_ERROR = "451 4.3.0 Local error in processing"
_STORAGE_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_REPLY = re.compile(r"^[2-5]\d\d( .*)?$")
_HEADER_END = b"\r\n\r\n"


def parse_reply_rule(rule: str) -> tuple[str, str]:
    """'bounce@=550 5.1.1 No such user' -> ('bounce@', '550 5.1.1 No such user')."""
    pattern, sep, reply = rule.partition("=")
    pattern, reply = pattern.strip().lower(), reply.strip()
    if not sep or "@" not in pattern or not _REPLY.match(reply):
        raise ValueError(f"expected PATTERN=CODE TEXT (e.g. bounce@=550 5.1.1 No such user), "
                         f"got {rule!r}")
    return pattern, reply


def storage_reply(exc: OSError) -> str:
    """The temporary SMTP reply for a message that could not be stored."""
    return INSUFFICIENT_STORAGE if exc.errno in _STORAGE_FULL else LOCAL_ERROR


class MessageStore:
    """Writes messages and their index entries durably; one writer per directory.

    `add` raises OSError when the message could not be stored, leaving nothing of it visible
    to readers (see the module docstring)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(".*.tmp"):  # a crash in the middle of a write
            _remove(leftover)
        existing = list_messages(self.directory)
        self._seq = existing[-1].seq if existing else 0
        self._lock = threading.Lock()

    def add(self, *, mail_from: str, rcpt_tos: list[str], content: bytes,
            peer: str = "") -> StoredMessage:
        now = datetime.now(UTC)
        headers = BytesHeaderParser(policy=policy.default).parsebytes(
            content.split(_HEADER_END, 1)[0] + _HEADER_END)
        with self._lock:
            seq = self._seq + 1
            name = f"{seq:06d}-{uuid.uuid4().hex[:8]}.eml"
            trace = (f"Return-Path: <{mail_from}>\r\n"
                     f"Received: from {peer or 'unknown'} by {SERVER_NAME} with SMTP;\r\n"
                     f" {format_datetime(now)}\r\n").encode("utf-8", "replace")
            stored = StoredMessage(
                seq=seq, file=name, received_at=now.isoformat(timespec="microseconds"),
                mail_from=mail_from, rcpt_tos=tuple(rcpt_tos),
                subject=_header(headers, "Subject"), message_id=_header(headers, "Message-ID"),
                size=len(content), peer=peer)
            path = self.directory / name
            self._write_file(path, trace + content)
            try:
                self._append_index((stored.to_json() + "\n").encode("utf-8"))
            except _IndexTorn:
                self._seq = seq  # its line may be readable: keep the file and the number
                raise
            except BaseException:
                _remove(path)
                raise
            self._seq = seq
        return stored

    def _write_file(self, path: Path, data: bytes) -> None:
        """Write to a temporary file, sync it, rename it into place and sync the directory."""
        temporary = path.with_name(f".{path.name}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                _close(fd)
            os.replace(temporary, path)
            _sync_directory(self.directory)
        except BaseException:
            _remove(temporary)
            _remove(path)
            raise

    def _append_index(self, line: bytes) -> None:
        """Append one line and sync it. On failure the index is cut back to its previous end, so
        no partial line stays; if even that fails, raises _IndexTorn."""
        fd = os.open(self.directory / INDEX_NAME,
                     os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            if end and os.pread(fd, 1, end - 1) != b"\n":
                line = b"\n" + line  # a torn last line (a crash): keep ours readable
            try:
                _write_all(fd, line)
                os.fsync(fd)
                if not end:
                    _sync_directory(self.directory)  # the index file was just created
            except OSError as exc:
                try:
                    os.ftruncate(fd, end)
                except OSError:
                    raise _IndexTorn(exc.errno, exc.strerror) from exc
                raise
        finally:
            _close(fd)


class _IndexTorn(OSError):
    """The index append failed and its partial line could not be cut off."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _sync_directory(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        _close(fd)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass  # after fsync there is nothing left to report; before it, an error is in flight


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # cleaning up after a storage error: readers do not see this file anyway


def _header(headers, name: str) -> str:
    try:
        value = headers.get(name)
    except Exception:  # noqa: BLE001 - a malformed header must not lose the message
        return ""
    return " ".join(str(value).split()) if value is not None else ""


class SinkHandler:
    """aiosmtpd handler: stores every message; counts connections; optional fixed replies."""

    def __init__(self, store: MessageStore, replies: dict[str, str] | None = None) -> None:
        self.store = store
        self.replies = {}
        for pattern, reply in (replies or {}).items():
            pattern, reply = parse_reply_rule(f"{pattern}={reply}")
            self.replies[pattern] = reply
        self.connections = 0
        self.received = 0
        self.deferred = 0  # messages answered 4xx because they could not be stored
        self.noops = 0

    def reply_for(self, address: str) -> str | None:
        address = address.lower()
        local, _, domain = address.rpartition("@")
        for key in (address, f"{local}@", f"@{domain}"):
            if key in self.replies:
                return self.replies[key]
        return None

    async def handle_RCPT(self, server: SMTPServer, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        reply = self.reply_for(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_NOOP(self, server: SMTPServer, session: Session, envelope: Envelope,
                          arg: str) -> str:
        self.noops += 1
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session,
                          envelope: Envelope) -> str:
        """250 once the message is stored and synced; a temporary reply when it is not.

        Every failure is answered here: an exception escaping to aiosmtpd would be answered
        "500 Error: ..." (the sender drops the message) and leave the session's state behind."""
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer or "")
        try:
            stored = self.store.add(mail_from=envelope.mail_from or "",
                                    rcpt_tos=list(envelope.rcpt_tos),
                                    content=envelope.original_content or b"", peer=peer)
        except OSError as exc:
            self.deferred += 1
            log.warning("not stored (sender will retry): %s from %s: %s",
                        envelope.mail_from, peer, exc)
            return storage_reply(exc)
        except Exception:  # a bug of ours: the sender keeps the message and retries
            self.deferred += 1
            log.exception("not stored (sender will retry): %s from %s", envelope.mail_from, peer)
            return LOCAL_ERROR
        self.received += 1
        return f"250 2.0.0 OK stored as {stored.seq}"

    async def handle_exception(self, error: Exception) -> str:
        """Any other command that fails: aiosmtpd's default would be a 5xx."""
        log.exception("SMTP session error", exc_info=error)
        return LOCAL_ERROR


class _Authenticator:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def __call__(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword)
              and self.users.get(auth_data.login.decode("utf-8", "replace"))
              == auth_data.password.decode("utf-8", "replace"))
        return AuthResult(success=ok, handled=False)


class _Controller(Controller):
    """Counts connections and remembers them, so stopping the sink closes them."""

    def __init__(self, handler: SinkHandler, **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self.servers: weakref.WeakSet[SMTPServer] = weakref.WeakSet()

    def factory(self) -> SMTPServer:
        server = super().factory()
        self.servers.add(server)
        self.handler.connections += 1
        return server

    def close_connections(self) -> None:
        async def close_all() -> None:
            for server in list(self.servers):
                if server.transport is not None:
                    server.transport.close()

        try:
            asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(timeout=5)
        except (RuntimeError, TimeoutError):
            pass  # the loop is already gone


class Sink:
    """The local SMTP sink. port=0 picks a free port (kept across stop/start).

    For testing TLS and AUTH: `tls` (a server SSLContext) offers STARTTLS and requires it, or
    with `implicit_tls` serves TLS from the first byte (smtps); `users` ({login: password})
    requires AUTH (PLAIN or LOGIN, over TLS only when `tls` is set).
    """

    def __init__(self, directory: Path | str, host: str = "127.0.0.1", port: int = 0, *,
                 replies: dict[str, str] | None = None, tls: ssl.SSLContext | None = None,
                 implicit_tls: bool = False, users: dict[str, str] | None = None) -> None:
        self.directory = Path(directory)
        self.host = host
        self.port = port or free_port(host)
        self.handler = SinkHandler(MessageStore(self.directory), replies)
        self._options: dict = {}
        if tls is not None and implicit_tls:
            self._options["ssl_context"] = tls
        elif tls is not None:
            self._options.update(tls_context=tls, require_starttls=True)
        if users:
            self._options.update(authenticator=_Authenticator(users), auth_required=True,
                                 auth_require_tls=tls is not None)
        self._controller: _Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._controller is not None

    @property
    def connections(self) -> int:
        """Client connections accepted so far (across restarts)."""
        return self.handler.connections

    def start(self) -> Sink:
        if self._controller is not None:
            return self
        controller = _Controller(self.handler, hostname=self.host, port=self.port,
                                 server_hostname=SERVER_NAME, ready_timeout=10,
                                 decode_data=False, **self._options)
        _check_free(self.host, self.port)  # aiosmtpd would only time out after ready_timeout
        before = self.handler.connections
        controller.start()
        self.handler.connections = before  # start() opens one probe connection of its own
        self._controller = controller
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.close_connections()
            controller.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def messages(self, *, to: str | None = None) -> list[StoredMessage]:
        return list_messages(self.directory, to=to)

    def transport(self, **options):
        from engine.sending.smtp import SMTPTransport

        return SMTPTransport(host=self.host, port=self.port, **options)


def _check_free(host: str, port: int) -> None:
    """Raise OSError (EADDRINUSE) now if another server listens on host:port."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
