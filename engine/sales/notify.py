"""Email each sales notification (an MQL, a trigger, an SLA escalation) to the person it is for.

Operational mail, not marketing: plain text, no tracked link, no open pixel, no unsubscribe
header, and neither the suppression list nor the frequency cap nor the send window applies (a
sales rep who unsubscribed from the newsletter still gets told about a hot lead).

Who gets it: the notification's owner when that is an email address (the lead's owner; for an
escalation the owner or `sla.escalate_to`), else NURTURE_SALES_EMAIL. With neither, it is
skipped, saying why, and stays listed in `nurture sales notifications`.

Delivery works like the outbox (engine/sending/outbox.py): a worker claims one notification
with a conditional UPDATE (if it touched no row, another worker has it), sends it outside any
transaction, and marks it sent only after the server's 250. A temporary failure is retried
(RETRY_DELAYS, up to MAX_ATTEMPTS); a permanent one is recorded. A claim whose lease expired
(its worker died) is taken over; the resend keeps the Message-ID. So a job that runs twice sends
each notification once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from urllib.parse import urlsplit

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from engine.db import Database
from engine.leads.models import Lead
from engine.render.message import is_address
from engine.sales.models import NotificationStatus, SalesNotification
from engine.scoring.service import current_score, lead_program, scoring_program
from engine.sending.delivery import RETRY_DELAYS
from engine.sending.transport import SendResult, Transport

LEASE = timedelta(minutes=5)
# Temporary failures are retried after RETRY_DELAYS (the last one repeating), about two and a
# half days in all; then the notification is marked failed, and stays listed.
MAX_ATTEMPTS = 10
_TABLE = SalesNotification.__table__
_HEADLINES = {
    "mql": "A lead qualified (MQL) and is handed to sales.",
    "trigger": "A lead did something that goes straight to sales.",
    "escalation": "Nobody has answered this MQL within the SLA: it is escalated to you.",
}


@dataclass(frozen=True)
class NotifyOptions:
    sales_email: str | None = None  # NURTURE_SALES_EMAIL
    sender: str | None = None  # NURTURE_FROM: the From when the lead's program has none
    base_url: str = "http://localhost:5000"  # where the API's explain link points
    lease: timedelta = LEASE


def due_clause(now: datetime):
    """Notifications a worker may claim: waiting ones whose (re)try time has come, and claimed
    ones whose lease expired."""
    return or_(
        and_(_TABLE.c.status == NotificationStatus.PENDING,
             or_(_TABLE.c.retry_at.is_(None), _TABLE.c.retry_at <= now)),
        and_(_TABLE.c.status == NotificationStatus.SENDING, _TABLE.c.lease_until < now),
    )


def claim(*, session: Session, notification_id: int, worker: str, now: datetime,
          lease: timedelta = LEASE) -> bool:
    """Take one due notification for `worker`; False when it is not due or another worker
    took it first."""
    result = session.execute(
        update(_TABLE).where(_TABLE.c.id == notification_id, due_clause(now))
        .values(status=NotificationStatus.SENDING, claimed_by=worker, lease_until=now + lease,
                attempts=_TABLE.c.attempts + 1))
    return result.rowcount == 1


def _finish(session: Session, notification_id: int, worker: str, **values) -> bool:
    """Record an outcome, only while `worker` still holds the claim (a stale worker is ignored)."""
    result = session.execute(
        update(_TABLE).where(_TABLE.c.id == notification_id,
                             _TABLE.c.status == NotificationStatus.SENDING,
                             _TABLE.c.claimed_by == worker)
        .values(lease_until=None, **values))
    return result.rowcount == 1


def recipient(owner: str | None, sales_email: str | None) -> tuple[str | None, str]:
    """(address, why): the owner when it is an address, else the sales address, else None
    with the reason it cannot be sent."""
    if owner and is_address(owner):
        return owner, ""
    if sales_email and is_address(sales_email):
        return sales_email, ""
    whose = f"the owner {owner!r} is not an email address" if owner else "nobody owns the lead"
    if sales_email:
        return None, f"{whose}, and NURTURE_SALES_EMAIL {sales_email!r} is not one either"
    return None, f"{whose}, and NURTURE_SALES_EMAIL is not set"


def deliver_due(*, db: Database, transport: Transport, worker: str,
                clock: Callable[[], datetime], options: NotifyOptions,
                limit: int = 100) -> Counter:
    """Claim and email up to `limit` due notifications, oldest first; counts by outcome
    (sent, retry, failed, skipped, taken: another worker had it)."""
    with db.session() as session:
        due = session.scalars(select(_TABLE.c.id).where(due_clause(clock()))
                              .order_by(_TABLE.c.id).limit(limit)).all()
    outcomes: Counter = Counter()
    for notification_id in due:
        outcomes[_deliver(db=db, transport=transport, notification_id=notification_id,
                          worker=worker, clock=clock, options=options)] += 1
    return outcomes


def _deliver(*, db: Database, transport: Transport, notification_id: int, worker: str,
             clock: Callable[[], datetime], options: NotifyOptions) -> str:
    with db.session() as session:
        now = clock()
        if not claim(session=session, notification_id=notification_id, worker=worker, now=now,
                     lease=options.lease):
            return "taken"
        notification = session.get(SalesNotification, notification_id,
                                   populate_existing=True)
        to, why = recipient(notification.owner, options.sales_email)
        if to is None:
            _finish(session, notification_id, worker, status=NotificationStatus.SKIPPED,
                    last_error=why)
            return "skipped"
        message = notification_email(session=session, notification=notification, to=to,
                                     now=now, options=options)
    result = transport.send(message)  # outside any transaction: SMTP may take seconds
    return _record(db, notification_id, worker, clock(), result, to)


def _record(db: Database, notification_id: int, worker: str, now: datetime, result: SendResult,
            to: str) -> str:
    with db.session() as session:
        if result.sent:
            _finish(session, notification_id, worker, status=NotificationStatus.SENT, sent_at=now,
                    recipient=to, last_error=None)
            return "sent"
        error = f"{result.code or ''} {result.text}".strip()[:2000]
        attempts = session.scalar(select(_TABLE.c.attempts).where(_TABLE.c.id == notification_id))
        if result.permanent or attempts >= MAX_ATTEMPTS:
            reason = error if result.permanent else f"gave up after {attempts} attempts: {error}"
            _finish(session, notification_id, worker, status=NotificationStatus.FAILED,
                    recipient=to, last_error=reason[:2000])
            return "failed"
        _finish(session, notification_id, worker, status=NotificationStatus.PENDING,
                recipient=to, last_error=error,
                retry_at=now + RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1])
        return "retry"


# -- the email ------------------------------------------------------------------------------

def notification_email(*, session: Session, notification: SalesNotification, to: str,
                       now: datetime, options: NotifyOptions) -> EmailMessage:
    """The plain-text mail for one notification: what happened, to which lead, its score now,
    and where to see why (`nurture leads explain`, the API) and how to answer."""
    lead = session.get(Lead, notification.lead_id)
    found = scoring_program(session=session, lead_id=lead.id)
    score = current_score(lead, found[1] if found else None, now)
    sender = _sender(session, lead.id, options)
    domain = parseaddr(sender)[1].rpartition("@")[2]
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = _subject(notification, lead, score)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = f"<sales-notification.{notification.id}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    message.set_content(_body(notification, lead, score, options.base_url))
    return message


def _subject(notification: SalesNotification, lead: Lead, score: float) -> str:
    who = lead.email + (f" ({_line(lead.company)})" if lead.company else "")
    subject = {"mql": f"New MQL: {who}, score {score:.0f}",
               "escalation": f"SLA escalation: {who}, MQL unanswered"}.get(
        notification.kind, f"Sales alert: {who}: {_line(notification.reason)}")
    return subject[:250]


def _body(notification: SalesNotification, lead: Lead, score: float, base_url: str) -> str:
    name = " ".join(part for part in (lead.first_name, lead.last_name) if part)
    lines = [
        _HEADLINES.get(notification.kind, f"Sales notification: {notification.kind}."), "",
        f"Lead:    {_line(name) + ' <' + lead.email + '>' if name else lead.email}",
        *(f"{label:<9}{_line(value)}" for label, value in
          (("Company:", lead.company), ("Title:", lead.title)) if value),
        f"Stage:   {lead.stage}",
        f"Owner:   {_line(lead.owner) if lead.owner else 'nobody yet'}",
        f"Score:   {score:.0f} now",
        f"What:    {_line(notification.reason)}",
        f"When:    {notification.at:%Y-%m-%d %H:%M} UTC",
        "",
        "Why it scores, its stage history, what it opened, clicked and visited:",
        f"  nurture leads explain {lead.email}",
        f"  {base_url}/api/v1/leads/{lead.id}/explain  (with an API key)",
    ]
    if lead.stage == "mql":
        lines += ["", "Answer it (accept: a SAL you own; reject: back to nurture):",
                  f"  nurture sales accept {lead.email} --by YOU",
                  f"  nurture sales reject {lead.email} --by YOU --reason \"...\""]
    footer = f"Sales notification #{notification.id} ({notification.kind}) from Nurture"
    lines += ["", f"{footer}; all of them: nurture sales notifications"]
    return "\n".join(lines) + "\n"


def _line(text: str | None) -> str:
    """A lead's value on one line (fields may hold line breaks; a header may not)."""
    return " ".join((text or "").split())


def _sender(session: Session, lead_id: int, options: NotifyOptions) -> str:
    """The From of the lead's first program with a sender (as the launch notice), else
    NURTURE_FROM, else an address at the engine's own host."""
    found = lead_program(session=session, lead_id=lead_id,
                         uses=lambda program: is_address(program.sender.get("from")))
    if found:
        return found[1].sender["from"]
    if options.sender and is_address(options.sender):
        return options.sender
    return f"nurture@{urlsplit(options.base_url).hostname or 'localhost'}"
