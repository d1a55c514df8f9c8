"""Render a program email for one lead from its stored, compiled asset version."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.assets.service import current_version, sendable_version
from engine.errors import Invalid, NotFound
from engine.journeys.models import Enrollment
from engine.leads.models import Lead
from engine.leads.service import get_lead
from engine.programs.models import ProgramRecord
from engine.programs.spec import Program
from engine.programs.store import current_program, list_programs, running_program
from engine.render.message import build_message
from engine.render.personalise import DEFAULT_BASE_URL, Rendered, make_context, render_email


@dataclass(frozen=True)
class Preview:
    lead: Lead
    program: Program
    email_key: str
    version: int
    rendered: Rendered
    unsubscribe_url: str


def resolve_program(*, session: Session, lead: Lead, name: str | None,
                    pending: bool = False) -> tuple[ProgramRecord, Program]:
    """The named program; else the lead's only enrollment's program; else the only program:
    the version leads run, or with `pending` the newest loaded."""
    read = current_program if pending else running_program
    if name:
        return read(session=session, name=name)
    program_ids = list(session.scalars(select(Enrollment.program_id)
                                       .where(Enrollment.lead_id == lead.id)))
    records = list_programs(session=session)
    candidates = [r for r in records if r.id in program_ids] if program_ids else records
    if len(candidates) == 1:
        return read(session=session, name=candidates[0].name)
    if not candidates:
        raise NotFound("no program is loaded (load one with `nurture program load DIR`)",
                       field="program")
    names = ", ".join(r.name for r in candidates)
    raise Invalid(f"several programs ({names}): pick one with --program", field="program")


def render_for_lead(*, session: Session, email_key: str, lead_email: str,
                    program: str | None = None, strict: bool = False,
                    base_url: str = DEFAULT_BASE_URL, pending: bool = False) -> Preview:
    """What the lead would receive: the launched versions (before the first launch, the
    current ones); with `pending`, the newest loaded and uploaded, not yet launched."""
    lead = get_lead(session=session, email=lead_email)
    record, spec = resolve_program(session=session, lead=lead, name=program, pending=pending)
    email = spec.emails.get(email_key)
    if email is None:
        known = ", ".join(sorted(spec.emails))
        raise NotFound(f"program {record.name} has no email {email_key!r} (emails: {known})",
                       field="asset")
    read = current_version if pending else sendable_version
    version = read(session=session, program_id=record.id, path=email.file)
    context = make_context(lead=lead, program=spec, base_url=base_url)
    rendered = render_email(version_id=version.id, html=version.compiled_html,
                            text=version.compiled_text, subject=email.subject, context=context,
                            strict=strict, where=email.file)
    return Preview(lead=lead, program=spec, email_key=email_key, version=version.version,
                   rendered=rendered, unsubscribe_url=context.links.unsubscribe)


def preview_message(preview: Preview, *, now: datetime) -> EmailMessage:
    return build_message(rendered=preview.rendered, sender=preview.program.sender,
                         to=preview.lead.email, date=now,
                         unsubscribe_url=preview.unsubscribe_url)
