"""Formatting checks of a program's emails, as a pipeline of small checks returning findings.

Entry point: `check_program_formatting(program_dir)`. For each email it
1. validates the MJML (qa.mjml_rules: warnings) and compiles it as an upload would (errors
   are blockers: the email cannot be sent);
2. reports client-support problems of the compiled HTML (qa.compat: warnings);
3. renders it for a sample lead of every persona with strict undefined variables
   (qa.merge_fields: unresolved or misspelled merge fields are blockers);
4. runs EMAIL_CHECKS on each persona's rendered email: images, size, text part, unsubscribe
   link, postal address, subject, preheader, link texts. Findings repeated across personas
   are reported once.

Rules worth knowing (each is one function below):
- Size: the HTML as sent (links wrapped for click tracking and the open pixel added, with
  tokens as long as real ones) over 102 KB (102 * 1024 bytes) is a blocker: Gmail clips it,
  hiding the footer with the unsubscribe link. Over 90% of that is a warning.
- Unsubscribe: the HTML must link to Nurture's unsubscribe endpoint, `{{ links.unsubscribe }}`
  (its rendered URL; without one, a URL whose path starts with /u/). A hand-written
  unsubscribe URL does not count (it cannot carry the lead's token), nor does the
  List-Unsubscribe header the sender adds: not every client shows it, and CAN-SPAM asks for a
  visible opt-out in the message.
- Postal address (CAN-SPAM): when program.yaml sets `sender.address`, that text must appear in
  the email's visible text (whitespace and case ignored). Otherwise an address is recognised
  in the visible text as, within three consecutive lines, a street (a house number next to a
  street word such as "12 rue de la Paix", "350 Fifth Avenue", "Hauptstrasse 5", or a PO box)
  together with a postcode (4-5 digits, optionally ZIP+4, or a UK, Canadian or Dutch one).
- Alt text: an image without alt text (absent or empty) is a warning, a blocker when it is a
  link (the link then has no text at all when images are off, and no accessible name);
  tracking pixels and images marked role=presentation or aria-hidden are skipped.
- Width: Outlook for Windows sizes images by the width attribute in pixels; an image without
  one (or with a percentage) is a warning.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from engine.pages.service import page_token
from engine.programs.loader import LoadedProgram, ProgramInvalid, load_program_dir
from engine.programs.spec import Email, Program
from engine.render.compile import compile_asset
from engine.render.personalise import DEFAULT_BASE_URL, Links, RenderContext, RenderFailed
from engine.sending.compose import Signing, tracked
from engine.tracking.tokens import send_token, unsubscribe_token
from qa.compat import check_client_support
from qa.findings import Finding, Severity
from qa.html_scan import Scan, scan_html
from qa.merge_fields import SAMPLE_LEAD_ID, render_personas
from qa.mjml_rules import check_mjml

GMAIL_CLIP_BYTES = 102 * 1024
NEAR_CLIP_BYTES = int(GMAIL_CLIP_BYTES * 0.9)
MAX_SUBJECT_CHARS = 78
MAX_PREHEADER_CHARS = 140
_QA_SECRET = "nurture-qa-measure"  # signs sizing tokens only; they are never sent
_SAMPLE_OUTBOX_ID = 10_000_000


@dataclass(frozen=True)
class RenderedEmail:
    """One email as a lead would receive it, plus what the checks need to point at it."""

    asset: str  # the program file, e.g. "emails/welcome_it.mjml"
    subject: str
    html: str  # rendered, before click tracking
    text: str | None  # the plain-text part
    source: str = ""  # the MJML, for line numbers
    sent_html: str | None = None  # as sent (click tracking, pixel); defaults to html
    sender_address: str | None = None  # program.yaml sender.address
    declared_preheader: str | None = None  # program.yaml emails.<key>.preheader
    unsubscribe_url: str | None = None  # what {{ links.unsubscribe }} rendered to


def _source_line(email: RenderedEmail, needle: str) -> str:
    """' (line N)' for the first line of the MJML holding `needle`, or ''."""
    at = email.source.find(needle) if needle else -1
    return f" (line {email.source.count(chr(10), 0, at) + 1})" if at >= 0 else ""


def _finding(severity: Severity, code: str, email: RenderedEmail, location: str,
             message: str) -> Finding:
    return Finding(severity, code, email.asset, location, message)


# -- images -----------------------------------------------------------------------------------

def check_alt_text(email: RenderedEmail, scan: Scan) -> list[Finding]:
    findings = []
    for image in scan.images:
        if image.decorative or (image.alt or "").strip():
            continue
        severity = Severity.BLOCKER if image.linked else Severity.WARNING
        what = "a linked image" if image.linked else "an image"
        findings.append(_finding(
            severity, "format.missing-alt", email, f"img {image.src[:200]}",
            f"{what} has no alt text{_source_line(email, image.src)}: add alt=\"...\" saying "
            "what it shows (images are often blocked, and screen readers read it)"))
    return findings


def check_image_width(email: RenderedEmail, scan: Scan) -> list[Finding]:
    findings = []
    for image in scan.images:
        if image.decorative or re.fullmatch(r"\s*\d+(?:px)?\s*", image.width or ""):
            continue
        problem = (f"has width=\"{image.width}\" in the compiled HTML" if image.width
                   else "has no width attribute")
        findings.append(_finding(
            Severity.WARNING, "format.image-width", email, f"img {image.src[:200]}",
            f"the image{_source_line(email, image.src)} {problem}: Outlook for Windows sizes "
            "images by a width attribute in pixels (a percentage stretches the image to the "
            "column, none shows it at the file's own size)"))
    return findings


# -- size and parts ---------------------------------------------------------------------------

def check_size(email: RenderedEmail, scan: Scan) -> list[Finding]:
    size = len((email.sent_html or email.html).encode("utf-8"))
    kb = f"{size / 1024:.0f} KB"
    if size > GMAIL_CLIP_BYTES:
        return [_finding(Severity.BLOCKER, "format.html-size", email, "html",
                         f"the HTML as sent is {kb} ({size} bytes): Gmail clips messages over "
                         "102 KB, hiding the rest of the email and its unsubscribe link")]
    if size > NEAR_CLIP_BYTES:
        return [_finding(Severity.WARNING, "format.html-size-near", email, "html",
                         f"the HTML as sent is {kb}, close to Gmail's 102 KB clipping limit")]
    return []


def check_text_part(email: RenderedEmail, scan: Scan) -> list[Finding]:
    if email.text and email.text.strip():
        return []
    return [_finding(Severity.BLOCKER, "format.text-missing", email, "text part",
                     "the email has no plain-text part: spam filters penalise HTML-only mail "
                     "and some readers show only text")]


# -- legal footer -----------------------------------------------------------------------------

def _is_unsubscribe_url(href: str, expected: str | None) -> bool:
    if expected:
        return href == expected
    try:
        return urlsplit(href).path.startswith("/u/")
    except ValueError:
        return False


def check_unsubscribe(email: RenderedEmail, scan: Scan) -> list[Finding]:
    if any(_is_unsubscribe_url(a.href, email.unsubscribe_url) for a in scan.anchors):
        return []
    other = next((a.href for a in scan.anchors if "unsubscribe" in (a.href + a.text).lower()),
                 None)
    hint = (f" (the link to {other[:100]} does not unsubscribe through Nurture)"
            if other else "")
    return [_finding(Severity.BLOCKER, "format.unsubscribe-missing", email, "footer",
                     f"no unsubscribe link{hint}: add <a href=\"{{{{ links.unsubscribe }}}}\">"
                     "Unsubscribe</a> to the footer")]


_STREET_WORDS = (
    r"street|st|road|rd|avenue|ave|boulevard|blvd|lane|ln|drive|dr|way|place|pl|square|sq|"
    r"court|ct|parkway|pkwy|highway|hwy|suite|ste|floor|fl|rue|bd|chemin|allee|allée|quai|"
    r"cours|impasse|strasse|straße|str|weg|platz|gasse|ring|via|viale|piazza|corso|calle|"
    r"avenida|plaza|paseo|rua|laan|straat|gracht|plein|kade|vej|gade|gatan|gata|vägen|ul")
_STREET = re.compile(
    rf"\b\d{{1,5}}[a-z]?(?:[-/]\d{{1,5}})?,?\s+(?:[^\W\d_][\w'.-]*\s+){{0,4}}?(?:{_STREET_WORDS})"
    rf"\b\.?"
    rf"|\b[^\W\d_]*(?:strasse|straße|str\.|weg|platz|gasse|laan|straat|gatan|vej|gade)"
    rf"\s+\d{{1,5}}[a-z]?\b"
    rf"|\b(?:p\.?\s?o\.?\s?box|postfach|bp|boîte postale)\s*\d+",
    re.IGNORECASE)
_POSTCODE = re.compile(
    r"\b\d{4,5}(?:-\d{4})?\b"  # FR, DE, US ZIP(+4), BE, CH, AT, DK, ...
    r"|\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b"  # UK
    r"|\b[A-Z]\d[A-Z]\s?\d[A-Z]\d\b"  # Canada
    r"|\b\d{4}\s?[A-Z]{2}\b")  # Netherlands


def looks_like_postal_address(text: str) -> bool:
    """A street and a postcode within three consecutive lines of `text`."""
    lines = [line for line in text.splitlines() if line.strip()]
    for i in range(len(lines)):
        window = "\n".join(lines[i:i + 3])
        if _STREET.search(window) and _POSTCODE.search(window):
            return True
    return False


def _normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


def check_postal_address(email: RenderedEmail, scan: Scan) -> list[Finding]:
    text = scan.text
    if email.sender_address:
        if _normalised(email.sender_address) in _normalised(text):
            return []
        detail = (f"the sender's postal address ({email.sender_address[:120]}) from program.yaml "
                  "does not appear in the email")
    elif looks_like_postal_address(text):
        return []
    else:
        detail = ("no postal address found (a street with a house number and a postcode), "
                  "or set sender.address in program.yaml and show it")
    return [_finding(Severity.BLOCKER, "format.postal-address-missing", email, "footer",
                     f"{detail}: CAN-SPAM requires the sender's postal address in every "
                     "message; add it to the footer")]


# -- subject and preheader --------------------------------------------------------------------

SPAM_PHRASES = (
    "100% free", "act now", "apply now", "buy now", "cash bonus", "click here",
    "congratulations", "double your", "earn money", "free gift", "guaranteed", "limited time",
    "make money", "no cost", "order now", "risk-free", "risk free", "urgent", "winner",
    "you have been selected", "$$$",
)


def _shouting(subject: str) -> bool:
    letters = [c for c in subject if c.isalpha()]
    return len(letters) >= 8 and sum(c.isupper() for c in letters) >= 0.7 * len(letters)


def check_subject(email: RenderedEmail, scan: Scan) -> list[Finding]:
    subject = email.subject.strip()
    if not subject:
        return [_finding(Severity.BLOCKER, "format.subject-missing", email, "subject",
                         "the subject is empty once rendered")]
    findings = []
    if len(subject) > MAX_SUBJECT_CHARS:
        findings.append(_finding(
            Severity.WARNING, "format.subject-long", email, "subject",
            f"the subject has {len(subject)} characters: most clients cut it after about "
            f"{MAX_SUBJECT_CHARS} (mobile after about 40)"))
    if _shouting(subject):
        findings.append(_finding(Severity.WARNING, "format.subject-caps", email, "subject",
                                 f"the subject is in capitals ({subject[:80]!r}): spam filters "
                                 "and readers treat it as shouting"))
    if subject.count("!") >= 2 or re.search(r"[?!]{2,}", subject):
        findings.append(_finding(Severity.WARNING, "format.subject-punctuation", email,
                                 "subject", f"the subject has repeated ! or ? ({subject[:80]!r})"))
    lowered = subject.lower()
    spammy = [p for p in SPAM_PHRASES if re.search(rf"(?<!\w){re.escape(p)}(?!\w)", lowered)]
    if spammy:
        findings.append(_finding(Severity.WARNING, "format.subject-spam-words", email,
                                 "subject", f"the subject uses spam-prone wording: "
                                 f"{', '.join(spammy)}"))
    return findings


def check_preheader(email: RenderedEmail, scan: Scan) -> list[Finding]:
    declared = email.declared_preheader
    if not scan.preheader:
        hint = (" (the preheader in program.yaml is not sent: put it in <mj-preview>)"
                if declared else "")
        return [_finding(Severity.WARNING, "format.preheader-missing", email, "preheader",
                         f"no preheader{hint}: add <mj-preview> to <mj-head>, or clients show "
                         "the first words of the body (often 'View in browser') after the "
                         "subject")]
    findings = []
    if len(scan.preheader) > MAX_PREHEADER_CHARS:
        findings.append(_finding(
            Severity.WARNING, "format.preheader-long", email, "preheader",
            f"the preheader has {len(scan.preheader)} characters: clients show at most about "
            f"{MAX_PREHEADER_CHARS}"))
    if declared and "{" not in declared and \
            _normalised(declared) != _normalised(scan.preheader):
        findings.append(_finding(
            Severity.WARNING, "format.preheader-mismatch", email, "preheader",
            f"program.yaml's preheader ({declared[:80]!r}) differs from the email's <mj-preview> "
            f"({scan.preheader[:80]!r}), which is the one sent"))
    return findings


# -- links that say one thing and do another --------------------------------------------------

_SHOWN_URL = re.compile(
    r"(?:(?P<scheme>https?://)|(?P<www>www\.))?(?P<host>[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
    r"(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+)(?::\d+)?(?:[/?#]\S*)?", re.IGNORECASE)
_COMMON_TLDS = frozenset({
    "com", "net", "org", "io", "co", "ai", "app", "dev", "info", "biz", "eu", "uk", "de", "fr",
    "us", "ca", "au", "nl", "es", "it", "ch", "be", "example", "test", "cloud", "tech",
})


def _shown_host(text: str) -> str | None:
    """The host a link's text displays, when the whole text is a URL or domain name."""
    match = _SHOWN_URL.fullmatch(text.strip().rstrip(".,;:!?)"))
    if not match:
        return None
    host = match.group("host").lower()
    if match.group("scheme") or match.group("www"):
        return host
    return host if host.rpartition(".")[2] in _COMMON_TLDS else None


