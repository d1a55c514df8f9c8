"""Compile once per asset version: MJML -> HTML -> inlined CSS, with Jinja placeholders kept.

Nothing here runs per recipient. The result holds the HTML and plain-text templates that
engine/render/personalise.py renders for each lead, or the errors (line and message) that make
the version invalid. A version with errors has no compiled output: it is never half-rendered.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from jinja2 import TemplateSyntaxError, meta, nodes

from engine.render.sandbox import BoundedSandbox

# The names a template may use; anything else is a typo that would render empty for every lead.
KNOWN_VARIABLES = frozenset({"lead", "program", "links", "sender"})
# Landing pages are served by the web app, whose forms also get a CSRF token.
PAGE_VARIABLES = KNOWN_VARIABLES | {"csrf_token"}

# {{ ... }}, {% ... %} and {# ... #}. Swapped for opaque tokens before MJML and premailer see the
# document (premailer rewrites spaces in href to %20 and escapes quotes), restored after.
_PLACEHOLDER = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
TOKEN = re.compile(r"nurtureph(\d{6})x")  # what protect() puts in place of a placeholder
_MJ_TAG = re.compile(r"^mj-[a-z-]+$")
# Tags MJML accepts besides the registered components (children of mj-attributes).
_MJ_EXTRA = frozenset({"mjml", "mj-all", "mj-class", "mj-include"})
_BLOCK_TAGS = ("p", "div", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol",
               "section", "article", "header", "footer", "blockquote")

_syntax_env = BoundedSandbox()  # finding variables compiles: nothing may run at compile time


@dataclass(frozen=True)
class CompileError:
    line: int
    message: str

    def to_dict(self) -> dict:
        return {"line": self.line, "message": self.message}


@dataclass(frozen=True)
class Compiled:
    html: str | None
    text: str | None
    errors: tuple[CompileError, ...] = field(default_factory=tuple)

    @property
    def valid(self) -> bool:
        return not self.errors


# -- Jinja checks -----------------------------------------------------------------------------

def check_template(source: str, known: frozenset[str] = KNOWN_VARIABLES) -> list[CompileError]:
    """Syntax errors and unknown variables, each with its line in `source`."""
    try:
        tree = _syntax_env.parse(source)
    except TemplateSyntaxError as exc:
        return [CompileError(exc.lineno or 1, f"template syntax error: {exc.message}")]
    except ValueError as exc:  # Jinja's lexer reads a number with int(): at most 4300 digits
        digits = re.search(r"\d{4301}", source)
        if digits is None:
            return [CompileError(1, f"template syntax error: {exc}")]
        line = source.count("\n", 0, digits.start()) + 1
        return [CompileError(line, "template syntax error: a number of more than 4300 digits")]
    unknown = meta.find_undeclared_variables(tree) - known
    if not unknown:
        return []
    first_line: dict[str, int] = {}
    for node in tree.find_all(nodes.Name):
        if node.name in unknown and node.ctx == "load":
            first_line.setdefault(node.name, node.lineno)
    names = ", ".join(sorted(known))
    return [CompileError(first_line.get(name, 1),
                         f"unknown variable {name!r} (templates may use {names})")
            for name in sorted(unknown, key=lambda n: (first_line.get(n, 1), n))]


# -- placeholders -----------------------------------------------------------------------------

def protect(source: str) -> tuple[str, list[str]]:
    """Swap every Jinja placeholder for an opaque alphanumeric token."""
    saved: list[str] = []

    def swap(match: re.Match) -> str:
        saved.append(match.group(0))
        return f"nurtureph{len(saved) - 1:06d}x"

    return _PLACEHOLDER.sub(swap, source), saved


def restore(text: str, saved: list[str]) -> str:
    return TOKEN.sub(lambda m: saved[int(m.group(1))], text)


# -- MJML -------------------------------------------------------------------------------------

class _MjmlStructure(HTMLParser):
    """The checks the pure-Python MJML port does not make: unknown mj- tags, unbalanced tags,
    a missing <mjml> root or <mj-body>, each with its line."""

    def __init__(self, known: frozenset[str]):
        super().__init__(convert_charrefs=True)
        self.known = known
        self.stack: list[tuple[str, int]] = []
        self.errors: list[CompileError] = []
        self.seen: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self._tag(tag, closes=False)

    def handle_startendtag(self, tag, attrs):
        self._tag(tag, closes=True)

    def _tag(self, tag: str, *, closes: bool) -> None:
        if not (tag == "mjml" or _MJ_TAG.match(tag)):
            return  # HTML inside mj-text, mj-raw, ... is MJML's business
        line = self.getpos()[0]
        self.seen.add(tag)
        if tag == "mj-include":
            self.errors.append(CompileError(line, "<mj-include> is not supported: upload one file"))
        elif tag not in self.known and tag not in _MJ_EXTRA:
            self.errors.append(CompileError(line, f"unknown MJML tag <{tag}>"))
        if not closes:
            self.stack.append((tag, line))

    def handle_endtag(self, tag):
        if not (tag == "mjml" or _MJ_TAG.match(tag)):
            return
        line = self.getpos()[0]
        if not any(open_tag == tag for open_tag, _ in self.stack):
            self.errors.append(CompileError(line, f"closing tag </{tag}> without an opening tag"))
            return
        while self.stack:
            open_tag, open_line = self.stack.pop()
            if open_tag == tag:
                return
            self.errors.append(CompileError(open_line, f"<{open_tag}> is not closed"))

    def finish(self) -> list[CompileError]:
        self.close()
        for tag, line in self.stack:
            self.errors.append(CompileError(line, f"<{tag}> is not closed"))
        if "mjml" not in self.seen:
            self.errors.append(CompileError(1, "no <mjml> root element"))
        elif "mj-body" not in self.seen:
            self.errors.append(CompileError(1, "no <mj-body> element"))
        return sorted(self.errors, key=lambda e: e.line)


def _known_mjml_tags() -> frozenset[str]:
    from mjml.core import api
    from mjml.core.registry import register_core_components

    register_core_components()
    return frozenset(api.components)


def check_mjml(source: str) -> list[CompileError]:
    parser = _MjmlStructure(_known_mjml_tags())
    parser.feed(source)
    return parser.finish()


def mjml_to_inlined_html(protected: str) -> str:
    """MJML (placeholders already protected) to HTML with its CSS inlined."""
    from mjml import mjml_to_html

    result = mjml_to_html(protected)
    if result.errors:
        raise ValueError("; ".join(str(e) for e in result.errors))
    return inline_css(result.html)


def inline_css(html: str) -> str:
    """premailer without network access; rules it cannot inline (@media) stay in a style tag."""
    from premailer import Premailer

    # disable_basic_attributes: premailer would turn MJML's `width: 100%` CSS into a width="100%"
    # attribute over the image's own width="120", and Outlook then stretches the image.
    return Premailer(html, allow_network=False, disable_validation=True,
                     cssutils_logging_level=50, strip_important=False,
                     disable_basic_attributes=["width", "height"]).transform()


# -- plain text -------------------------------------------------------------------------------

def html_to_text(html: str) -> str:
    """A readable text part: block elements on their own lines, links as "text (url)", hidden
    elements (the preheader) and head content left out."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["head", "style", "script", "title"]):
        tag.decompose()
    for tag in soup.find_all(style=re.compile(r"display\s*:\s*none", re.IGNORECASE)):
        tag.decompose()
    for link in soup.find_all("a"):
        href = (link.get("href") or "").strip()
        label = " ".join(link.get_text(" ").split())
        if href and not href.startswith(("#", "mailto:")) and href != label:
            link.replace_with(f"{label} ({href})" if label else href)
        else:
            link.replace_with(label)
    for img in soup.find_all("img"):
        img.replace_with(img.get("alt") or "")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for tag in soup.find_all(_BLOCK_TAGS):
        tag.insert_before("\n")
        tag.insert_after("\n")
    lines = (" ".join(line.split()) for line in soup.get_text().splitlines())
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


