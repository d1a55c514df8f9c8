"""Proofs: every email of a program, as a sample lead of each persona would receive it, sent to
reviewers with a banner naming what it is and signed links to approve or reject it.

Everything is rendered (strictly: an unresolved merge field is an error) before anything is
sent, so a program with one broken email sends no proofs at all rather than half of them.
Each proof sent is stored (its id is in the review links); one that the server refused is not.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import make_msgid

from markupsafe import Markup
from sqlalchemy.orm import Session

from engine.assets.models import AssetVersion
from engine.assets.service import current_version
from engine.errors import Invalid, NotFound
from engine.launch.approvals import review_token, review_url
from engine.launch.models import Proof
from engine.launch.samples import Sample, sample_leads
from engine.leads.fields import normalise_email
from engine.pages.service import preview_token
from engine.programs.models import ProgramRecord
from engine.programs.spec import Email, Program
from engine.programs.store import current_program
from engine.render.message import build_message, sender_domain
from engine.render.personalise import Links, Rendered, RenderFailed, make_context, render_email
from engine.sending.transport import Transport

MAX_REVIEWERS = 20
SUBJECT_PREFIX = "[PROOF]"
MAX_LISTED_FAILURES = 20


class ProofsNotRendered(Invalid):
    """Some email did not render for some persona: nothing was sent."""

    def __init__(self, failures: list[str]):
        shown = failures[:MAX_LISTED_FAILURES]
        more = len(failures) - len(shown)
        detail = ("no proofs sent: " + "; ".join(shown)
                  + (f"; and {more} more" if more else ""))
        super().__init__(detail, field="program")
        self.failures = failures


@dataclass(frozen=True)
class Undelivered:
    """A proof the server did not accept (not stored)."""

    email_key: str
    persona: str
    reviewer: str
    reason: str
    permanent: bool


class SentProofs(list):
    """The proofs sent (a list[Proof]), plus what was not: `failures` (refused by the server)
    and `skipped` (not attempted after a temporary failure, or to a refused reviewer)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[Undelivered] = []
        self.skipped = 0

    @property
    def complete(self) -> bool:
        return not self.failures and not self.skipped


@dataclass(frozen=True)
class RenderedProof:
    email: Email
    version: AssetVersion
    sample: Sample
    rendered: Rendered


@dataclass
class _Run:
    """What one send_proofs call shares across its messages."""

    session: Session
    record: ProgramRecord
    program: Program
    transport: Transport
    secret_key: str
    base_url: str
    now: datetime
    refused: set[str] = field(default_factory=set)  # reviewers refused permanently
    stopped: bool = False  # after a temporary failure nothing more is attempted


def clean_reviewers(reviewers: list[str] | None) -> list[str]:
    """Valid, lower-cased, de-duplicated addresses, at most MAX_REVIEWERS. Raises Invalid."""
    if not reviewers:
        raise Invalid("name at least one reviewer to send the proofs to", field="to")
    if len(reviewers) > MAX_REVIEWERS:
        raise Invalid(f"{len(reviewers)} reviewers: at most {MAX_REVIEWERS}", field="to")
    cleaned: list[str] = []
    for index, address in enumerate(reviewers):
        if not isinstance(address, str):
            raise Invalid("a reviewer is an email address", field=f"to.{index}")
        try:
            email = normalise_email(address)
        except Invalid as exc:
            raise Invalid(exc.detail, field=f"to.{index}") from None
        if email not in cleaned:
            cleaned.append(email)
    return cleaned


def send_proofs(*, session: Session, program_name: str, reviewers: list[str],
                transport: Transport, secret_key: str, base_url: str,
                now: datetime) -> SentProofs:
    """Send every email of the program's current version, for a sample lead of each persona,
    to each reviewer. Raises Invalid (bad reviewers, no sender, a render failure: nothing
    sent) or NotFound (no such program). Returns the Proof rows of the messages sent, in order
    of sending; transport failures are in `.failures`, never raised (what was sent stays
    recorded, so its review links work)."""
    addresses = clean_reviewers(reviewers)
    record, program = current_program(session=session, name=program_name)
    if not (program.sender or {}).get("from"):
        raise Invalid(f"program {program_name} has no sender: add `sender: {{from: ...}}`",
                      field="sender")
    rendered = render_proofs(session=session, record=record, program=program,
                             base_url=base_url,
                             page_token=preview_token(secret_key=secret_key, program=record.name))
    run = _Run(session, record, program, transport, secret_key, base_url.rstrip("/"), now)
    sent = SentProofs()
    for item in rendered:
        for reviewer in addresses:
            if run.stopped or reviewer in run.refused:
                sent.skipped += 1
                continue
            proof, failure = _send_one(run, item, reviewer)
            if proof is not None:
                sent.append(proof)
            else:
                sent.failures.append(failure)
    return sent


