"""The launch gate: run every QA check on a program, apply the recorded waivers, and say
whether anything still blocks a launch. Checks return findings; the gate only reads them.

A program is checked as it would be sent: the stored current version of a loaded program
(or a directory, for a check before loading; approvals and waivers then do not apply).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.assets.models import AssetVersion
from engine.assets.service import INVALID, current_versions
from engine.launch.approvals import approval_status
from engine.launch.models import Waiver
from engine.launch.service import may_be_waived
from engine.programs.loader import (
    SCENARIO_FILES,
    LoadedProgram,
    ProgramInvalid,
    is_program_dir,
    load_program_dir,
)
from engine.programs.models import ProgramRecord
from engine.programs.store import current_program, version_row
from engine.render.compile import compile_asset
from engine.render.personalise import RenderFailed, make_context, render_email
from qa.findings import Finding, Severity
from qa.formatting import check_formatting, sending_links
from qa.links import LinkCheckOptions, check_assets
from qa.merge_fields import sample_leads
from qa.program_checks import review_program
from qa.screenshots import screenshot_emails


@dataclass(frozen=True)
class GateOptions:
    base_url: str
    links: LinkCheckOptions = field(default_factory=LinkCheckOptions)
    screenshots_dir: Path | None = None  # None: no screenshots


@dataclass
class QaReport:
    program: str
    version: int | None  # None: a directory not loaded
    content_hash: str
    checked_at: datetime
    findings: list[Finding]
    waivers: dict[str, dict] = field(default_factory=dict)  # finding key -> reason, by, at
    sections: dict = field(default_factory=dict)  # scenario results, approvals, screenshots

    @property
    def blockers(self) -> list[Finding]:
        return [f for f in self.findings
                if f.severity is Severity.BLOCKER and f.key not in self.waivers]

    @property
    def passed(self) -> bool:
        return not self.blockers

    def counts(self) -> dict[str, int]:
        counts = {severity.value: 0 for severity in Severity}
        for finding in self.findings:
            if finding.key not in self.waivers:
                counts[finding.severity.value] += 1
        counts["waived"] = sum(1 for f in self.findings if f.key in self.waivers)
        return counts

    def to_dict(self) -> dict:
        return {
            "program": self.program, "version": self.version, "content_hash": self.content_hash,
            "checked_at": self.checked_at.isoformat(), "passed": self.passed,
            "counts": self.counts(),
            "findings": [{**f.to_dict(), "waiver": self.waivers.get(f.key)}
                         for f in self.findings],
            **self.sections,
        }


@dataclass(frozen=True)
class Target:
    """What the gate checks: a program's files, and its stored record when loaded. A loaded
    program's emails and pages are read from their current asset versions (what proofs show,
    approvals name and a launch lets out), `assets` naming each: path -> version, or why the
    file has no valid version."""

    loaded: LoadedProgram
    record: ProgramRecord | None = None
    version: int | None = None
    assets: dict[str, AssetVersion | str] = field(default_factory=dict)

    @property
    def checked_versions(self) -> dict[str, AssetVersion]:
        return {path: v for path, v in self.assets.items() if isinstance(v, AssetVersion)}


def load_target(*, session: Session | None, program: str) -> Target:
    """A program directory (one holding program.yaml), else the name of a loaded program (its
    current version, with the current version of each email and page). Raises ProgramInvalid
    or NotFound."""
    if is_program_dir(program):
        return Target(loaded=load_program_dir(program))
    if session is None:
        raise ProgramInvalid([])
    record, spec = current_program(session=session, name=program)
    row = version_row(session, record.id, record.current_version)
    assets = current_versions(session=session, program_id=record.id, paths=spec.asset_files)
    files = dict(row.files)
    for name, version in assets.items():
        if isinstance(version, AssetVersion):
            files[name] = version.content.decode("utf-8")
    loaded = LoadedProgram(program=spec, files=files, content_hash=row.content_hash,
                           source=row.source)
    return Target(loaded=loaded, record=record, version=record.current_version, assets=assets)


# A check takes the target (and the session, None for a directory) and returns findings,
# possibly adding a section to the report.
Check = Callable[[Target, Session | None, GateOptions, dict], list[Finding]]


def run_gate(*, target: Target, session: Session | None, options: GateOptions, now: datetime,
             checks: list[Check] | None = None,
             progress: Callable[[str], None] | None = None) -> QaReport:
    """Run the checks in order; `progress` hears each one's name as it starts."""
    sections: dict = {}
    findings: list[Finding] = []
    for check in checks if checks is not None else default_checks():
        if progress is not None:
            progress(check.__name__.removesuffix("_check").replace("_", " "))
        findings += check(target, session, options, sections)
    sections["assets"] = [{"asset": path, "version": v.version, "content_hash": v.content_hash}
                          for path, v in target.checked_versions.items()]
    report = QaReport(program=target.loaded.program.name, version=target.version,
                      content_hash=target.loaded.content_hash, checked_at=now,
                      findings=_ordered(findings), sections=sections)
    if session is not None and target.record is not None:
        report.waivers = waivers_for(session=session, program_id=target.record.id)
    return report


