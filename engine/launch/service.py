"""Waivers and launches. Nothing of a program is sent until it is launched (the outbox claim
skips unlaunched programs); `nurture launch` launches only when the QA gate passes.

A launch pins what the gate checked: the program version (`ProgramRecord.live_version`) and
each email's and page's asset version (`Asset.live_version`). Leads get those; a program loaded
or an asset uploaded later is pending until the next launch passes the gate for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.assets.models import Asset, AssetVersion
from engine.assets.service import current_versions
from engine.errors import Invalid
from engine.journeys.service import migrate_enrollments
from engine.launch.approvals import approval_status
from engine.launch.models import Launch, Waiver
from engine.programs.models import ProgramRecord
from engine.programs.spec import Program
from engine.programs.store import current_program, program_at, version_row
from engine.render.message import sender_domain
from engine.sending.outbox import adopt_launched_version

MAX_KEY = 1000
MAX_REASON = 2000
# The gate's approval findings (approval.missing, approval.rejected, approval.not-loaded) say
# a reviewer has not approved what would be sent: only a reviewer's approval clears them.
APPROVAL_FINDINGS = "approval."


def may_be_waived(finding_key: str) -> bool:
    return not finding_key.startswith(APPROVAL_FINDINGS)


def waive(*, session: Session, program_id: int, finding_key: str, reason: str, by: str,
          now: datetime) -> Waiver:
    """Accept a named finding for this program, with a reason (recorded; a new waiver of the
    same finding replaces the old one's reason). Approval findings are refused."""
    key, reason, by = (finding_key or "").strip(), (reason or "").strip(), (by or "").strip()
    if not key or len(key) > MAX_KEY:
        raise Invalid(f"a finding key of 1 to {MAX_KEY} characters is required", field="key")
    if not may_be_waived(key):
        raise Invalid("an approval finding cannot be waived: a reviewer must approve the email "
                      "(send a proof with `nurture qa proof PROGRAM --to REVIEWER`; the reviewer "
                      "approves it from the proof's link, /review/<token>)", field="key")
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
                  launched: bool, summary: str,
                  assets: dict[str, AssetVersion] | None = None) -> Launch:
    """A launch of a program version with the asset versions the gate checked (or a refused
    one, with the blockers named in `summary`). A launch makes them live: sends, pages and new
    enrollments use them from now on, and running enrollments move to the version."""
    assets = assets or {}
    attempt = Launch(program_id=record.id, version=version, by=by[:200], at=now, launched=launched,
                     summary=summary, assets={path: v.version for path, v in assets.items()})
    session.add(attempt)
    if launched:
        _make_live(session, record, version, assets, now, by)
    return attempt


def _make_live(session: Session, record: ProgramRecord, version: int,
               assets: dict[str, AssetVersion], now: datetime, by: str) -> None:
    record.launched_at = record.launched_at or now
    for asset_version in assets.values():
        session.get(Asset, asset_version.asset_id).live_version = asset_version.version
    if record.live_version != version:
        record.live_version = version
        session.flush()
        program = program_at(session, record.id, version)
        migrate_enrollments(session=session, program_id=record.id, program=program, now=now,
                            actor=f"launch:{by}"[:200])
        launched = set(session.scalars(select(Launch.version).where(
            Launch.program_id == record.id, Launch.launched.is_(True))))
        adopt_launched_version(session=session, program_id=record.id, program=program,
                               launched_versions=launched, now=now)


@dataclass(frozen=True)
class PendingChange:
    """Something loaded or uploaded that leads do not get until the next launch, and why."""

    what: str  # "program", or an asset's path
    live: int | None  # the version leads get now (None: nothing yet)
    pending: int | None  # the version waiting (None: no valid version)
    why: str
    ready: bool = True  # nothing but the launch itself holds it back (approved, or a page)

    def __str__(self) -> str:
        live = f"live v{self.live}" if self.live else "not live yet"
        pending = f"v{self.pending}" if self.pending else "no valid version"
        return f"{self.what}: {pending} ({live}): {self.why}"

    def to_dict(self) -> dict:
        return {"what": self.what, "live": self.live, "pending": self.pending, "why": self.why}