def _same_site(shown: str, actual: str) -> bool:
    shown, actual = shown.removeprefix("www."), actual.removeprefix("www.")
    return shown == actual or actual.endswith("." + shown) or shown.endswith("." + actual)


def check_link_text(email: RenderedEmail, scan: Scan) -> list[Finding]:
    findings = []
    for anchor in scan.anchors:
        shown = _shown_host(anchor.text) if anchor.text else None
        if not shown:
            continue
        try:
            split = urlsplit(anchor.href)
            actual = (split.hostname or "").lower()
        except ValueError:
            continue
        if split.scheme not in ("http", "https") or not actual or _same_site(shown, actual):
            continue
        findings.append(_finding(
            Severity.WARNING, "format.deceptive-link", email, f"link {anchor.href[:200]}",
            f"the link text shows {shown} but the link goes to {actual}: filters treat this as "
            "phishing; show the real address or use words"))
    return findings


def check_scan_complete(email: RenderedEmail, scan: Scan) -> list[Finding]:
    if not scan.truncated:
        return []
    return [_finding(Severity.INFO, "format.partly-checked", email, "html",
                     "the HTML is too large or too deeply nested to check completely: only its "
                     "beginning was checked")]


EmailCheck = Callable[[RenderedEmail, Scan], list[Finding]]
EMAIL_CHECKS: tuple[EmailCheck, ...] = (
    check_alt_text, check_image_width, check_size, check_text_part, check_unsubscribe,
    check_postal_address, check_subject, check_preheader, check_link_text, check_scan_complete,
)


