"""Bounces and complaints: read delivery reports (RFC 3464 DSNs) and complaint reports (RFC 5965
ARF), and record them.

A hard bounce or a complaint puts the address on the suppression list and ends the lead's
journeys (a complaint the way an unsubscribe does); a soft bounce is only written to the lead's
event log. Recording is idempotent: the same report twice changes nothing the second time.

The parser reads hostile input: anything it cannot make sense of is either not a report (an
empty list) or an `Invalid` naming the problem; it never raises anything else.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.errors import MessageError
from email.message import Message
from email.parser import BytesParser, HeaderParser
from email.utils import collapse_rfc2231_value, getaddresses
from enum import StrEnum
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import Invalid
from engine.journeys.decide import FINAL_EXITS, Event, EventKind, Status
from engine.journeys.service import apply_event, lead_enrollments
from engine.leads.fields import BAD_TEXT, normalise_email
from engine.leads.models import Lead, LeadEvent
from engine.sending.inbox import StoredMessage, list_messages
from engine.sending.models import OutboxMessage, SuppressionReason
from engine.sending.responses import mark_response
from engine.sending.suppression import suppress, suppressed_reasons
from engine.text import CONTROL

MAX_REPORT_BYTES = 10 * 1024 * 1024
MAX_RECIPIENTS = 100  # our messages have one recipient; alias expansion adds a few
MAX_TEXT = 500
MAX_MESSAGE_ID = 200  # OutboxMessage.message_id
_HEAD_BYTES = 64 * 1024

# What the email package and str() on its headers may raise on broken input.
_PARSE_ERRORS = (MessageError, LookupError, ValueError, TypeError, AttributeError,
                 RecursionError)
_STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_FEEDBACK_TYPES = frozenset({"message/feedback-report"})
_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
_HEADER_TYPES = frozenset({"text/rfc822-headers", "message/global-headers"})
_NOT_BOUNCES = frozenset({"delivered", "relayed", "expanded"})
_STATUS = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")
_ENHANCED_IN_TEXT = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d])")
_BASIC_CODE = re.compile(r"^\s*(?:smtp\s*;\s*)?([245])\d\d(?!\d)", re.IGNORECASE)
_BLOCK_SEPARATOR = re.compile(r"\r?\n[ \t]*\r?\n")
_BRACKETED_ID = re.compile(r"<([^<>\s]{1,198})>")


class BounceKind(StrEnum):
    HARD = "hard"
    SOFT = "soft"
    COMPLAINT = "complaint"


@dataclass(frozen=True)
class BounceReport:
    """One recipient's bounce or complaint, as a report states it."""

    kind: BounceKind
    recipient: str | None  # Original-Recipient, else Final-Recipient (ARF: Original-Rcpt-To)
    message_id: str | None = None  # of the message that bounced, "<...>"
    status: str | None = None  # RFC 3463, e.g. "5.1.1"
    action: str | None = None
    diagnostic: str = ""

    @property
    def reason(self) -> str:
        if not self.status or self.status in self.diagnostic:
            return self.diagnostic
        return f"{self.status} {self.diagnostic}".strip()[:MAX_TEXT]


# -- parsing ----------------------------------------------------------------------------------

def looks_like_report(head: bytes) -> bool:
    """Whether a message's header section (or its first bytes) says multipart/report."""
    try:
        headers = BytesParser(policy=policy.compat32).parsebytes(head[:_HEAD_BYTES],
                                                                 headersonly=True)
        return headers.get_content_type() == "multipart/report"
    except _PARSE_ERRORS:
        return False


def parse_bounce(raw: bytes) -> list[BounceReport]:
    """The bounces and complaints a message reports; [] when it is not such a report.

    Raises Invalid for a message over MAX_REPORT_BYTES, a report too broken to read, a report
    missing its machine-readable part, or more than MAX_RECIPIENTS recipients.
    """
    if len(raw) > MAX_REPORT_BYTES:
        raise Invalid(f"message of {len(raw):,} bytes is over the {MAX_REPORT_BYTES:,}-byte "
                      "limit for bounce reports", field="message")
    if not looks_like_report(raw):
        return []
    try:
        message = BytesParser(policy=policy.compat32).parsebytes(raw)
        return _reports(message)
    except _PARSE_ERRORS as exc:
        raise Invalid(f"unreadable report ({type(exc).__name__})", field="message") from None


