"""The emails that went out, and the email a response belongs to, decided once, when recorded.

An email that went out gets its row in sent_emails then (record_out): what reports read of a
send. An unsubscribe, a complaint or a bounce reported after sending is put on the email it names
(an unsubscribe link's, a soft bounce's Message-ID), else on the last email the lead was sent before it; a form on the
last email of the form's program the lead was sent before it (FormSubmission.outbox_id). The
sent email keeps what happened to it (SentEmail.unsubscribed...), so the engagement report reads
sent emails, not every response with a search for its email.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, case, func, not_, or_, select, update
from sqlalchemy.orm import Session, aliased

from engine.db import insert_new
from engine.journeys.decide import Event
from engine.leads.models import LeadEvent
from engine.pages.models import FormSubmission
from engine.sending.models import Delivery, OutboxMessage, SentEmail

RENDER_FAILED = "render:"  # refused by the renderer: never reached a mail server
GAVE_UP = "gave up after"  # engine/sending/delivery.py: temporary failures until it gave up
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


def record_out(connection, row_id: int | None = None) -> int:
    """Write the sent_emails row of outbox row `row_id` if it went out and has none yet (every
    such row when None: rows stored before migration 0024, or written in bulk). A refusal for
    good is a hard bounce, giving up after temporary failures a soft one. Returns how many
    rows it wrote."""
    out = OutboxMessage
    refused = out.status == Delivery.FAILED_PERM
    gave_up = func.coalesce(out.last_error, "").startswith(GAVE_UP)
    rows = select(out.id, out.lead_id, out.program_id, out.program_version, out.step,
                  out.asset_version_id, out.persona, out_at(out),
                  case((and_(refused, not_(gave_up)), True), else_=False),
                  case((and_(refused, gave_up), True), else_=False)).where(went_out(out))
    if row_id is not None:
        rows = rows.where(out.id == row_id)
    columns = ["outbox_id", "lead_id", "program_id", "program_version", "step",
               "asset_version_id", "persona", "out_at", "hard_bounced", "soft_bounced"]
    return connection.execute(insert_new(connection, SentEmail.__table__)
                              .from_select(columns, rows)).rowcount


def last_send(lead_id, at, program_id=None) -> ColumnElement:
    """The id of the last email the lead was sent at or before `at` (of `program_id` if
    given), as a scalar subquery: `lead_id` and `at` may be values or a row's columns."""
    row = aliased(SentEmail)
    found = select(row.outbox_id).where(row.lead_id == lead_id, row.out_at <= at)
    if program_id is not None:
        found = found.where(row.program_id == program_id)
    return (found.order_by(row.out_at.desc(), row.outbox_id.desc()).limit(1)
            .correlate_except(row).scalar_subquery())


def flag_of(kind: str, detail: str | None) -> str | None:
    """The send's flag a logged event sets, or None for events that are not such responses."""
    if kind == "unsubscribed" and detail != "complaint":
        detail = None
    return FLAGS.get((kind, detail))


def mark_response(session: Session, *, lead_id: int, event: Event, at: datetime,
                  message_id: str | None = None, send_id: int | None = None) -> None:
    """Put an unsubscribe, complaint or later bounce on its email (see the module's doc):
    `send_id` when the response names it (an unsubscribe link's email), else by Message-ID,
    else the last one sent."""
    flag = flag_of(str(event.kind), event.detail)
    if flag is None:
        return
    if send_id is not None:  # the lead's own email only
        send_id = session.scalar(select(SentEmail.outbox_id).where(
            SentEmail.outbox_id == send_id, SentEmail.lead_id == lead_id))
    if send_id is None and message_id:
        send_id = session.scalar(select(OutboxMessage.id).where(
            OutboxMessage.message_id == message_id, OutboxMessage.lead_id == lead_id))
    if send_id is None:
        send_id = session.scalar(select(last_send(lead_id, at)))
    if send_id is not None:
        session.execute(update(SentEmail).where(SentEmail.outbox_id == send_id)
                        .values({flag: True}))


def email_before_form(session: Session, submission: FormSubmission) -> int | None:
    """The email of the form's program the lead was sent last before posting it, or None."""
    if submission.lead_id is None:
        return None
    return session.scalar(select(last_send(submission.lead_id, submission.created_at,
                                           submission.program_id)))


def mark_all_responses(connection) -> None:
    """Set every sent email's responses, and every form's email, from the stored log, as they
    are kept when recorded: for rows stored before migration 0024, or written in bulk."""
    detail = LeadEvent.detail["detail"].as_string()
    named = aliased(OutboxMessage)  # the email a response names (a soft bounce's Message-ID)
    named_row = (select(named.id).where(
        named.message_id == LeadEvent.detail["message_id"].as_string(),
        named.lead_id == LeadEvent.lead_id).correlate_except(named).scalar_subquery())
    linked = aliased(SentEmail)  # the email an unsubscribe link named
    linked_row = (select(linked.outbox_id).where(
        linked.outbox_id == LeadEvent.detail["outbox_id"].as_integer(),
        linked.lead_id == LeadEvent.lead_id).correlate_except(linked).scalar_subquery())
    email = func.coalesce(linked_row, named_row, last_send(LeadEvent.lead_id, LeadEvent.at))
    for (kind, wanted), flag in FLAGS.items():  # as flag_of reads each logged event
        answered = (detail == wanted if wanted is not None
                    else or_(detail.is_(None), detail != "complaint"))
        ids = select(email).where(LeadEvent.category == "event", LeadEvent.kind == kind,
                                  answered)
        connection.execute(update(SentEmail).where(SentEmail.outbox_id.in_(ids))
                           .values({flag: True}))
    connection.execute(update(FormSubmission).where(FormSubmission.lead_id.is_not(None))
                       .values(outbox_id=last_send(FormSubmission.lead_id,
                                                   FormSubmission.created_at,
                                                   FormSubmission.program_id)))
