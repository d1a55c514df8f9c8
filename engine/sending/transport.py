"""The narrow interface the engine sends through, and how SMTP replies are classified.

`Transport.send(message) -> SendResult` never raises for an SMTP-level failure: the result says
whether the message was sent, failed temporarily (retry later, maybe slower) or failed
permanently (bounce and suppress). Programming errors (a message without From or recipients)
do raise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from enum import StrEnum
from typing import Protocol, runtime_checkable


class Outcome(StrEnum):
    SENT = "sent"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


class Stage(StrEnum):
    """Where a send ended. Only a permanent refusal at RCPT is about the recipient's address
    (a hard bounce); at MAIL FROM or DATA the sender or the content was refused, and a
    connection-stage failure (connect, EHLO, STARTTLS, AUTH) is always temporary."""

    CONNECT = "connect"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"


# Replies that mean "slow down for this domain" rather than "this message failed".
THROTTLING = frozenset({(421, "4.7.28"), (450, "4.2.1"), (451, "4.7.1")})
_ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")


def enhanced_status(text: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of a reply text ("4.7.28"), if any."""
    match = _ENHANCED.match(text or "")
    return match.group(1) if match else None


def classify(code: int | None, text: str = "") -> tuple[Outcome, bool]:
    """(outcome, throttled) for an SMTP reply; code None means a connection-level failure."""
    if code is None:
        return Outcome.TEMPORARY, False
    if 200 <= code < 300:
        return Outcome.SENT, False
    if 400 <= code < 500:
        return Outcome.TEMPORARY, (code, enhanced_status(text)) in THROTTLING
    if 500 <= code < 600:
        return Outcome.PERMANENT, False
    # 1xx/3xx as a final reply, or garbage: the server is confused; try again later.
    return Outcome.TEMPORARY, False


@dataclass(frozen=True)
class RecipientResult:
    """What happened to one envelope recipient."""

    address: str
    outcome: Outcome
    code: int | None
    text: str
    throttled: bool = False

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()


@dataclass(frozen=True)
class SendResult:
    """The outcome of one send.

    `outcome` is SENT when the server accepted the message for at least one recipient (so it must
    not be re-sent as a whole); `recipients` then tells which recipients were refused, and
    `partial` is true. When nobody accepted it, `outcome` is PERMANENT only if every recipient
    failed permanently, else TEMPORARY. `code`/`text` are the deciding reply (None for a
    connection failure, whose description is in `text`).
    """

    outcome: Outcome
    code: int | None
    text: str
    recipients: tuple[RecipientResult, ...] = field(default=())
    throttled: bool = False
    stage: Stage = Stage.DATA

    @property
    def sent(self) -> bool:
        return self.outcome is Outcome.SENT

    @property
    def temporary(self) -> bool:
        return self.outcome is Outcome.TEMPORARY

    @property
    def permanent(self) -> bool:
        return self.outcome is Outcome.PERMANENT

    @property
    def partial(self) -> bool:
        return self.sent and any(r.outcome is not Outcome.SENT for r in self.recipients)

    @property
    def refused(self) -> tuple[RecipientResult, ...]:
        return tuple(r for r in self.recipients if r.outcome is not Outcome.SENT)

    @property
    def hard_bounces(self) -> tuple[RecipientResult, ...]:
        """Recipients whose address was refused permanently at RCPT: record and suppress.
        A permanent failure at MAIL FROM or DATA is not the recipient's (see Stage)."""
        if self.stage is not Stage.RCPT and not self.sent:
            return ()
        return tuple(r for r in self.recipients if r.outcome is Outcome.PERMANENT)

    @property
    def throttled_domains(self) -> frozenset[str]:
        return frozenset(r.domain for r in self.recipients if r.throttled)

    @classmethod
    def from_reply(cls, code: int | None, text: str, recipients: list[str],
                   stage: Stage = Stage.DATA) -> SendResult:
        """Every recipient shares one reply (DATA, MAIL FROM or a connection failure)."""
        outcome, throttled = classify(code, text)
        return cls(outcome=outcome, code=code, text=text, throttled=throttled, stage=stage,
                   recipients=tuple(RecipientResult(a, outcome, code, text, throttled)
                                    for a in recipients))

    @classmethod
    def from_recipients(cls, results: list[RecipientResult], data_code: int | None = None,
                        data_text: str = "") -> SendResult:
        """Recipients answered individually; data_code is DATA's reply when DATA was sent."""
        accepted = [r for r in results if r.outcome is Outcome.SENT]
        throttled = any(r.throttled for r in results)
        if accepted and data_code is not None:
            return cls(Outcome.SENT, data_code, data_text, tuple(results), throttled,
                       Stage.DATA)
        failed = [r for r in results if r.outcome is not Outcome.SENT]
        permanent = bool(failed) and all(r.outcome is Outcome.PERMANENT for r in failed)
        deciding = failed[0] if failed else results[0]
        return cls(Outcome.PERMANENT if permanent else Outcome.TEMPORARY, deciding.code,
                   deciding.text, tuple(results), throttled, Stage.RCPT)


@runtime_checkable
class Transport(Protocol):
    """Where messages go. Implementations: SMTPTransport (a real server or the local sink)."""

    def send(self, message: EmailMessage) -> SendResult: ...

    def close(self) -> None: ...