def render_proofs(*, session: Session, record: ProgramRecord, program: Program,
                  base_url: str, page_token: str | None = None) -> list[RenderedProof]:
    """Every email x persona, rendered strictly from the current asset versions; its page
    links carry `page_token` (a preview: the reviewer sees the pages as they will be).
    Raises ProofsNotRendered naming every email and persona that failed."""
    samples = sample_leads(program)
    results: list[RenderedProof] = []
    failures: list[str] = []
    for email in program.emails.values():
        try:
            version = current_version(session=session, program_id=record.id, path=email.file)
        except (NotFound, Invalid) as exc:
            failures.append(f"{email.key} ({email.file}): {exc.detail}")
            continue
        for sample in samples:
            try:
                output = _render(program, email, version, sample, base_url, page_token)
            except RenderFailed as exc:
                failures.append(f"{email.key} ({email.file}) for persona {sample.persona.key}: "
                                f"{exc.detail}")
                continue
            results.append(RenderedProof(email, version, sample, output))
    if failures:
        raise ProofsNotRendered(failures)
    return results


def _render(program: Program, email: Email, version: AssetVersion, sample: Sample,
            base_url: str, page_token: str | None) -> Rendered:
    context = make_context(lead=sample.lead, program=program, links=Links(
        base_url=base_url, program=program.slug, page_token=page_token))
    # version_id=None: no shared template cache. That cache is keyed by row id, and ids
    # repeat (another database, a deleted or rolled-back row), so a proof could show another
    # version's content. Compiling per persona costs a few ms.
    return render_email(version_id=None, html=version.compiled_html or "",
                        text=version.compiled_text or "", subject=email.subject,
                        context=context, strict=True, where=email.file)


def render_proof(*, session: Session, proof: Proof, base_url: str,
                 page_token: str | None = None) -> Rendered:
    """A sent proof's email again, as its reviewer received it minus the banner: the asset
    version it shows, for the sample lead of its persona, rendered as send_proofs renders.
    Raises NotFound when the program no longer has its email or persona, Invalid
    (RenderFailed) when it no longer renders."""
    record = session.get(ProgramRecord, proof.program_id)
    _, program = current_program(session=session, name=record.name)
    email = program.emails.get(proof.email_key)
    sample = next((s for s in sample_leads(program) if s.persona.key == proof.persona), None)
    if email is None or sample is None:
        raise NotFound(f"{record.name} no longer has the email {proof.email_key!r} or the "
                       f"persona {proof.persona!r} of this proof", field="proof")
    version = session.get(AssetVersion, proof.asset_version_id)
    return _render(program, email, version, sample, base_url, page_token)


def _send_one(run: _Run, item: RenderedProof,
              reviewer: str) -> tuple[Proof | None, Undelivered | None]:
    """Store the proof (its id goes into the links), send it; forget it if refused."""
    domain = sender_domain(run.program.sender)
    proof = Proof(program_id=run.record.id, asset_version_id=item.version.id,
                  email_key=item.email.key, persona=item.sample.persona.key, reviewer=reviewer,
                  message_id=make_msgid(domain=domain), sent_at=run.now)
    run.session.add(proof)
    run.session.flush()
    message = build_message(rendered=proof_content(run, item, proof), sender=run.program.sender,
                            to=reviewer, date=run.now, message_id=proof.message_id,
                            headers=_headers(run, item))
    result = run.transport.send(message)
    if result.sent:  # one recipient per message: sent means that reviewer has it
        return proof, None
    run.session.delete(proof)
    run.session.flush()
    if result.permanent:
        run.refused.add(reviewer)
    else:
        run.stopped = True  # the server is down or slowing us: the rest would fail the same
    reason = f"{result.code} {result.text}".strip() if result.code else result.text
    return None, Undelivered(item.email.key, item.sample.persona.key, reviewer,
                             reason[:300], result.permanent)


