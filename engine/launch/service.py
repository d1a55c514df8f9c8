"""Waivers and launches. Nothing of a program is sent until it is launched (the outbox claim
skips unlaunched programs); `nurture launch` launches only when the QA gate passes."""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import Invalid
from engine.launch.models import Launch, Waiver
from engine.programs.models import ProgramRecord
from engine.programs.spec import Program
from engine.render.message import sender_domain

MAX_KEY = 1000
MAX_REASON = 2000


def waive(*, session: Session, program_id: int, finding_key: str, reason: str, by: str,
          now: datetime) -> Waiver:
    """Accept a named finding for this program, with a reason (recorded; a new waiver of the
    same finding replaces the old one's reason)."""
    key, reason, by = (finding_key or "").strip(), (reason or "").strip(), (by or "").strip()
    if not key or len(key) > MAX_KEY:
        raise Invalid(f"a finding key of 1 to {MAX_KEY} characters is required", field="key")
    if not reason or len(reason) > MAX_REASON:
        raise Invalid(f"a reason of 1 to {MAX_REASON} characters is required", field="reason")
    if not by:
        raise Invalid("who waives it is required", field="by")
    waiver = session.scalar(select(Waiver).where(Waiver.program_id == program_id,
                                                 Waiver.finding_key == key))
    if waiver is None:
        waiver = Waiver(program_id=program_id, finding_key=key, reason=reason, by=by[:200], at=now)
        session.add(waiver)
    else:
        waiver.reason, waiver.by, waiver.at = reason, by[:200], now
    return waiver


def record_launch(*, session: Session, record: ProgramRecord, version: int, by: str, now: datetime,
                  launched: bool, summary: str) -> Launch:
    """A launch, or a refused one (with the blockers named in `summary`)."""
    attempt = Launch(program_id=record.id, version=version, by=by[:200], at=now, launched=launched,
                     summary=summary)
    session.add(attempt)
    if launched and record.launched_at is None:
        record.launched_at = now
    return attempt


def is_launched(*, session: Session, record: ProgramRecord) -> bool:
    """Whether the program's current version went past the gate."""
    return session.scalar(select(Launch.id).where(
        Launch.program_id == record.id, Launch.version == record.current_version,
        Launch.launched.is_(True))) is not None


def launch_unchecked(*, session: Session, name: str, by: str, now: datetime, why: str) -> None:
    """Launch without the gate, recorded as such: for benchmarks and fixtures that measure
    sending, never for a program customers receive (`nurture launch` runs the gate)."""
    record = session.scalar(select(ProgramRecord).where(ProgramRecord.name == name))
    record_launch(session=session, record=record, version=record.current_version, by=by, now=now,
                  launched=True, summary=f"launched without the QA gate: {why}")


def describe(program: Program) -> str:
    """What the program does, in plain words, for the people told at launch."""
    lines = [f"{program.name} ({program.slug}) is live.", ""]
    window = program.send_window.to_dict()
    lines.append(f"Sends {', '.join(window['days'])} {window['from']}-{window['to']} in each "
                 f"lead's time zone (default {program.timezone}).")
    lines.append(f"Personas: {', '.join(p.name for p in program.personas.values())}.")
    lines.append("Tracks:")
    for name, steps in sorted(program.tracks.items()):
        emails = [step.email for step in steps if step.email]
        lines.append(f"  {name}: {len(emails)} emails ({', '.join(emails)})")
    scoring = program.scoring
    if scoring.threshold is not None:
        lines.append(f"Leads become MQLs at a score of {scoring.threshold:g}"
                     + (f" with {', '.join(scoring.requires)} filled in" if scoring.requires
                        else "") + ", and are handed to sales.")
    lines.append(f"Sales answers MQLs within {program.sla.mql_response.days} days "
                 f"(escalated to {program.sla.escalate_to or 'the owner'} otherwise).")
    return "\n".join(lines)


def launch_notice(program: Program, *, to: list[str], by: str, now: datetime) -> EmailMessage:
    message = EmailMessage()
    message["From"] = program.sender.get("from") or f"nurture@{sender_domain(program.sender)}"
    message["To"] = ", ".join(to)
    message["Subject"] = f"Launched: {program.name}"
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(domain=sender_domain(program.sender))
    message.set_content(describe(program) + f"\n\nLaunched by {by} at {now:%Y-%m-%d %H:%M} UTC.\n")
    return message