def _reports(message: Message) -> list[BounceReport]:
    parts = message.get_payload()
    if not isinstance(parts, list) or not parts:
        raise Invalid("multipart/report without parts (truncated?)", field="message")
    report_type = _report_type(message, parts)
    if report_type == "delivery-status":
        return _dsn_reports(parts)
    if report_type == "feedback-report":
        return _arf_reports(parts)
    return []  # read receipts (disposition-notification), TLS reports, ...


def _report_type(message: Message, parts: list[Message]) -> str:
    declared = message.get_param("report-type")
    if declared:
        return str(collapse_rfc2231_value(declared)).strip().lower()
    # Some MTAs omit the parameter: go by the machine-readable part they did include.
    if _first(parts, _STATUS_TYPES) is not None:
        return "delivery-status"
    if _first(parts, _FEEDBACK_TYPES) is not None:
        return "feedback-report"
    return ""


def _first(parts: list[Message], types: frozenset[str]) -> Message | None:
    return next((p for p in parts if isinstance(p, Message) and p.get_content_type() in types),
                None)


def _dsn_reports(parts: list[Message]) -> list[BounceReport]:
    status_part = _first(parts, _STATUS_TYPES)
    if status_part is None:
        raise Invalid("delivery report without its message/delivery-status part",
                      field="message")
    blocks = [b for b in _field_blocks(status_part) if _is_recipient_block(b)]
    if len(blocks) > MAX_RECIPIENTS:
        raise Invalid(f"delivery report with {len(blocks)} recipients (at most "
                      f"{MAX_RECIPIENTS})", field="message")
    original = _original_headers(parts)
    message_id = _message_id(original.get("Message-ID")) if original is not None else None
    reports = (_recipient_report(block, message_id) for block in blocks)
    return [report for report in reports if report is not None]


def _is_recipient_block(block: dict[str, str]) -> bool:
    return any(name in block for name in ("final-recipient", "original-recipient", "action"))


def _recipient_report(block: dict[str, str], message_id: str | None) -> BounceReport | None:
    action = (block.get("action") or "").lower().split(" ", 1)[0]
    diagnostic = _strip_type(block.get("diagnostic-code", ""))
    status = _status(block.get("status", "")) or _status_in_diagnostic(diagnostic)
    kind = _kind(action, status)
    if kind is None:
        return None
    recipient = (_address(block.get("original-recipient"))
                 or _address(block.get("final-recipient")))
    return BounceReport(kind=kind, recipient=recipient, message_id=message_id, status=status,
                        action=action or None, diagnostic=diagnostic)


def _kind(action: str, status: str | None) -> BounceKind | None:
    """Hard: a permanent (5.x.x) failure. Soft: delayed, or a temporary (4.x.x) failure, or a
    failure without any status (we never suppress on a guess)."""
    if action == "delayed":
        return BounceKind.SOFT
    if action not in ("failed", ""):
        return None  # delivered, relayed, expanded, or an action we do not know
    if status is None:
        return BounceKind.SOFT if action == "failed" else None
    return {"5": BounceKind.HARD, "4": BounceKind.SOFT}.get(status[0])


def _status(text: str) -> str | None:
    match = _STATUS.match(text)
    return ".".join(match.groups()) if match else None


def _status_in_diagnostic(text: str) -> str | None:
    """'550 5.1.1 No such user' -> '5.1.1'; '550 No such user' -> '5.0.0'."""
    match = _ENHANCED_IN_TEXT.search(text)
    if match:
        return ".".join(match.groups())
    match = _BASIC_CODE.match(text)
    return f"{match.group(1)}.0.0" if match else None


