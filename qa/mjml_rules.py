"""MJML validator warnings. The PyPI `mjml` port renders without validating (its
`validationLevel` is a no-op), so these are the structural rules of MJML's own validator
(levels skip/soft/strict; we report like "soft": warnings, the email still compiles):

- unknown tags: an mj-* tag the renderer does not register (mj-include is refused by compile);
- nesting: each component's allowed children, the table of mjml-preset-core's dependencies.js
  (MJML 4); anything goes inside mj-attributes, whose children set defaults by tag name;
- attributes: names the component does not declare (plus MJML's global mj-class and css-class),
  and values of the enum, unit, boolean and integer types the component declares;
- mj-title: missing or empty (the HTML <title> that some clients show in previews).

Only mj-* tags are tokenised (HTML inside mj-text, mj-raw, ... is the HTML checks' business),
with bounded regular expressions and str.find, so hostile input costs linear time.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from qa.findings import Finding, Severity

ALLOWED_CHILDREN: dict[str, frozenset[str]] = {
    tag: frozenset(children) for tag, children in {
        "mjml": ("mj-body", "mj-head", "mj-raw"),
        "mj-accordion": ("mj-accordion-element", "mj-raw"),
        "mj-accordion-element": ("mj-accordion-title", "mj-accordion-text", "mj-raw"),
        "mj-accordion-title": (), "mj-accordion-text": (),
        "mj-body": ("mj-raw", "mj-section", "mj-wrapper", "mj-hero"),
        "mj-button": (),
        "mj-carousel": ("mj-carousel-image",), "mj-carousel-image": (),
        "mj-column": ("mj-accordion", "mj-button", "mj-carousel", "mj-divider", "mj-image",
                      "mj-raw", "mj-social", "mj-spacer", "mj-table", "mj-text", "mj-navbar"),
        "mj-divider": (),
        "mj-group": ("mj-column", "mj-raw"),
        "mj-head": ("mj-attributes", "mj-breakpoint", "mj-html-attributes", "mj-font",
                    "mj-preview", "mj-style", "mj-title", "mj-raw"),
        "mj-hero": ("mj-accordion", "mj-button", "mj-carousel", "mj-divider", "mj-image",
                    "mj-social", "mj-spacer", "mj-table", "mj-text", "mj-navbar", "mj-raw"),
        "mj-html-attributes": ("mj-selector",), "mj-selector": ("mj-html-attribute",),
        "mj-html-attribute": (),
        "mj-image": (),
        "mj-navbar": ("mj-navbar-link", "mj-raw"), "mj-navbar-link": (),
        "mj-raw": (),
        "mj-section": ("mj-column", "mj-group", "mj-raw"),
        "mj-social": ("mj-social-element", "mj-raw"), "mj-social-element": (),
        "mj-spacer": (), "mj-table": (), "mj-text": (),
        "mj-wrapper": ("mj-hero", "mj-raw", "mj-section"),
        "mj-breakpoint": (), "mj-font": (), "mj-preview": (), "mj-style": (), "mj-title": (),
    }.items()
}
_ANY_CHILDREN = frozenset({"mj-attributes"})
_GLOBAL_ATTRIBUTES = frozenset({"mj-class", "css-class"})
# Tags that exist only as children of mj-attributes or mj-html-attributes.
_HELPER_TAGS = frozenset({"mj-all", "mj-class", "mj-selector", "mj-html-attribute"})

_TAG = re.compile(r"<(/?)(mjml|mj-[a-z][a-z0-9-]{0,60})(?=[\s/>])([^<>]{0,4000}?)(/?)>",
                  re.IGNORECASE)
_ATTRIBUTE = re.compile(r"""([^\s"'=<>/]+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s"'=<>`]+))?""")
MAX_TAGS = 20_000  # a long email has a few hundred MJML tags
MAX_FINDINGS = 100
_NUMBER = r"[-+]?(?:\d+|\d*\.\d+)"
_CSS_UNITS = frozenset({"px", "%", "em", "rem", "pt", "vh", "vw"})


@dataclass(frozen=True)
class _Tag:
    name: str
    closing: bool
    self_closing: bool
    attributes: dict[str, str]
    start: int
    end: int


@functools.cache
def _components() -> dict[str, dict[str, str]]:
    """Registered MJML components and the attribute types each declares."""
    from mjml.core import api
    from mjml.core.registry import register_core_components

    register_core_components()
    return {name: {**{k: "" for k in component.default_attrs()},
                   **{k: v or "" for k, v in component.allowed_attrs().items()}}
            for name, component in api.components.items()}


def _comment_spans(source: str) -> list[tuple[int, int]]:
    spans, at = [], source.find("<!--")
    while at != -1:
        end = source.find("-->", at + 4)
        end = len(source) if end == -1 else end + 3
        spans.append((at, end))
        at = source.find("<!--", end)
    return spans


def _tags(source: str) -> Iterator[_Tag]:
    spans = _comment_spans(source)
    starts = [start for start, _ in spans]
    for match in _TAG.finditer(source):
        i = bisect.bisect_right(starts, match.start()) - 1
        if i >= 0 and match.start() < spans[i][1]:
            continue
        attributes = {name.lower(): value.strip("\"'") if value else ""
                      for name, value in _ATTRIBUTE.findall(match.group(3))}
        yield _Tag(match.group(2).lower(), bool(match.group(1)), bool(match.group(4)),
                   attributes, match.start(), match.end())


def _value_error(kind: str, value: str) -> str | None:
    """Why `value` is not of MJML type `kind`, or None when it is (or cannot be checked)."""
    if "{{" in value or "{%" in value:
        return None  # a placeholder: its rendered value is not known here
    if kind.startswith("enum("):
        options = kind[5:].rstrip(")").split(",")
        return None if value in options else f"must be one of {', '.join(options)}"
    if kind.startswith("unit("):
        return _unit_error(kind, value)
    if kind == "boolean":
        return None if value in ("true", "false") else "must be true or false"
    if kind == "integer":
        return None if re.fullmatch(r"\d+", value) else "must be a whole number"
    return None  # string, color and the port's untyped attributes


def _unit_error(kind: str, value: str) -> str | None:
    """MJML's unit(px,%){1,4} types: 1 to 4 space-separated numbers with one of the units;
    a unit that is a word (auto) stands alone."""
    units_part, _, count = kind[5:].partition(")")
    units = [u.strip() for u in units_part.split(",") if u.strip()]
    low, _, high = count.strip("{}").partition(",")
    low, high = (int(low), int(high or low)) if count else (1, 1)
    suffixes = [u for u in units if u in _CSS_UNITS]
    words = [u for u in units if u not in _CSS_UNITS]
    item = re.compile("|".join([rf"{_NUMBER}(?:{'|'.join(map(re.escape, suffixes))})" if suffixes
                                else _NUMBER, "0", *map(re.escape, words)]))
    parts = value.split()
    if low <= len(parts) <= high and all(item.fullmatch(part) for part in parts):
        return None
    amount = f"{low}" if low == high else f"{low} to {high}"
    return f"must be {amount} value(s) in {', '.join(units)}"


def _finding(code: str, asset: str, line: int, tag: str, message: str) -> Finding:
    return Finding(Severity.WARNING, code, asset, f"line {line}: <{tag}>", message)


def _check_attributes(asset: str, tag: _Tag, line: int, declared: dict[str, str]) -> list[Finding]:
    if not declared:
        return []  # components that declare no attributes: nothing to check against
    findings = []
    for name, value in tag.attributes.items():
        if name in _GLOBAL_ATTRIBUTES:
            continue
        if name not in declared:
            findings.append(_finding(
                "mjml.unknown-attribute", asset, line, tag.name,
                f"<{tag.name}> has no attribute {name!r}: MJML ignores it"))
            continue
        problem = _value_error(declared[name], value)
        if problem:
            findings.append(_finding(
                "mjml.invalid-value", asset, line, tag.name,
                f"<{tag.name} {name}={value[:60]!r}>: {name} {problem}"))
    return findings


def check_mjml(asset: str, source: str) -> list[Finding]:
    """MJML validator warnings for one email source, each with its line."""
    components = _components()
    line_starts = [0] + [m.end() for m in re.finditer("\n", source)]
    findings: list[Finding] = []
    stack: list[str] = []
    title: tuple[int, int] | None = None  # (line, offset where its content starts)
    title_text: str | None = None
    saw_root = False
    for count, tag in enumerate(_tags(source)):
        if count >= MAX_TAGS or len(findings) >= MAX_FINDINGS:
            break
        line = bisect.bisect_right(line_starts, tag.start)
        if tag.closing:
            if tag.name in stack:
                while stack and stack.pop() != tag.name:
                    pass
            if tag.name == "mj-title" and title and title_text is None:
                title_text = source[title[1]:tag.start]
            continue
        saw_root = saw_root or tag.name == "mjml"
        parent = stack[-1] if stack else None
        findings += _check_tag(asset, tag, line, parent, components)
        if tag.name == "mj-title" and title is None:
            title = (line, tag.end)
            title_text = "" if tag.self_closing else None
        if not tag.self_closing:
            stack.append(tag.name)
    if saw_root:
        findings += _check_title(asset, title, title_text)
    return findings[:MAX_FINDINGS]


def _check_tag(asset: str, tag: _Tag, line: int, parent: str | None,
               components: dict[str, dict[str, str]]) -> list[Finding]:
    if parent in _ANY_CHILDREN:
        return []  # defaults by tag name: <mj-text color="...">, <mj-class name="...">
    known = tag.name in components or tag.name in _HELPER_TAGS or tag.name == "mjml"
    if not known:
        return [_finding("mjml.unknown-tag", asset, line, tag.name,
                         f"unknown MJML tag <{tag.name}>")]
    findings = []
    allowed = ALLOWED_CHILDREN.get(parent) if parent else frozenset({"mjml"})
    if allowed is not None and tag.name not in allowed:
        where = f"inside <{parent}>" if parent else "outside <mjml>"
        may = ", ".join(f"<{t}>" for t in sorted(allowed)) or "no MJML tags"
        findings.append(_finding("mjml.invalid-parent", asset, line, tag.name,
                                 f"<{tag.name}> is not allowed {where} (it may hold {may})"))
    return findings + _check_attributes(asset, tag, line, components.get(tag.name, {}))


def _check_title(asset: str, title: tuple[int, int] | None, text: str | None) -> list[Finding]:
    if title is None:
        return [Finding(Severity.WARNING, "mjml.missing-title", asset, "<mj-head>",
                        "no <mj-title>: add one to <mj-head> (the HTML <title> some clients "
                        "show in previews and browser tabs)")]
    if not (text or "").strip():
        return [_finding("mjml.missing-title", asset, title[0], "mj-title",
                         "<mj-title> is empty: give the email a title")]
    return []