def check_email(email: RenderedEmail) -> list[Finding]:
    """Every per-email check on one rendered email."""
    scan = scan_html(email.html)
    return [finding for check in EMAIL_CHECKS for finding in check(email, scan)]


# -- a program --------------------------------------------------------------------------------

def sending_links(program: Program, base_url: str) -> Links:
    """Links carrying signed tokens as long as a real send's, so sizes are measured right."""
    ids = {"lead_id": SAMPLE_LEAD_ID, "outbox_id": _SAMPLE_OUTBOX_ID}
    return Links(base_url=base_url, program=program.slug,
                 token=unsubscribe_token(_QA_SECRET, **ids),
                 view_token=send_token(_QA_SECRET, "view", **ids),
                 page_token=page_token(secret_key=_QA_SECRET, lead_id=SAMPLE_LEAD_ID))


def as_sent(*, html: str, text: str, subject: str, context: RenderContext) -> str | None:
    """The compiled email's HTML as engine/sending/compose.py sends it to a sample lead (click
    tracking and the open pixel); None when it does not render."""
    signing = Signing(secret_key=_QA_SECRET, base_url=context.links.base_url)
    try:
        return tracked(version_id=None, html=html, text=text, subject=subject, context=context,
                       where="qa", signing=signing, lead_id=SAMPLE_LEAD_ID,
                       outbox_id=_SAMPLE_OUTBOX_ID).rendered.html
    except RenderFailed:
        return None


