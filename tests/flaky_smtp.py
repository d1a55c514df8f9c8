"""A real SMTP server for delivery fault tests (aiosmtpd on a local port) that misbehaves on
demand: slow to answer DATA, dropping the connection after it has the message, answering
temporary refusals. It remembers the Message-ID of every message it was handed, even one whose
connection it then dropped (the server has it, the sender cannot know)."""

from __future__ import annotations

import asyncio
import threading
from email.parser import BytesHeaderParser
from typing import Self

from aiosmtpd.controller import Controller

from engine.sending.sink import free_port


class FlakyHandler:
    def __init__(self) -> None:
        self.data_delay = 0.0  # seconds before answering DATA
        self.drop_after_data = 0  # the next N messages: received, then the connection drops
        self.drop_every = 0  # every Nth message: received, then the connection drops
        self.refuse_data = 0  # the next N messages: 451 at DATA
        self.received: list[str] = []  # Message-IDs handed over (dropped ones included)
        self.rcpt_to: list[str] = []  # recipients of the messages handed over
        self.refuse_rcpt: dict[str, str] = {}  # address prefix -> reply, e.g. a 550
        self.temporary_every = 0  # every Nth message: 451 at DATA
        self._count = 0
        self._lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:
        for prefix, reply in self.refuse_rcpt.items():
            if address.startswith(prefix):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        message_id = BytesHeaderParser().parsebytes(envelope.original_content or b"")[
            "Message-ID"]
        with self._lock:
            self._count += 1
            if self.refuse_data or (self.temporary_every
                                    and self._count % self.temporary_every == 0):
                self.refuse_data = max(0, self.refuse_data - 1)
                return "451 4.3.0 Try again later"
            self.received.append(str(message_id))
            self.rcpt_to += envelope.rcpt_tos
            if self.drop_after_data or (self.drop_every and self._count % self.drop_every == 1):
                self.drop_after_data = max(0, self.drop_after_data - 1)
                server.transport.close()  # the message is here; the reply never leaves
        return "250 2.0.0 OK"


class FlakyServer:
    """`with FlakyServer(port) as server:` listens on 127.0.0.1:port (free if not given);
    `server.stop()` refuses connections until `server.start()` again, on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.handler = FlakyHandler()
        self._controller: Controller | None = None

    def start(self) -> Self:
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