def default_checks() -> list[Check]:
    return [program_logic_check, uploads_check, formatting_check, links_check, approvals_check,
            screenshots_check]


def uploads_check(target: Target, session, options: GateOptions, sections: dict) -> list[Finding]:
    """A newer upload that did not compile is not what the gate checks (nor what is sent):
    say so, or a marketer may believe the fix was checked."""
    if session is None:
        return []
    findings = []
    for path, version in target.checked_versions.items():
        newest = session.scalar(select(AssetVersion).where(AssetVersion.asset_id == version.asset_id)
                                .order_by(AssetVersion.version.desc()).limit(1))
        if newest.version > version.version and newest.status == INVALID:
            errors = "; ".join(f"line {e['line']}: {e['message']}" for e in newest.errors or [])
            findings.append(Finding(
                Severity.WARNING, "asset.upload-invalid", path, f"v{newest.version}",
                f"Version {newest.version} was uploaded but is invalid ({errors}); the gate "
                f"checked version {version.version}, which is what would be sent."))
    return findings


def formatting_check(target: Target, session, options: GateOptions, sections: dict) -> list[Finding]:
    return check_formatting(target.loaded, base_url=options.base_url)


def links_check(target: Target, session, options: GateOptions, sections: dict) -> list[Finding]:
    """Every link of every email (as rendered for a sample lead) and landing page."""
    own = (options.base_url.rstrip("/") + "/",)
    links = LinkCheckOptions(**{**options.links.__dict__, "own_prefixes": own})
    base = options.base_url.rstrip("/")
    program = target.loaded.program
    pages = {page.file: f"{base}/p/{program.slug}/{page.slug}" for page in program.pages.values()}
    return check_assets(rendered_assets(target.loaded, options.base_url), links, base_urls=pages)


def program_logic_check(target: Target, session, options: GateOptions,
                        sections: dict) -> list[Finding]:
    """Static checks of the tracks and rules, then the program's scenario table walked through
    the real decision logic, with the paths it covered."""
    stored = {name: text for name, text in target.loaded.files.items() if name in SCENARIO_FILES}
    with tempfile.TemporaryDirectory() as work:
        table = None
        for name, text in stored.items():
            table = Path(work) / name
            table.write_text(text, encoding="utf-8")
        review = review_program(target.loaded.program, scenario_file=table)
    sections["scenarios"] = [{"name": r.scenario.name, "passed": r.passed,
                              "difference": r.first_difference} for r in review.results]
    if review.coverage is not None:
        sections["coverage"] = review.coverage.counts()
    return review.findings