def proof_dict(session: Session, proof: Proof) -> dict:
    """A sent proof as the API and the CLI show it."""
    version = session.get(AssetVersion, proof.asset_version_id)
    return {"id": proof.id, "email": proof.email_key, "persona": proof.persona,
            "reviewer": proof.reviewer, "asset_version": version.version,
            "message_id": proof.message_id, "sent_at": proof.sent_at.isoformat()}


def _headers(run: _Run, item: RenderedProof) -> dict[str, str]:
    return {
        # Out-of-office replies and auto-forwarding rules leave machine mail alone.
        "Auto-Submitted": "auto-generated",
        "X-Nurture-Proof": (f"{run.record.name}; email={item.email.key}; "
                            f"version={item.version.version}; "
                            f"persona={item.sample.persona.key}"),
    }


# -- the reviewer banner -----------------------------------------------------------------------

@dataclass(frozen=True)
class Banner:
    program: str
    email: str
    asset: str
    version: int
    persona: str
    approve_url: str
    reject_url: str


def proof_content(run: _Run, item: RenderedProof, proof: Proof) -> Rendered:
    token = review_token(run.secret_key, proof)
    persona = item.sample.persona
    banner = Banner(program=f"{run.program.name} ({run.record.name})",
                    email=item.email.key, asset=item.email.file, version=item.version.version,
                    persona=f"{persona.name} ({persona.key})" if persona.name != persona.key
                    else persona.key,
                    approve_url=review_url(run.base_url, token, "approve"),
                    reject_url=review_url(run.base_url, token, "reject"))
    return with_banner(item.rendered, banner, persona_name=persona.name)


def with_banner(rendered: Rendered, banner: Banner, *, persona_name: str) -> Rendered:
    """The proof as sent: subject marked, banner on top of both parts."""
    subject = " ".join(f"{SUBJECT_PREFIX} [{persona_name}] {rendered.subject}".split())
    return replace(rendered, subject=subject, html=_html_with_banner(rendered.html, banner),
                   text=_text_banner(banner) + rendered.text)


def _html_with_banner(html: str, banner: Banner) -> str:
    """The banner right after <body> (at the very top when there is no body tag)."""
    block = str(_html_banner(banner))
    lower = html.lower()
    start = lower.find("<body")
    end = html.find(">", start) if start >= 0 else -1
    at = end + 1 if end >= 0 else 0
    return html[:at] + block + html[at:]


_CELL = "padding:2px 12px 2px 0;font:14px/20px Helvetica,Arial,sans-serif;color:#1f2933"
_BUTTON = ("display:inline-block;padding:10px 18px;margin:8px 8px 0 0;border-radius:6px;"
           "font:bold 14px/20px Helvetica,Arial,sans-serif;text-decoration:none;color:#ffffff")


def _html_banner(banner: Banner) -> Markup:
    rows = Markup("").join(
        Markup('<tr><td style="{}"><strong>{}</strong></td><td style="{}">{}</td></tr>')
        .format(_CELL, label, _CELL, value)
        for label, value in (("Program", banner.program), ("Email", banner.email),
                             ("File", banner.asset), ("Asset version", banner.version),
                             ("Persona", banner.persona)))
    return Markup(
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0" '
        'data-nurture-proof="banner" style="background:#fef3c7;border-bottom:4px solid #b45309">'
        '<tr><td style="padding:16px 24px">'
        '<p style="margin:0 0 8px;font:bold 16px/22px Helvetica,Arial,sans-serif;color:#92400e">'
        'PROOF FOR REVIEW: not sent to any lead</p>'
        '<table role="presentation" cellpadding="0" cellspacing="0" border="0">{rows}</table>'
        '<a href="{approve}" style="{button};background:#15803d">Approve</a>'
        '<a href="{reject}" style="{button};background:#b91c1c">Reject (with a comment)</a>'
        '</td></tr></table>'
    ).format(rows=rows, approve=banner.approve_url, reject=banner.reject_url, button=_BUTTON)


def _text_banner(banner: Banner) -> str:
    rule = "=" * 64
    return (f"{rule}\nPROOF FOR REVIEW: not sent to any lead\n"
            f"Program:       {banner.program}\n"
            f"Email:         {banner.email}\n"
            f"File:          {banner.asset}\n"
            f"Asset version: {banner.version}\n"
            f"Persona:       {banner.persona}\n\n"
            f"Approve: {banner.approve_url}\n"
            f"Reject (asks for a comment): {banner.reject_url}\n"
            f"{rule}\n\n")