def check_email_asset(*, program: Program, email: Email, source: str,
                      base_url: str = DEFAULT_BASE_URL) -> list[Finding]:
    """All formatting findings for one email of a program, from its MJML source, each
    reported once however many personas it shows up for."""
    findings = check_mjml(email.file, source)
    compiled = compile_asset("email", source)
    if not compiled.valid or compiled.html is None or compiled.text is None:
        # compile refuses every unknown tag already, as a blocker
        findings = [f for f in findings if f.code != "mjml.unknown-tag"]
        return _unique(findings + [Finding(Severity.BLOCKER, "format.compile-error", email.file,
                                           f"line {error.line}", error.message)
                                   for error in compiled.errors])
    findings += check_client_support(email.file, compiled.html)
    links = sending_links(program, base_url)
    merge, renders = render_personas(asset=email.file, source=source, html=compiled.html,
                                     text=compiled.text, subject=email.subject,
                                     program=program, links=links)
    findings += merge
    address = program.sender.get("address")
    for render in renders:
        if render.rendered is None:
            continue
        rendered = render.rendered
        findings += check_email(RenderedEmail(
            asset=email.file, subject=rendered.subject, html=rendered.html, text=rendered.text,
            source=source, sent_html=as_sent(html=compiled.html, text=compiled.text,
                                             subject=email.subject, context=render.context),
            sender_address=str(address) if address else None,
            declared_preheader=email.preheader, unsubscribe_url=links.unsubscribe))
    return _unique(findings)


