"""Per-recipient render: only a sandboxed Jinja render runs per lead, over HTML compiled once.

The sandbox (ImmutableSandboxedEnvironment) blocks dunder access and mutation but does not bound
work, so this module adds the bounds: `*` and `**` refuse results past MAX_VALUE_CHARS, every
filter and call refuses huge integer arguments and huge results, `range` is capped and checks a
deadline as it iterates, and the output is counted as it is produced (MAX_OUTPUT_BYTES) against
a wall-clock deadline (MAX_RENDER_SECONDS). A pure CPU loop inside one Python call cannot be
pre-empted in-process; the worker's job timeout is the last line of defence for that.
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any
from urllib.parse import quote

from jinja2 import StrictUndefined, Template, Undefined
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.errors import Invalid

MAX_OUTPUT_BYTES = 1024 * 1024  # a rendered part over 1 MB is an error (Gmail clips at ~102 KB)
MAX_VALUE_CHARS = 1024 * 1024  # any single string or list built while rendering
MAX_INT_ARGUMENT = 100_000  # widths, counts, ranges passed to filters and methods
MAX_RANGE = 10_000
MAX_RENDER_SECONDS = 1.0
MAX_SUBJECT_CHARS = 500
DEFAULT_BASE_URL = "http://localhost:5000"
PLACEHOLDER_TOKEN = "preview"  # previews; a sent email carries signed tokens


class RenderLimitExceeded(SecurityError):
    """A template tried to do more work or produce more output than a message may."""


class RenderFailed(Invalid):
    """A template failed for this recipient (limit, sandbox violation, strict undefined)."""


_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("render_deadline",
                                                                  default=float("inf"))


def _check_deadline() -> None:
    if time.monotonic() > _deadline.get():
        raise RenderLimitExceeded(f"render took longer than {MAX_RENDER_SECONDS} s")


def _check_value(value: Any) -> Any:
    if isinstance(value, (str, bytes, list, tuple)) and len(value) > MAX_VALUE_CHARS:
        raise RenderLimitExceeded(f"a value of {len(value)} items exceeds {MAX_VALUE_CHARS}")
    return value


def _check_args(args: tuple, kwargs: dict) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_ARGUMENT:
            raise RenderLimitExceeded(f"argument {value} exceeds {MAX_INT_ARGUMENT}")


# Filters and str methods whose integer arguments size their result (a width, a count).
_SIZING_FILTERS = frozenset({"center", "indent", "wordwrap", "truncate", "batch", "slice"})
_SIZING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def _bounded(name: str, function: Callable) -> Callable:
    skip = 2 if getattr(function, "jinja_pass_arg", None) else 1  # context/env, then the value

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        _check_deadline()
        if name in _SIZING_FILTERS:
            _check_args(args[skip:], kwargs)
        return _check_value(function(*args, **kwargs))

    return wrapper


def _bounded_range(*args: int):
    _check_args(args, {})
    values = range(*args)
    if len(values) > MAX_RANGE:
        raise RenderLimitExceeded(f"range of {len(values)} items exceeds {MAX_RANGE}")
    for i, value in enumerate(values):
        if i % 64 == 0:
            _check_deadline()
        yield value


class BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+"})

    def __init__(self, **options):
        super().__init__(**options)
        self.globals = {"range": _bounded_range, "dict": dict}  # no lipsum, cycler, namespace
        self.filters = {name: _bounded(name, f) for name, f in self.filters.items()}

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        _check_deadline()
        numbers = isinstance(left, (int, float)) and isinstance(right, (int, float))
        if operator == "**" and numbers and abs(right) > 64 and abs(left) > 1:
            raise RenderLimitExceeded(f"exponent {right} is too large")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if (isinstance(seq, (str, list, tuple)) and isinstance(n, int)
                        and len(seq) * n > MAX_VALUE_CHARS):
                    raise RenderLimitExceeded(
                        f"repeating {len(seq)} items {n} times exceeds {MAX_VALUE_CHARS}")
        return _check_value(super().call_binop(context, operator, left, right))

    def call(self, context, obj, /, *args, **kwargs):
        _check_deadline()
        if isinstance(getattr(obj, "__self__", None), str) and \
                getattr(obj, "__name__", "") in _SIZING_METHODS:
            _check_args(args, kwargs)
        return _check_value(super().call(context, obj, *args, **kwargs))


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
    token = _deadline.set(time.monotonic() + MAX_RENDER_SECONDS)
    try:
        parts, size = [], 0
        for chunk in tmpl.generate(variables):
            size += len(chunk)
            if size > MAX_OUTPUT_BYTES:
                raise RenderLimitExceeded(f"output exceeds {MAX_OUTPUT_BYTES} bytes")
            _check_deadline()
            parts.append(chunk)
        return "".join(parts)
    except UndefinedError as exc:
        raise RenderFailed(f"undefined variable: {exc.message}", location=where) from None
    except SecurityError as exc:
        raise RenderFailed(f"refused: {exc}", location=where) from None
    except TemplateError as exc:
        raise RenderFailed(f"template error: {exc}", location=where) from None
    except (TypeError, ValueError, ArithmeticError, MemoryError, RecursionError) as exc:
        raise RenderFailed(f"{type(exc).__name__}: {exc}", location=where) from None
    finally:
        _deadline.reset(token)


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
