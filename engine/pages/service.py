"""Landing pages: find a program's page, render it in the email sandbox, store form posts.

Plain functions with an explicit session; engine/web/pages.py is the thin HTTP shell.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from engine.assets.models import AssetVersion
from engine.assets.service import current_version, sendable_version
from engine.errors import Invalid, NotFound
from engine.leads.fields import BAD_TEXT, MAX_FIELD_LENGTH, normalise_email
from engine.leads.models import Lead
from engine.leads.service import get_lead_by_id
from engine.pages.forms import POSTED_TWICE
from engine.programs.spec import Page, Program
from engine.programs.store import current_program, running_program
from engine.render.personalise import (
    Links,
    RenderContext,
    RenderFailed,
    RenderTimeout,
    lead_variables,
    render_template,
    sender_variables,
    template,
)
from engine.tracking.tokens import sign, verify

PREVIEW = "page-preview"  # a token purpose of its own: no other token opens a preview
MAX_FORM_FIELDS = 20
MAX_FIELD_NAME = 100
IGNORED_FIELDS = frozenset({"csrf_token"})

@dataclass(frozen=True)
class FoundPage:
    program_id: int
    program: Program
    page: Page
    version: AssetVersion


def find_page(*, session: Session, program: str, slug: str,
              preview: bool = False) -> FoundPage:
    """The launched version of a program's page by slug; with `preview` (a reviewer's signed
    link), the newest version, launched or not. Raises NotFound, also before the program's
    first launch and when the page has no valid or launched version: a visitor cannot tell
    the difference, and need not."""
    record, spec = (current_program if preview else running_program)(session=session,
                                                                     name=program)
    page = next((p for p in spec.pages.values() if p.slug == slug), None)
    if page is None or (record.live_version is None and not preview):
        raise NotFound(f"program {program!r} has no page {slug!r}", field="slug")
    read = current_version if preview else sendable_version
    try:
        version = read(session=session, program_id=record.id, path=page.file)
    except Invalid:
        raise NotFound(f"page {slug!r} has no valid version", field="slug") from None
    return FoundPage(program_id=record.id, program=spec, page=page, version=version)


def preview_token(*, secret_key: str, program: str) -> str:
    """For a reviewer's proof: opens the program's pages at their newest version."""
    return sign(secret_key, PREVIEW, {"p": program})


def is_preview(*, secret_key: str, token: str | None, program: str) -> bool:
    if not token or len(token) > 200:
        return False
    payload = verify(secret_key, PREVIEW, token)
    return bool(payload) and payload.get("p") == program


# -- personalisation token --------------------------------------------------------------------

def page_token(*, secret_key: str, lead_id: int) -> str:
    return sign(secret_key, "page", {"l": lead_id})


def lead_from_token(*, session: Session, secret_key: str, token: str | None) -> Lead | None:
    """The lead a page link was made for, or None for a missing, forged or stale token."""
    if not token or len(token) > 200:
        return None
    payload = verify(secret_key, "page", token)
    lead_id = payload.get("l") if payload else None
    if not isinstance(lead_id, int) or isinstance(lead_id, bool) or not 0 < lead_id < 2**31:
        return None
    try:
        return get_lead_by_id(session=session, lead_id=lead_id)
    except NotFound:
        return None


# -- render -----------------------------------------------------------------------------------

# A visitor without a token sees the same page as every other such visitor but for the CSRF
# token, so marketer code runs once per page version and program settings, not per request.
_CSRF_PLACEHOLDER = "nurture-csrf-placeholder"
_anonymous_pages: dict[tuple[str, str], str | RenderFailed] = {}
MAX_CACHED_PAGES = 64  # pages of at most 1 MB each


def render_page(*, found: FoundPage, lead: Lead | None, csrf_token: str, base_url: str,
                token: str | None = None) -> str:
    """The page for this lead, or for an anonymous visitor (rendered once, then served with
    this request's CSRF token), autoescaped, in the bounded sandbox. Raises RenderFailed."""
    spec = found.program
    context = RenderContext(
        lead=lead_variables(lead) if lead is not None else {"custom": {}},
        program={"name": spec.name, "slug": spec.slug},
        sender=sender_variables(spec.sender or {}),
        links=Links(base_url=base_url, program=spec.slug,
                    page_token=token if lead is not None else None),
    )
    if lead is not None:
        return _render(found, context, csrf_token)
    key = (found.version.content_hash, repr(context))  # by content: ids repeat across databases
    page = _anonymous_pages.get(key)
    if page is None:
        try:
            page = _render(found, context, _CSRF_PLACEHOLDER)
        except RenderTimeout:
            raise  # maybe only a busy moment: not remembered
        except RenderFailed as exc:
            page = exc  # a failing page fails once, not once per visitor
        if len(_anonymous_pages) >= MAX_CACHED_PAGES:
            _anonymous_pages.clear()
        _anonymous_pages[key] = page
    if isinstance(page, RenderFailed):
        raise RenderFailed(page.detail, location=page.location)
    return page.replace(_CSRF_PLACEHOLDER, csrf_token)


def _render(found: FoundPage, context: RenderContext, csrf_token: str) -> str:
    tmpl = template(found.version.compiled_html or "", html=True,
                    cache_key=("page", found.version.id))
    return render_template(tmpl, {**context.variables(), "csrf_token": csrf_token},
                           where=found.page.file)


# -- forms ------------------------------------------------------------------------------------

def clean_fields(form: dict[str, list[str]]) -> tuple[str, dict]:
    """(email, other fields) from a posted form (name -> values). Raises Invalid."""
    fields = {k: v for k, v in form.items() if k not in IGNORED_FIELDS}
    if len(fields) > MAX_FORM_FIELDS:
        raise Invalid(f"too many fields (at most {MAX_FORM_FIELDS})", field="form")
    cleaned: dict[str, str | list[str]] = {}
    for name, values in fields.items():
        if not name or len(name) > MAX_FIELD_NAME or BAD_TEXT.search(name):
            raise Invalid("invalid field name", field="form")
        if len(values) > MAX_FORM_FIELDS:
            raise Invalid("too many values", field=name[:50])
        for value in values:
            if len(value) > MAX_FIELD_LENGTH:
                raise Invalid(f"longer than {MAX_FIELD_LENGTH} characters", field=name[:50])
            if BAD_TEXT.search(value):
                raise Invalid("contains invalid characters", field=name[:50])
        cleaned[name] = values[0] if len(values) == 1 else list(values)
    raw_email = cleaned.pop("email", None)
    if isinstance(raw_email, list):
        raise Invalid(POSTED_TWICE, field="email")
    return normalise_email(raw_email), cleaned