def pending_changes(*, session: Session, record: ProgramRecord) -> list[PendingChange]:
    """What the next launch would let out: a newer program version, and each email and page
    of it whose current version is not the live one, with why it waits (its approval); and a
    live email a reviewer rejected since (it is still sent: the launch gate blocks on it)."""
    spec = program_at(session, record.id, record.current_version)
    pending = []
    if record.current_version != record.live_version:
        loaded = version_row(session, record.id, record.current_version).created_at
        pending.append(PendingChange("program", record.live_version, record.current_version,
                                     f"loaded {loaded:%Y-%m-%d %H:%M} UTC, not launched"))
    approvals = {a.asset: a for a in approval_status(session=session, program_name=record.name)}
    assets = {a.path: a for a in session.scalars(select(Asset).where(
        Asset.program_id == record.id, Asset.path.in_(spec.asset_files)))}
    for path in spec.asset_files:
        asset = assets.get(path)
        live = asset.live_version if asset else None
        current = asset.current_version if asset else None
        approval = approvals.get(path)
        if current is None or current != live:
            why, ready = _waiting_on(approval)
            pending.append(PendingChange(path, live, current, why, ready and current is not None))
        elif approval is not None and approval.state == "rejected":
            pending.append(PendingChange(path, live, current, ready=False, why=(
                _waiting_on(approval)[0] + " after launch: leads still get it until a fixed "
                "version is uploaded and launched")))
    return pending


def pending_lines(pending: list[PendingChange]) -> list[str]:
    """The pending changes in words, one per line. A first launch (nothing live yet) is one
    line for the whole program plus the emails not yet approved, not a line per file."""
    if not pending or pending[0].what != "program" or pending[0].live is not None:
        return [str(change) for change in pending]
    files = pending[1:]
    waiting = [change for change in files if not change.ready]
    first = (f"program: v{pending[0].pending}, first launch, with {len(files)} emails and pages "
             f"({len(files) - len(waiting)} of them approved or pages)")
    return [first] + [str(change) for change in waiting]


def _waiting_on(approval) -> tuple[str, bool]:
    """Why a changed file waits, and whether only the launch itself holds it back."""
    if approval is None:
        return "a page: the QA gate checks it at launch", True
    if approval.problem:
        return approval.problem, False
    if approval.approved:
        return f"approved by {', '.join(approval.approved_by)}: launch to send it", True
    if approval.state == "rejected":
        return "rejected by " + ", ".join(r.reviewer for r in approval.rejections), False
    if approval.awaiting:
        return f"awaiting approval from {', '.join(approval.awaiting)}", False
    return "not approved: no proof sent yet (`nurture qa proof`)", False


def last_launch(*, session: Session, record: ProgramRecord) -> Launch | None:
    """The launch that let out the live version (when and by whom)."""
    return session.scalar(select(Launch).where(Launch.program_id == record.id,
                                               Launch.launched.is_(True))
                          .order_by(Launch.id.desc()).limit(1))


def is_launched(*, session: Session, record: ProgramRecord) -> bool:
    """Whether leads get the program's newest version and every current asset version."""
    return record.live_version is not None and not pending_changes(session=session,
                                                                   record=record)


def launch_unchecked(*, session: Session, name: str, by: str, now: datetime, why: str) -> None:
    """Launch without the gate, recorded as such: for benchmarks and fixtures that measure
    sending, never for a program customers receive (`nurture launch` runs the gate)."""
    record, spec = current_program(session=session, name=name)
    found = current_versions(session=session, program_id=record.id, paths=spec.asset_files)
    record_launch(session=session, record=record, version=record.current_version, by=by, now=now,
                  launched=True, summary=f"launched without the QA gate: {why}",
                  assets={p: v for p, v in found.items() if isinstance(v, AssetVersion)})


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


def launch_findings(*, session: Session, program_id: int, path: str, version: int) -> list[str]:
    """The blockers the newest refused launch of the program named for `path` at `version`
    (its summary lines `code path location: message`), approval findings left out: the gate
    is not re-run here, its stored outcome is read. Empty when no refused launch checked that
    version, or the newest one that did found nothing else about it."""
    attempts = session.scalars(select(Launch).where(Launch.program_id == program_id,
                                                    Launch.launched.is_(False))
                               .order_by(Launch.at.desc(), Launch.id.desc()))
    for attempt in attempts:
        if (attempt.assets or {}).get(path) != version:
            continue
        found = []
        for line in attempt.summary.splitlines():
            code, _, rest = line.partition(" ")
            if rest.startswith(f"{path} ") and not code.startswith(APPROVAL_FINDINGS):
                found.append(f"{code} {rest[len(path) + 1:]}")
        return found
    return []