def _arf_reports(parts: list[Message]) -> list[BounceReport]:
    feedback_part = _first(parts, _FEEDBACK_TYPES)
    if feedback_part is None:
        raise Invalid("complaint report without its message/feedback-report part",
                      field="message")
    fields: dict[str, str] = {}
    for block in _field_blocks(feedback_part):
        fields = block | fields
    feedback_type = (fields.get("feedback-type") or "").lower()
    if feedback_type != "abuse":
        return []  # not-spam, auth-failure, virus...: nothing the recipient asked of us
    original = _original_headers(parts)
    recipient = _address(fields.get("original-rcpt-to"))
    if recipient is None and original is not None:
        recipient = _single_address(original.get("To"))
    message_id = _message_id(original.get("Message-ID")) if original is not None else None
    agent = fields.get("user-agent", "")
    return [BounceReport(kind=BounceKind.COMPLAINT, recipient=recipient, message_id=message_id,
                         diagnostic=f"abuse report{' from ' + agent if agent else ''}"[:MAX_TEXT])]


def _field_blocks(part: Message) -> list[dict[str, str]]:
    """The groups of `Name: value` fields of a delivery-status or feedback-report part.

    The email package parses message/delivery-status into one sub-message per group, and other
    message/* types into one sub-message whose body holds any further groups."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return _blocks_in_text(_decoded_text(part))
    blocks = []
    for sub in payload:
        if not isinstance(sub, Message):
            continue
        blocks.append(_fields(sub.items()))
        rest = sub.get_payload()
        if isinstance(rest, str) and rest.strip():
            blocks += _blocks_in_text(rest)
        if len(blocks) > MAX_RECIPIENTS + 1:
            break
    return blocks


def _blocks_in_text(text: str) -> list[dict[str, str]]:
    chunks = [c for c in _BLOCK_SEPARATOR.split(text, maxsplit=MAX_RECIPIENTS + 2) if c.strip()]
    parser = HeaderParser(policy=policy.compat32)
    return [_fields(parser.parsestr(chunk, headersonly=True).items()) for chunk in chunks]


def _fields(items: Iterable[tuple[str, object]]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, value in items:
        fields.setdefault(str(name).strip().lower(), _clean(value))
    return fields


def _clean(value: object) -> str:
    """One line of printable text without NUL, control characters or unpaired surrogates,
    bounded."""
    text = BAD_TEXT.sub("", str(value))
    return " ".join(CONTROL.sub(" ", text).split())[:MAX_TEXT]


def _decoded_text(part: Message) -> str:
    data = part.get_payload(decode=True)
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else ""


def _original_headers(parts: list[Message]) -> Message | None:
    """The headers of the message the report is about: attached whole or as headers only."""
    attached = _first(parts, _MESSAGE_TYPES)
    if attached is not None:
        payload = attached.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return payload[0]
    headers = _first(parts, _HEADER_TYPES)
    if headers is not None:
        return HeaderParser(policy=policy.compat32).parsestr(_decoded_text(headers),
                                                             headersonly=True)
    return None


def _strip_type(value: str) -> str:
    """'smtp; 550 5.1.1 No such user' -> '550 5.1.1 No such user'."""
    kind, sep, rest = value.partition(";")
    return rest.strip() if sep and kind.strip().replace("-", "").isalnum() else value.strip()


def _address(value: str | None) -> str | None:
    """'rfc822; Ada@Example.com' -> 'ada@example.com'; None unless it looks like an address."""
    if not value:
        return None
    text = _strip_type(_clean(value)).strip("<> ").lower()
    return text if "@" in text and len(text) <= 254 and " " not in text else None


def _single_address(value: object) -> str | None:
    if value is None:
        return None
    addresses = [a for _, a in getaddresses([_clean(value)]) if "@" in a]
    return _address(addresses[0]) if len(addresses) == 1 else None


def _message_id(value: object) -> str | None:
    if value is None:
        return None
    text = _clean(value)
    match = _BRACKETED_ID.search(text)
    if match:
        return f"<{match.group(1)}>"
    bare = text.strip()
    return f"<{bare}>" if "@" in bare and " " not in bare and len(bare) <= 198 else None


# -- recording --------------------------------------------------------------------------------

@dataclass(frozen=True)
class BounceOutcome:
    email: str  # the address acted on: the lead's when matched by Message-ID
    kind: BounceKind
    lead_id: int | None
    changed: bool

    @property
    def result(self) -> str:
        """suppressed, soft (recorded) or ignored (already recorded, or nobody to record for)."""
        if not self.changed:
            return "ignored"
        return "soft" if self.kind is BounceKind.SOFT else "suppressed"


def record_bounce(*, session: Session, email: str | None, kind: str, source: str,
                  now: datetime, message_id: str | None = None, reason: str = "") -> bool:
    """Record a bounce or complaint; False when it changed nothing (already recorded).

    hard: suppress (bounced) and end the lead's journeys; complaint: suppress (complained) and
    end them as an unsubscribe does; soft: a `bounced` event on the lead's log, nothing more.
    The lead is the one with `email`, else the one the outbox row with `message_id` was sent to
    (a recipient rewritten by forwarding). An address no lead has is suppressed all the same.
    """
    return apply_bounce(session=session, email=email, kind=kind, source=source, now=now,
                        message_id=message_id, reason=reason).changed


def apply_bounce(*, session: Session, email: str | None, kind: str, source: str,
                 now: datetime, message_id: str | None = None,
                 reason: str = "") -> BounceOutcome:
    """record_bounce, telling which address it acted on and what it did."""
    kind = _bounce_kind(kind)
    lead, address = _target(session, email, message_id)
    reason, source = _clean(reason), _clean(source)[:200]
    if kind is BounceKind.SOFT:
        changed = lead is not None and _record_soft(session, lead, source=source, reason=reason,
                                                    message_id=message_id, now=now)
    else:
        changed = _suppress_and_end(session, lead, address, kind=kind, source=source,
                                    reason=reason, now=now)
    return BounceOutcome(email=address, kind=kind, lead_id=lead.id if lead else None,
                         changed=changed)


def record_reports(*, session: Session, reports: Iterable[BounceReport], source: str,
                   now: datetime) -> dict[str, int]:
    """Record several reports; counts of suppressed, soft and ignored."""
    counts = Counter({"suppressed": 0, "soft": 0, "ignored": 0})
    for report in reports:
        outcome = apply_bounce(session=session, email=report.recipient, kind=report.kind,
                               source=source, now=now, message_id=report.message_id,
                               reason=report.reason)
        counts[outcome.result] += 1
    return dict(counts)


def _bounce_kind(kind: str) -> BounceKind:
    try:
        return BounceKind(kind)
    except ValueError:
        choices = ", ".join(k.value for k in BounceKind)
        raise Invalid(f"unknown bounce type {str(kind)[:40]!r} (one of {choices})",
                      field="type") from None


def _target(session: Session, email: str | None, message_id: str | None) -> tuple[Lead | None, str]:
    """The lead (by address, else by the outbox row of `message_id`) and the address to act on."""
    address, problem = None, None
    if email:
        try:
            address = normalise_email(email)
        except Invalid as exc:
            problem = exc
    lead = session.scalar(select(Lead).where(Lead.email == address)) if address else None
    if lead is None and message_id:
        lead = _lead_for_message(session, message_id)
    if lead is not None:
        return lead, lead.email
    if address is None:
        raise problem or Invalid("the report names no recipient and no message we sent",
                                 field="email")
    return None, address


def _lead_for_message(session: Session, message_id: str) -> Lead | None:
    wanted = _message_id(message_id)
    if wanted is None:
        return None
    lead_id = session.scalar(select(OutboxMessage.lead_id).where(
        OutboxMessage.message_id == wanted))
    return session.get(Lead, lead_id) if lead_id is not None else None


def _suppress_and_end(session: Session, lead: Lead | None, address: str, *, kind: BounceKind,
                      source: str, reason: str, now: datetime) -> bool:
    hard = kind is BounceKind.HARD
    new = address not in suppressed_reasons(session=session, emails=[address])
    if new:
        suppress(session=session, email=address, now=now,
                 reason=SuppressionReason.BOUNCED if hard else SuppressionReason.COMPLAINED,
                 source=f"{source}: {reason}" if reason else source)
    # An address suppressed earlier (say by hand) may still have journeys running: end them.
    if lead is None or not (new or _has_open_journey(session, lead.id)):
        return new
    event = (Event(EventKind.BOUNCED, detail="hard") if hard
             else Event(EventKind.UNSUBSCRIBED, detail="complaint"))
    apply_event(session=session, lead=lead, event=event, now=now, actor=source)
    return True


def _has_open_journey(session: Session, lead_id: int) -> bool:
    return any(e.status != Status.EXITED or (e.state or {}).get("exit_reason") not in FINAL_EXITS
               for e in lead_enrollments(session=session, lead_id=lead_id))


def _record_soft(session: Session, lead: Lead, *, source: str, reason: str,
                 message_id: str | None, now: datetime) -> bool:
    """A soft bounce is logged once per (source, message, reason)."""
    detail = {"detail": "soft", "reason": reason, "message_id": message_id, "source": source}
    logged = session.scalars(select(LeadEvent.detail).where(
        LeadEvent.lead_id == lead.id, LeadEvent.category == "event",
        LeadEvent.kind == EventKind.BOUNCED.value))
    if any(previous == detail for previous in logged):
        return False
    session.add(LeadEvent(lead_id=lead.id, program_id=None, at=now, category="event",
                          kind=EventKind.BOUNCED.value, detail=detail, actor=source))
    mark_response(session, lead_id=lead.id, event=Event(EventKind.BOUNCED, detail="soft"),
                  at=now, message_id=_message_id(message_id))
    session.flush()
    return True


# -- the local sink ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ScanLine:
    """One report found in the sink, or one stored message that could not be read."""

    seq: int
    file: str
    result: str  # suppressed, soft, ignored, unidentified, unreadable
    email: str | None = None
    kind: str | None = None
    reason: str = ""


def scan_sink(*, session: Session, directory: Path | str, now: datetime,
              since: datetime | None = None) -> tuple[int, list[ScanLine]]:
    """Record the bounce and complaint reports among the sink's stored messages.

    Returns how many messages were looked at and a line per report found. Idempotent: a second
    scan finds the same reports and records nothing new."""
    messages = [m for m in list_messages(directory) if since is None or _received(m) >= since]
    lines = []
    for stored in messages:
        lines += _scan_one(session, Path(directory), stored, now)
    return len(messages), lines


def _received(stored: StoredMessage) -> datetime:
    try:
        received = datetime.fromisoformat(stored.received_at)
    except (TypeError, ValueError):
        return datetime.max.replace(tzinfo=UTC)  # unknown: always scanned
    return received if received.tzinfo else received.replace(tzinfo=UTC)


def _scan_one(session: Session, directory: Path, stored: StoredMessage,
              now: datetime) -> list[ScanLine]:
    try:
        reports = _read_reports(directory / stored.file)
    except Invalid as exc:
        return [ScanLine(stored.seq, stored.file, "unreadable", reason=exc.detail)]
    lines = []
    for report in reports:
        try:
            outcome = apply_bounce(session=session, email=report.recipient, kind=report.kind,
                                   source=f"sink {stored.file}", now=now,
                                   message_id=report.message_id, reason=report.reason)
        except Invalid as exc:
            lines.append(ScanLine(stored.seq, stored.file, "unidentified", report.recipient,
                                  report.kind.value, exc.detail))
            continue
        lines.append(ScanLine(stored.seq, stored.file, outcome.result, outcome.email,
                              report.kind.value, report.reason))
    return lines


def _read_reports(path: Path) -> list[BounceReport]:
    try:
        with path.open("rb") as handle:
            if not looks_like_report(handle.read(_HEAD_BYTES)):
                return []
            handle.seek(0)
            raw = handle.read(MAX_REPORT_BYTES + 1)
    except OSError as exc:
        raise Invalid(f"cannot read {path.name}: {exc.strerror or exc}", field="message") from None
    return parse_bounce(raw)
