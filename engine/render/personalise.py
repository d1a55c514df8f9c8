"""Per-recipient render: only a sandboxed Jinja render runs per lead, over HTML compiled once.

The sandbox (engine/render/sandbox.py) bounds every operation before it runs; a render is also
held to a deadline (MAX_RENDER_SECONDS) and its output to MAX_OUTPUT_CHARS.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from email.utils import parseaddr
from urllib.parse import quote

from jinja2 import StrictUndefined, Template, Undefined
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError

from engine.errors import Invalid
from engine.render.limits import RenderLimitExceeded, RenderTimedOut
from engine.render.sandbox import BoundedSandbox, budget, check_deadline

MAX_OUTPUT_CHARS = 1024 * 1024  # a rendered part over 1 MB is an error (Gmail clips at ~102 KB)
MAX_RENDER_SECONDS = 1.0
MAX_SUBJECT_CHARS = 500
DEFAULT_BASE_URL = "http://localhost:5000"
PLACEHOLDER_TOKEN = "preview"  # previews; a sent email carries signed tokens


class RenderFailed(Invalid):
    """A template failed for this recipient (limit, sandbox violation, strict undefined)."""


class RenderTimeout(RenderFailed):
    """The render ran out of time: it may succeed on a less busy machine."""


@functools.cache
def environment(*, html: bool, strict: bool) -> BoundedSandbox:
    return BoundedSandbox(autoescape=html, undefined=StrictUndefined if strict else Undefined,
                          keep_trailing_newline=True)


# -- what a template sees ---------------------------------------------------------------------

@dataclass(frozen=True)
class Links:
    """URLs a template may use. A sent email carries signed tokens per purpose (unsubscribe,
    view in browser, landing pages); a preview uses the placeholder token for all of them."""

    base_url: str
    program: str
    token: str = PLACEHOLDER_TOKEN  # the unsubscribe token
    view_token: str | None = None
    page_token: str | None = None

    @property
    def unsubscribe(self) -> str:
        return f"{self.base_url}/u/{quote(self.token)}"

    @property
    def view_in_browser(self) -> str:
        return f"{self.base_url}/v/{quote(self.view_token or self.token)}"

    def page(self, slug: str) -> str:
        token = quote(self.page_token or self.token)
        return f"{self.base_url}/p/{quote(self.program)}/{quote(str(slug))}?t={token}"


@dataclass(frozen=True)
class RenderContext:
    lead: dict
    program: dict  # name, slug
    sender: dict  # from, reply_to, name, email
    links: Links

    def variables(self) -> dict:
        return {"lead": self.lead, "program": self.program, "sender": self.sender,
                "links": self.links}


def lead_variables(lead) -> dict:
    """A lead's fields (standard and custom) as the plain dict templates read."""
    custom = dict(lead.custom or {})
    # An empty field reads as "" (Jinja would print None); `{% if lead.title %}` still works.
    fields = {name: "" if value is None else value for name, value in lead.fields().items()}
    return {**fields, "id": lead.id, "custom": custom}


def sender_variables(sender: dict) -> dict:
    name, address = parseaddr(str(sender.get("from") or ""))
    return {"from": sender.get("from"), "reply_to": sender.get("reply_to"), "name": name,
            "email": address}


def make_context(*, lead, program, base_url: str = DEFAULT_BASE_URL,
                 links: Links | None = None) -> RenderContext:
    """The variables for one lead in one program (a spec.Program); `links` carries a send's
    signed tokens, else placeholder links under `base_url`."""
    return RenderContext(
        lead=lead_variables(lead),
        program={"name": program.name, "slug": program.slug},
        sender=sender_variables(program.sender or {}),
        links=links or Links(base_url=base_url, program=program.slug),
    )


# -- render -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str
    extra: dict = field(default_factory=dict)


_templates: dict[tuple, Template] = {}


def template(source: str, *, html: bool, strict: bool = False,
             cache_key: tuple | None = None) -> Template:
    """A compiled Jinja template, cached when a key is given. The source is part of the key:
    a row id alone repeats across databases (and after a rolled-back insert)."""
    key = (cache_key, html, strict, source) if cache_key is not None else None
    found = _templates.get(key) if key else None
    if found is None:
        found = environment(html=html, strict=strict).from_string(source)
        if key:
            if len(_templates) > 2048:
                _templates.clear()
            _templates[key] = found
    return found


def render_template(tmpl: Template, variables: dict, *, where: str = "template") -> str:
    """Render with the output cap and deadline. Raises RenderFailed naming `where`."""
    try:
        with budget(MAX_RENDER_SECONDS):
            parts, size = [], 0
            for chunk in tmpl.generate(variables):
                size += len(chunk)
                if size > MAX_OUTPUT_CHARS:
                    raise RenderLimitExceeded(
                        f"output exceeds the output limit of {MAX_OUTPUT_CHARS:,} characters")
                check_deadline()
                parts.append(chunk)
            return "".join(parts)
    except UndefinedError as exc:
        raise RenderFailed(f"undefined variable: {exc.message}", location=where) from None
    except RenderTimedOut as exc:
        raise RenderTimeout(f"refused: {exc}", location=where) from None
    except SecurityError as exc:
        raise RenderFailed(f"refused: {exc}", location=where) from None
    except TemplateError as exc:
        raise RenderFailed(f"template error: {exc}", location=where) from None
    except (TypeError, ValueError, LookupError, AttributeError, AssertionError, ArithmeticError,
            MemoryError, RecursionError) as exc:  # from the template's operations (a filter
        # given the wrong type raises AttributeError, truncate asserts its arguments)
        raise RenderFailed(f"{type(exc).__name__}: {exc}", location=where) from None


def render_subject(subject: str, context: RenderContext, *, strict: bool = False,
                   where: str = "subject") -> str:
    text = render_template(template(subject, html=False, strict=strict), context.variables(),
                           where=where)
    text = " ".join(text.split())  # a header: no line breaks (header injection)
    if len(text) > MAX_SUBJECT_CHARS:
        raise RenderFailed(f"subject longer than {MAX_SUBJECT_CHARS} characters", location=where)
    return text


def render_email(*, version_id: int | None, html: str, text: str, subject: str,
                 context: RenderContext, strict: bool = False, where: str = "email",
                 engine_variables: dict | None = None) -> Rendered:
    """What one lead receives: subject, HTML (autoescaped) and text part. `engine_variables`
    are for templates the engine rewrote (tracking's link mark); an asset cannot name them, as
    compiling refuses unknown variables."""
    variables = {**context.variables(), **(engine_variables or {})}
    html_out = render_template(
        template(html, html=True, strict=strict, cache_key=("html", version_id) if version_id else None),
        variables, where=where)
    text_out = render_template(
        template(text, html=False, strict=strict, cache_key=("text", version_id) if version_id else None),
        variables, where=where)
    return Rendered(subject=render_subject(subject, context, strict=strict, where=f"{where} subject"),
                    html=html_out, text=text_out)
