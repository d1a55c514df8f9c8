"""Reading the local sink's store: an index of JSON lines and one `.eml` file per message.

The sink (engine.sending.sink) appends one line to `index.jsonl` after the message's file has
been synced and renamed into place, so every indexed message can be read in full. Readers go by
the index only: a `.eml` file without a line (left by a crash, or by a storage error that could
not be cleaned up) is not a stored message; its sender got no 250 and sends it again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from engine.errors import NotFound

INDEX_NAME = "index.jsonl"


@dataclass(frozen=True)
class StoredMessage:
    seq: int  # 1, 2, 3... in order of arrival: what `nurture inbox show N` takes
    file: str  # the .eml file's name inside the sink directory
    received_at: str  # ISO 8601, UTC
    mail_from: str
    rcpt_tos: tuple[str, ...]
    subject: str
    message_id: str
    size: int  # bytes of the message as received (without the sink's trace headers)
    peer: str = ""

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "rcpt_tos": list(self.rcpt_tos)}, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> StoredMessage:
        data = json.loads(line)
        data["rcpt_tos"] = tuple(data["rcpt_tos"])
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def list_messages(directory: Path | str, *, to: str | None = None,
                  limit: int | None = None) -> list[StoredMessage]:
    """Stored messages, oldest first; `to` keeps those with that envelope recipient (any case);
    `limit` keeps the newest N."""
    index = Path(directory) / INDEX_NAME
    if not index.exists():
        return []
    wanted = to.strip().lower() if to else None
    messages = []
    with index.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                stored = StoredMessage.from_json(line)
            except (ValueError, TypeError, KeyError):
                continue  # a torn last line after a crash: the message file has no index entry
            if wanted is None or wanted in (r.lower() for r in stored.rcpt_tos):
                messages.append(stored)
    if limit is not None:
        messages = messages[-limit:] if limit > 0 else []
    return messages


def find_message(directory: Path | str, key: str | int) -> StoredMessage:
    """A message by its number in the index (`3`) or its Message-ID (with or without <>)."""
    text = str(key).strip()
    messages = list_messages(directory)
    if text.isdigit():
        for stored in messages:
            if stored.seq == int(text):
                return stored
    wanted = text.strip("<>")
    for stored in reversed(messages):
        if stored.message_id.strip("<>") == wanted:
            return stored
    raise NotFound(f"no stored message {text!r} in {directory}", field="message")


def read_bytes(directory: Path | str, stored: StoredMessage) -> bytes:
    """The file as stored: the sink's Return-Path and Received lines, then the message."""
    return (Path(directory) / stored.file).read_bytes()


def read_message(directory: Path | str, stored: StoredMessage) -> EmailMessage:
    return BytesParser(policy=policy.default).parsebytes(read_bytes(directory, stored))


def text_part(message: EmailMessage) -> str:
    """The plain-text body; failing that, the HTML one; empty when there is neither. Its lines
    end in \n: decoded, a MIME part keeps the CR LF of mail, and a terminal printer that shows
    control characters would show the CR at the end of every line."""
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    return _decoded(part).replace("\r\n", "\n")


def html_part(message: EmailMessage) -> str | None:
    """The HTML body, or None when the message has none."""
    part = message.get_body(preferencelist=("html",))
    return None if part is None else _decoded(part)


def _decoded(part: EmailMessage) -> str:
    try:
        return part.get_content()
    except (LookupError, ValueError):  # unknown charset or broken encoding
        return part.get_payload(decode=True).decode("utf-8", "replace")
