"""The email a response belongs to, decided once, when the response is recorded.

An unsubscribe, a complaint or a bounce reported after sending is put on the email it names (a
soft bounce's Message-ID), else on the last email the lead was sent before it; a form on the
last email of the form's program the lead was sent before it (FormSubmission.outbox_id). The
send keeps what happened to it (OutboxMessage.unsubscribed...), so the engagement report reads
sends, not every response with a search for its email.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, not_, or_, select, update
from sqlalchemy.orm import Session, aliased

from engine.journeys.decide import Event
from engine.leads.models import LeadEvent
from engine.pages.models import FormSubmission
from engine.sending.models import Delivery, OutboxMessage

RENDER_FAILED = "render:"  # refused by the renderer: never reached a mail server
# What a response sets on its email: the event's kind and detail -> the send's flag.
FLAGS = {("unsubscribed", None): "unsubscribed", ("unsubscribed", "complaint"): "complained",
         ("bounced", "hard"): "hard_bounced", ("bounced", "soft"): "soft_bounced"}


def went_out(row) -> ColumnElement[bool]:
    """Accepted by the mail server, or refused by it for good after an SMTP attempt."""
    return or_(row.status == Delivery.SENT,
               and_(row.status == Delivery.FAILED_PERM, row.attempts > 0,
                    not_(func.coalesce(row.last_error, "").startswith(RENDER_FAILED))))


def out_at(row) -> ColumnElement:
    """When it went out: the first 250, or the permanent failure (the row's last update)."""
    return func.coalesce(row.sent_at, row.updated_at)


def last_send(lead_id, at, program_id=None) -> ColumnElement:
    """The id of the last email the lead was sent at or before `at` (of `program_id` if
    given), as a scalar subquery: `lead_id` and `at` may be values or a row's columns."""
    row = aliased(OutboxMessage)
    found = select(row.id).where(row.lead_id == lead_id, went_out(row), out_at(row) <= at)
    if program_id is not None:
        found = found.where(row.program_id == program_id)
    return (found.order_by(out_at(row).desc(), row.id.desc()).limit(1)
            .correlate_except(row).scalar_subquery())


def flag_of(kind: str, detail: str | None) -> str | None:
    """The send's flag a logged event sets, or None for events that are not such responses."""
    if kind == "unsubscribed" and detail != "complaint":
        detail = None
    return FLAGS.get((kind, detail))


def mark_response(session: Session, *, lead_id: int, event: Event, at: datetime,
                  message_id: str | None = None) -> None:
    """Put an unsubscribe, complaint or later bounce on its email (see the module's doc)."""
    flag = flag_of(str(event.kind), event.detail)
    if flag is None:
        return
    send_id = None
    if message_id:
        send_id = session.scalar(select(OutboxMessage.id).where(
            OutboxMessage.message_id == message_id, OutboxMessage.lead_id == lead_id))
    if send_id is None:
        send_id = session.scalar(select(last_send(lead_id, at)))
    if send_id is not None:
        session.execute(update(OutboxMessage).where(OutboxMessage.id == send_id)
                        .values({flag: True}))


def email_before_form(session: Session, submission: FormSubmission) -> int | None:
    """The email of the form's program the lead was sent last before posting it, or None."""
    if submission.lead_id is None:
        return None
    return session.scalar(select(last_send(submission.lead_id, submission.created_at,
                                           submission.program_id)))


def mark_all_responses(connection) -> None:
    """Set every send's responses, and every form's email, from the stored log, as they are
    kept when recorded: for rows stored before they were kept (migration 0015) or written in
    bulk."""
    detail = LeadEvent.detail["detail"].as_string()
    named = aliased(OutboxMessage)  # the email a response names (a soft bounce's Message-ID)
    named_row = (select(named.id).where(
        named.message_id == LeadEvent.detail["message_id"].as_string(),
        named.lead_id == LeadEvent.lead_id).correlate_except(named).scalar_subquery())
    email = func.coalesce(named_row, last_send(LeadEvent.lead_id, LeadEvent.at))
    for (kind, wanted), flag in FLAGS.items():  # as flag_of reads each logged event
        answered = (detail == wanted if wanted is not None
                    else or_(detail.is_(None), detail != "complaint"))
        ids = select(email).where(LeadEvent.category == "event", LeadEvent.kind == kind,
                                  answered)
        connection.execute(update(OutboxMessage).where(OutboxMessage.id.in_(ids))
                           .values({flag: True}))
    connection.execute(update(FormSubmission).where(FormSubmission.lead_id.is_not(None))
                       .values(outbox_id=last_send(FormSubmission.lead_id,
                                                   FormSubmission.created_at,
                                                   FormSubmission.program_id)))
