"""A landing-page form posted: it creates or updates the lead it names (the fields the page's
form maps, consent as the form states it, the visit's source), enrolls and scores it, and
counts as a response (triggers fire on it), all in one transaction."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from engine.crm.outbox import FORM_SUBMITTED, tell_crm
from engine.flows.leads import respond, upsert_lead
from engine.journeys.decide import EventKind
from engine.leads.models import ConsentRecord, Lead
from engine.pages.forms import (
    SOURCE_FIELDS,
    FormSpec,
    lead_fields,
    source_fields,
    touch_source,
)
from engine.pages.models import FormSubmission
from engine.pages.service import FoundPage, clean_fields
from engine.sending.responses import email_before_form

SAME_SUBMISSION = timedelta(hours=1)  # the same form posted again within this is a repeat


def submit_form(*, session: Session, found: FoundPage, form: dict[str, list[str]],
                visit: dict[str, str], remote_addr: str | None,
                now: datetime) -> FormSubmission:
    """Store a submission and follow it through the lead pipeline; a repeat of the same
    submission (same page, email and values within SAME_SUBMISSION) changes nothing. Raises
    Invalid naming the field (the caller's transaction then stores nothing). The caller
    checks CSRF before calling."""
    email, posted = clean_fields(form)
    digest = _digest(found, email, posted)
    repeat = session.scalar(select(FormSubmission).where(
        FormSubmission.digest == digest, FormSubmission.created_at >= now - SAME_SUBMISSION)
        .limit(1))
    if repeat is not None:
        return repeat
    spec, where = found.page.form, f"{found.program.slug}/{found.page.slug}"
    existing = session.scalar(select(Lead).where(Lead.email == email))
    fields = {"email": email, **lead_fields(spec, posted)}
    for name, value in source_fields(spec, visit).items():  # first touch: never overwritten
        if existing is None or not getattr(existing, name):
            fields[name] = value
    ticked = bool(spec.consent and posted.get(spec.consent.field))
    if ticked:
        fields["consent"] = True
    actor = f"form:{where}"[:200]
    lead, _ = upsert_lead(session=session, fields=fields, now=now, actor=actor,
                          program=found.program.slug)
    ip = (remote_addr or "")[:64] or None
    if spec.consent:
        session.add(ConsentRecord(lead_id=lead.id, granted=ticked, text=spec.consent.text,
                                  source=f"form {where}", ip=ip, at=now))
    submission = FormSubmission(program_id=found.program_id, page=found.page.slug,
                                lead_id=lead.id, email=email, fields=posted, remote_addr=ip,
                                digest=digest, created_at=now,
                                **touch_source(spec, posted, visit))
    session.add(submission)
    session.flush()
    submission.outbox_id = email_before_form(session, submission)
    tell_crm(session=session, lead_id=lead.id, email=lead.email, kind=FORM_SUBMITTED, now=now,
             program=found.program.slug, page=found.page.slug, fields=posted,
             lead_fields=_lead_fields(spec, posted),
             source={name: getattr(submission, name) for name in SOURCE_FIELDS})
    respond(session=session, lead=lead, kind=EventKind.FORM_SUBMITTED, detail=found.page.slug,
            now=now, actor=actor)
    return submission


def _lead_fields(spec: FormSpec, posted: dict) -> dict[str, str]:
    """The lead field each posted field fills in (its consent checkbox: consent), so that the
    CRM hears where each lands (engine/crm/events.py)."""
    found = {name: target for name, target in spec.fields.items() if name in posted}
    if spec.consent and spec.consent.field in posted:
        found[spec.consent.field] = "consent"
    return found


def _digest(found: FoundPage, email: str, posted: dict) -> str:
    content = json.dumps([found.program_id, found.page.slug, email, posted], sort_keys=True)
    return hashlib.sha256(content.encode()).hexdigest()


def fill_touch_sources(connection, batch: int = 5_000) -> None:
    """Set the source of submissions stored without one (before migration 0017, or written in
    bulk) from what they posted: their visit was not kept."""
    table = FormSubmission.__table__
    last = 0
    while True:
        rows = connection.execute(
            select(table.c.id, table.c.fields)
            .where(table.c.id > last, table.c.source_channel.is_(None),
                   table.c.source_offer.is_(None), table.c.source_partner.is_(None))
            .order_by(table.c.id).limit(batch)).all()
        if not rows:
            return
        last = rows[-1].id
        changes = [{"row_id": row.id, **dict.fromkeys(SOURCE_FIELDS),
                    **touch_source(FormSpec(), row.fields or {}, {})} for row in rows]
        changes = [change for change in changes if any(change[f] for f in SOURCE_FIELDS)]
        if changes:
            connection.execute(update(table).where(table.c.id == bindparam("row_id")),
                               changes)