def check_formatting(loaded: LoadedProgram, *, base_url: str = DEFAULT_BASE_URL) -> list[Finding]:
    """Formatting findings for every email of a loaded program, each reported once."""
    findings: list[Finding] = []
    for email in loaded.program.emails.values():
        findings += check_email_asset(program=loaded.program, email=email,
                                      source=loaded.files[email.file], base_url=base_url)
    return _unique(findings)


def check_program_formatting(program_dir: str | Path, *,
                             base_url: str = DEFAULT_BASE_URL) -> list[Finding]:
    """Formatting QA of a program directory, for `nurture qa run PROGRAM`.

    Loads and validates the directory (no database needed), then checks every email: MJML
    validity, client support, merge fields for every persona, and the per-email checks in
    EMAIL_CHECKS. A program that does not load yields its validation errors as blockers
    (code "program.invalid"). Findings are unique by key and sorted by asset, severity, code
    and location. `base_url` is the public address links are built with (NURTURE_BASE_URL).
    """
    try:
        loaded = load_program_dir(program_dir)
    except ProgramInvalid as exc:
        return [Finding(Severity.BLOCKER, "program.invalid", error.file, f"line {error.line}",
                        error.message) for error in exc.errors]
    return check_formatting(loaded, base_url=base_url)


_SEVERITY_ORDER = {Severity.BLOCKER: 0, Severity.WARNING: 1, Severity.INFO: 2}


def _unique(findings: list[Finding]) -> list[Finding]:
    seen: dict[str, Finding] = {}
    for finding in findings:
        seen.setdefault(finding.key, finding)
    return sorted(seen.values(), key=lambda f: (f.asset, _SEVERITY_ORDER[f.severity], f.code,
                                                f.location))
