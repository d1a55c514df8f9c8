"""Helpers for sending tests: the sink's test replies, a message like the engine's, and the
stored file without the sink's trace headers. Each test module starts its own real sink:

    @pytest.fixture
    def sink(tmp_path):
        with Sink(tmp_path / "sink", replies=REPLIES) as server:   # a free port
            yield server
"""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.utils import make_msgid

REPLIES = {
    "bounce@": "550 5.1.1 No such user",
    "later@": "451 4.3.0 Try again later",
    "slowdown@": "451 4.7.1 Rate limited, slow down",
    "busy@": "450 4.2.1 Too many messages for this user",
    "gmail-throttle@": "421 4.7.28 Unusual rate of unsolicited mail",
}


def nurture_message(to: str = "lead@example.com", subject: str = "Grüße aus Zürich — état",
                    *, body_size: int = 0) -> EmailMessage:
    """What the engine sends: multipart/alternative, RFC 8058 unsubscribe headers, UTF-8."""
    message = EmailMessage(policy=policy.default)
    message["From"] = "Acme Marketing <news@acme.example>"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="acme.example")
    message["List-Unsubscribe"] = "<https://acme.example/u/T0KEN>, <mailto:u@acme.example>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    text = "Hallo Jürgen,\n\nhere is the guide.\n" + "filler line of text\n" * (body_size // 20)
    message.set_content(text)
    message.add_alternative(f"<html><body><p>Hallo J&uuml;rgen</p><pre>{text}</pre></body>"
                            "</html>", subtype="html")
    return message


def without_trace(stored: bytes) -> bytes:
    """The stored file minus the Return-Path and Received lines the sink puts first."""
    lines = stored.split(b"\r\n")
    start = 0
    while start < len(lines) and (lines[start].startswith((b"Return-Path:", b"Received:"))
                                  or lines[start][:1] in (b" ", b"\t")):
        start += 1
    return b"\r\n".join(lines[start:])
