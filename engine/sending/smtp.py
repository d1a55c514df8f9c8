"""SMTP transport over smtplib: one persistent connection per transport instance.

    transport = SMTPTransport.from_url("smtp://user:pass@mail.example.com:587?starttls=1")
    result = transport.send(message)      # SendResult; never raises for SMTP-level failures
    transport.close()

URLs: `smtp://host:25` (plain), `smtp://user:pass@host:587?starttls=1` (STARTTLS),
`smtps://user:pass@host:465` (implicit TLS). Query parameters: `starttls=1`, `timeout=SECONDS`
(default 30), `helo=NAME` (the EHLO name, default this host's FQDN).

The connection is opened on the first send and kept: a connection idle for more than
`idle_check` seconds is checked with NOOP first, a dropped one is reopened. When a reused
connection turns out to be dead before DATA started (the server closed it while we were idle),
the message is retried once on a fresh connection; after DATA started a disconnect is reported
as a temporary failure, never retried here, because the server may already have the message.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from copy import deepcopy
from email import policy
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit

from engine.config import Settings
from engine.sending.transport import (
    Outcome,
    RecipientResult,
    SendResult,
    Stage,
    Transport,
    classify,
)

DEFAULT_TIMEOUT = 30.0
IDLE_CHECK_SECONDS = 30.0
_TRUE = {"1", "true", "yes", "on"}


class _PhaseTracking:
    """Remembers whether DATA started on this connection, and DATA's reply."""

    data_started = False
    data_reply: tuple[int, str] = (250, "OK")

    def data(self, msg):
        self.data_started = True
        code, reply = super().data(msg)
        self.data_reply = (code, _text(reply))
        return code, reply


class _SMTP(_PhaseTracking, smtplib.SMTP):
    pass


class _SMTPS(_PhaseTracking, smtplib.SMTP_SSL):
    pass