def approvals_check(target: Target, session, options: GateOptions,
                    sections: dict) -> list[Finding]:
    """Each email's current asset version approved by a reviewer (`nurture qa proof`); a
    directory that is not loaded has nothing to approve yet, which is said as info."""
    if session is None or target.record is None:
        return [Finding(Severity.INFO, "approval.not-loaded", "program.yaml", "program",
                        "Approvals apply to a loaded program: load it, send proofs with "
                        "`nurture qa proof`, and run QA on its name.")]
    statuses = approval_status(session=session, program_name=target.record.name,
                               versions=target.assets)
    sections["approvals"] = [{**s.to_dict(), "status": s.state,
                              "detail": ", ".join(s.approved_by) or ", ".join(s.awaiting)}
                             for s in statuses]
    return [_approval_finding(status) for status in statuses if not status.approved]


def _approval_finding(status) -> Finding:
    where = f"{status.email_key} v{status.version}" if status.version else status.email_key
    if status.state == "rejected":
        comments = "; ".join(f"{r.reviewer}: {r.comment}" for r in status.rejections)
        return Finding(Severity.BLOCKER, "approval.rejected", status.asset, where,
                       f"Rejected by a reviewer ({comments}). Fix it, upload, and send a proof.")
    waiting = (f"awaiting {', '.join(status.awaiting)}" if status.awaiting
               else "no proof sent yet: `nurture qa proof PROGRAM --to ...`")
    return Finding(Severity.BLOCKER, "approval.missing", status.asset, where,
                   f"This version is not approved ({status.problem or waiting}).")


def screenshots_check(target: Target, session, options: GateOptions,
                      sections: dict) -> list[Finding]:
    """Each email at desktop and mobile width in headless Chromium (skipped, saying so, when
    no browser is installed), saved beside the report."""
    if options.screenshots_dir is None:
        return []
    emails = {name: html for name, html in
              rendered_assets(target.loaded, options.base_url).items()
              if name in {e.file for e in target.loaded.program.emails.values()}}
    shots = screenshot_emails(emails, options.screenshots_dir)
    sections["screenshots"] = [shot.to_dict() for shot in shots.shots]
    return [f for f in shots.findings if f.code != "render.screenshot"]  # one per shot: noise


def rendered_assets(loaded: LoadedProgram, base_url: str) -> dict[str, str]:
    """Each email rendered for the first persona's sample lead, and each page's HTML; an
    asset that does not compile or render is left out (formatting reports why)."""
    program = loaded.program
    sample = sample_leads(program)[0].lead
    context = make_context(lead=sample, program=program, links=sending_links(program, base_url))
    rendered: dict[str, str] = {}
    for email in program.emails.values():
        compiled = compile_asset("email", loaded.files[email.file])
        if not compiled.valid or compiled.html is None:
            continue
        try:
            rendered[email.file] = render_email(
                version_id=None, html=compiled.html, text=compiled.text or "",
                subject=email.subject, context=context, where=email.file).html
        except RenderFailed:
            continue  # the formatting check reports why, with the persona and variable
    for page in program.pages.values():
        compiled = compile_asset("page", loaded.files[page.file])
        if compiled.valid and compiled.html:
            rendered[page.file] = compiled.html
    return rendered


def waivers_for(*, session: Session, program_id: int) -> dict[str, dict]:
    """The program's waivers that count: one of an approval finding, stored before such
    waivers were refused, does not stand in for a reviewer's approval."""
    rows = session.scalars(select(Waiver).where(Waiver.program_id == program_id))
    return {w.finding_key: {"reason": w.reason, "by": w.by, "at": w.at.isoformat()}
            for w in rows if may_be_waived(w.finding_key)}


_ORDER = {Severity.BLOCKER: 0, Severity.WARNING: 1, Severity.INFO: 2}


def _ordered(findings: list[Finding]) -> list[Finding]:
    unique = {f.key: f for f in findings}
    return sorted(unique.values(), key=lambda f: (_ORDER[f.severity], f.asset, f.code,
                                                  f.location))
