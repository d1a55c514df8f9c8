"""Helpers for sending tests: the sink's test replies, a message like the engine's, the
stored file without the sink's trace headers, and a disk under the sink that fills up or fails.
Each test module starts its own real sink:

    @pytest.fixture
    def sink(tmp_path):
        with Sink(tmp_path / "sink", replies=REPLIES) as server:   # a free port
            yield server
"""

from __future__ import annotations

import errno
import os
import threading
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


class SinkDisk:
    """The disk under one directory, filling up or failing for the real system calls made there.

    Wraps os.open, os.write, os.fsync and os.ftruncate (with pytest's monkeypatch), the calls
    the sink stores with; calls on other files pass through untouched. `fill(room=N)` lets N
    more bytes be written and then behaves like a full disk: a write that does not fit writes
    what fits and returns a short count, the next one raises ENOSPC (EDQUOT with `code`).
    `fail(op, ...)` makes some calls of one operation raise. `free()` ends both.
    """

    def __init__(self, monkeypatch, directory) -> None:
        self.directory = os.path.realpath(directory)
        self.room: int | None = None
        self.code = errno.ENOSPC
        self.failures: dict[str, list[int | None]] = {}
        self.refused = 0  # calls that raised
        self._fds: set[int] = set()
        self._lock = threading.Lock()
        real = {name: getattr(os, name) for name in ("open", "write", "fsync", "ftruncate",
                                                     "close")}

        def open_(path, flags, mode=0o777, *, dir_fd=None):
            if not self._inside(path):
                return real["open"](path, flags, mode, dir_fd=dir_fd)
            with self._lock:
                self._raise_if_armed("open")
                fd = real["open"](path, flags, mode, dir_fd=dir_fd)
                self._fds.add(fd)
            return fd

        def write(fd, data):
            if fd in self._fds:
                with self._lock:
                    self._raise_if_armed("write")
                    if self.room is not None:
                        if self.room == 0:
                            self._raise(self.code)
                        data = memoryview(data)[:self.room]
                        self.room -= len(data)
            return real["write"](fd, data)

        def checked(name):
            def call(fd, *args):
                if fd in self._fds:
                    with self._lock:
                        self._raise_if_armed(name)
                return real[name](fd, *args)
            return call

        def close(fd):
            with self._lock:
                self._fds.discard(fd)
            return real["close"](fd)

        for name, wrapper in (("open", open_), ("write", write), ("fsync", checked("fsync")),
                              ("ftruncate", checked("ftruncate")), ("close", close)):
            monkeypatch.setattr(os, name, wrapper)

    def fill(self, room: int = 0, code: int = errno.ENOSPC) -> None:
        self.room, self.code = room, code

    def fail(self, op: str, times: int = 1, code: int = errno.EIO, *, after: int = 0) -> None:
        """The `times` calls of `op` ("open", "write", "fsync", "ftruncate") after the next
        `after` ones raise OSError(code)."""
        self.failures[op] = [None] * after + [code] * times

    def free(self) -> None:
        self.room = None
        self.failures.clear()

    def _inside(self, path) -> bool:
        if isinstance(path, int):
            return False
        path = os.path.realpath(os.fsdecode(path))
        return path == self.directory or os.path.dirname(path) == self.directory

    def _raise_if_armed(self, op: str) -> None:
        if self.failures.get(op):
            code = self.failures[op].pop(0)
            if code is not None:
                self._raise(code)

    def _raise(self, code: int) -> None:
        self.refused += 1
        raise OSError(code, os.strerror(code))