class SMTPTransport:
    """Sends through one SMTP server. Thread-safe (sends are serialised on the connection);
    for parallel sending, use one transport per thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 25, *, use_ssl: bool = False,
                 starttls: bool = False, username: str | None = None,
                 password: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 local_hostname: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 idle_check: float = IDLE_CHECK_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if use_ssl and starttls:
            raise ValueError("use either implicit TLS (smtps) or STARTTLS, not both")
        self.host, self.port = host, port
        self.use_ssl, self.starttls = use_ssl, starttls
        self.username, self.password = username, password
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.ssl_context = ssl_context
        self.idle_check = idle_check
        self.connections_opened = 0
        self._clock = clock
        self._conn: _SMTP | _SMTPS | None = None
        self._last_used = 0.0
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **overrides) -> SMTPTransport:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError(f"SMTP_URL must start with smtp:// or smtps://, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"SMTP_URL has no host: {url!r}")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        use_ssl = parts.scheme == "smtps"
        starttls = query.get("starttls", "0").lower() in _TRUE
        default_port = 465 if use_ssl else (587 if starttls else 25)
        options = {
            "host": parts.hostname, "port": parts.port or default_port, "use_ssl": use_ssl,
            "starttls": starttls,
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
            "timeout": float(query.get("timeout", DEFAULT_TIMEOUT)),
            "local_hostname": query.get("helo") or None,
        }
        options.update(overrides)
        return cls(**options)

    def __repr__(self) -> str:
        scheme = "smtps" if self.use_ssl else "smtp"
        user = f"{self.username}@" if self.username else ""
        return f"<SMTPTransport {scheme}://{user}{self.host}:{self.port}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def send(self, message: EmailMessage) -> SendResult:
        from_addr, recipients = envelope(message)
        payload = _wire_bytes(message)
        with self._lock:
            for attempt in (1, 2):
                try:
                    conn, reused = self._connection()
                except (smtplib.SMTPException, OSError) as exc:
                    # Connect, EHLO, STARTTLS or AUTH failed: a problem of ours or of the
                    # server, never of the recipient, so temporary even for a 5xx reply.
                    code = getattr(exc, "smtp_code", None)
                    throttled = classify(code, _text(getattr(exc, "smtp_error", "")))[1]
                    return _unclassified(Outcome.TEMPORARY, code, _describe(exc), recipients,
                                         throttled, Stage.CONNECT)
                conn.data_started = False
                try:
                    refused = conn.sendmail(from_addr, recipients, payload,
                                            _mail_options(conn, from_addr, recipients, payload))
                except smtplib.SMTPRecipientsRefused as exc:
                    return SendResult.from_recipients(
                        _per_recipient(recipients, exc.recipients, (250, "OK")))
                except smtplib.SMTPResponseException as exc:  # MAIL FROM or DATA refused
                    stage = Stage.DATA if conn.data_started else Stage.MAIL
                    return SendResult.from_reply(exc.smtp_code, _text(exc.smtp_error),
                                                 recipients, stage)
                except smtplib.SMTPNotSupportedError as exc:  # SMTPUTF8 needed, not offered
                    return _unclassified(Outcome.PERMANENT, None, _describe(exc), recipients,
                                         stage=Stage.MAIL)
                except (smtplib.SMTPServerDisconnected, OSError) as exc:
                    self._drop()
                    if reused and not conn.data_started and attempt == 1:
                        continue  # a stale connection: nothing was handed over yet
                    stage = Stage.DATA if conn.data_started else Stage.MAIL
                    return SendResult.from_reply(None, _describe(exc), recipients, stage)
                finally:
                    self._last_used = self._clock()
                code, text = conn.data_reply
                return SendResult.from_recipients(
                    _per_recipient(recipients, refused, conn.data_reply), code, text)
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.quit()
                except (smtplib.SMTPException, OSError):
                    conn.close()

    def _connection(self) -> tuple[_SMTP | _SMTPS, bool]:
        conn = self._conn
        if conn is not None and conn.sock is not None:
            if self._clock() - self._last_used <= self.idle_check:
                return conn, True
            try:
                alive = conn.noop()[0] == 250
            except (smtplib.SMTPException, OSError):
                alive = False
            if alive:
                return conn, True
        self._drop()
        self._conn = self._open()
        return self._conn, False

    def _open(self) -> _SMTP | _SMTPS:
        context = self.ssl_context or ssl.create_default_context()
        if self.use_ssl:
            conn = _SMTPS(self.host, self.port, local_hostname=self.local_hostname,
                          timeout=self.timeout, context=context)
        else:
            conn = _SMTP(self.host, self.port, local_hostname=self.local_hostname,
                         timeout=self.timeout)
        try:
            conn.ehlo()
            if self.starttls:
                conn.starttls(context=context)
                conn.ehlo()
            if self.username:
                conn.login(self.username, self.password or "")
        except BaseException:
            conn.close()
            raise
        self.connections_opened += 1
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def envelope(message: EmailMessage) -> tuple[str, list[str]]:
    """(MAIL FROM, RCPT TO list): Return-Path or From; To, Cc and Bcc without duplicates."""
    source = message.get("Return-Path") or message.get("From")
    if source is None:
        raise ValueError("message has neither Return-Path nor From")
    from_addr = parseaddr(str(source))[1]
    if not from_addr and "Return-Path" not in message:
        raise ValueError(f"no address in From: {source!r}")
    fields = [str(v) for name in ("To", "Cc", "Bcc") for v in message.get_all(name, [])]
    recipients: list[str] = []
    seen: set[str] = set()
    for _, address in getaddresses(fields):
        if address and address.lower() not in seen:
            seen.add(address.lower())
            recipients.append(address)
    if not recipients:
        raise ValueError("message has no recipients in To, Cc or Bcc")
    return from_addr, recipients


def _wire_bytes(message: EmailMessage) -> bytes:
    """CRLF line endings (else servers answer 500 Line too long), without Bcc and Return-Path
    (a sender must not send Return-Path, RFC 5321 4.4)."""
    if "Bcc" in message or "Return-Path" in message:
        message = deepcopy(message)
        del message["Bcc"]
        del message["Return-Path"]
    return message.as_bytes(policy=policy.SMTP)


def _mail_options(conn: smtplib.SMTP, from_addr: str, recipients: list[str],
                  payload: bytes) -> list[str]:
    options = []
    if not payload.isascii() and conn.has_extn("8bitmime"):
        options.append("BODY=8BITMIME")
    if not (from_addr.isascii() and all(r.isascii() for r in recipients)):
        options.append("SMTPUTF8")  # smtplib raises SMTPNotSupportedError if not offered
    return options


def _per_recipient(recipients: list[str], refused: dict,
                   accepted: tuple[int, str]) -> list[RecipientResult]:
    """Refused recipients get their RCPT reply; accepted ones the reply to DATA."""
    by_address = {address.lower(): reply for address, reply in refused.items()}
    results = []
    for address in recipients:
        code, text = by_address.get(address.lower(), accepted)
        outcome, throttled = classify(code, _text(text))
        results.append(RecipientResult(address, outcome, code, _text(text), throttled))
    return results


def _unclassified(outcome: Outcome, code: int | None, text: str, recipients: list[str],
                  throttled: bool = False, stage: Stage = Stage.CONNECT) -> SendResult:
    return SendResult(outcome, code, text,
                      tuple(RecipientResult(a, outcome, code, text, throttled)
                            for a in recipients), throttled, stage)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__}: {exc.smtp_code} {_text(exc.smtp_error)}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def transport_from_settings(settings: Settings) -> Transport:
    """SMTP_URL when set; otherwise the local sink (`nurture sink`) on the configured port."""
    if settings.smtp_url:
        return SMTPTransport.from_url(settings.smtp_url)
    return SMTPTransport(host=settings.sink_host, port=settings.sink_port)