# -- compile ----------------------------------------------------------------------------------

_cache: dict[tuple[str, str], Compiled] = {}


def compile_asset(kind: str, source: str) -> Compiled:
    """Compile an email (MJML) or a page (HTML, Jinja checked, no MJML) once.

    Versions are immutable and compiling is deterministic, so results are cached by content
    hash: loading the same program twice compiles nothing the second time.
    """
    key = (kind, hashlib.sha256(source.encode()).hexdigest())
    result = _cache.get(key)
    if result is None:
        result = _compile(kind, source)
        if len(_cache) > 512:
            _cache.clear()
        _cache[key] = result
    return result


def _compile(kind: str, source: str) -> Compiled:
    errors = check_template(source, PAGE_VARIABLES if kind == "page" else KNOWN_VARIABLES)
    if kind == "page":
        if errors:
            return Compiled(None, None, tuple(errors))
        protected, saved = protect(source)
        return Compiled(source, restore(html_to_text(protected), saved), ())
    if kind != "email":
        raise ValueError(f"cannot compile a {kind}")
    errors += check_mjml(source)
    if errors:
        return Compiled(None, None, tuple(sorted(errors, key=lambda e: e.line)))
    protected, saved = protect(source)
    try:
        html = mjml_to_inlined_html(protected)
    except Exception as exc:  # noqa: BLE001 (the MJML port raises bare KeyError, AssertionError...)
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Compiled(None, None, (CompileError(1, f"MJML could not compile: {detail}"),))
    text = html_to_text(html)
    return Compiled(restore(html, saved), restore(text, saved), ())
