"""Client support: the CSS properties and HTML elements an email uses that major clients do
not support, or support only partly, according to caniemail's data (vendored in qa/data with
its MIT licence; refresh with qa/data/refresh_caniemail.sh).

What is read: inline `style` attributes, `<style>` blocks (at-rules, media features,
pseudo-classes, declarations), tag and attribute names, input and button types, link kinds
(`#anchor`, `mailto:`) and image formats by extension. A client's support is the result for
the newest version caniemail tested ("y", "a" partial, "n" none, "u" unknown, ignored).

What is deliberately not reported, to keep the warnings about the author's own choices:
- Outlook-only markup: conditional comments are skipped by the parser, and `mso-*`,
  `-ms-*`, `-webkit-*` properties have no caniemail entry.
- Everything MJML itself emits for its standard components (sections, columns, groups,
  wrappers, text, images, buttons, dividers, spacers, tables, social icons, navbars): MJML
  chooses those features on purpose, with fallbacks (tables, widths in attributes, hybrid
  columns) for the clients that lack them. The set is measured once by compiling a reference
  email through the same compile step as real emails (`baseline_features`), so it follows the
  MJML version in use. An author's own use of one of these features is therefore not reported.
- caniemail's selector entries (class, type, descendant, ...): MJML's responsive styles use
  them, and premailer inlines the author's mj-style rules before sending.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from qa.findings import Finding, Severity
from qa.html_scan import Scan, scan_html

DATA = Path(__file__).parent / "data" / "caniemail.json"

# (family, platform) -> the name a marketer knows.
MAJOR_CLIENTS: dict[tuple[str, str], str] = {
    ("gmail", "desktop-webmail"): "Gmail (webmail)",
    ("gmail", "ios"): "Gmail (iOS)",
    ("gmail", "android"): "Gmail (Android)",
    ("outlook", "windows"): "Outlook (Windows)",
    ("outlook", "outlook-com"): "Outlook.com",
    ("apple-mail", "macos"): "Apple Mail (macOS)",
    ("apple-mail", "ios"): "Apple Mail (iOS)",
    ("yahoo", "desktop-webmail"): "Yahoo! Mail (webmail)",
}
MAX_CSS_CHARS = 512 * 1024

# Features whose caniemail titles do not say how to detect them.
_MANUAL_KEYS: dict[str, tuple[str, ...]] = {
    "css-font": ("prop:font",),
    "css-grid-template": ("prop:grid-template", "prop:grid-template-columns",
                          "prop:grid-template-rows", "prop:grid-template-areas"),
    "css-column-layout-properties": ("prop:columns", "prop:column-width", "prop:column-rule",
                                     "prop:column-span", "prop:column-fill"),
    "css-important": ("important",),
    "css-variables": ("func:var", "custom-property"),
    "css-comments": ("comment",),
    "css-unit-calc": ("func:calc",),
    "css-unit-initial": ("kw:initial",),
    "css-intrinsic-size": ("kw:fit-content", "kw:min-content", "kw:max-content"),
    "css-sytem-ui": ("kw:system-ui", "kw:ui-serif", "kw:ui-sans-serif", "kw:ui-rounded",
                     "kw:ui-monospace"),
    "css-modern-color": ("func:lch", "func:oklch", "func:lab", "func:oklab"),
    "css-color-scheme": ("prop:color-scheme",),
    "css-inert-attribute": ("attr:inert",),
    "html-h1-h6": tuple(f"tag:h{n}" for n in range(1, 7)),
    "html-lists": ("tag:ul", "tag:ol", "tag:dl"),
    "html-srcset": ("attr:srcset", "attr:sizes"),
    "html-image-maps": ("tag:map", "attr:usemap"),
    "html-svg": ("tag:svg",),
    "html-semantics": tuple(f"tag:{t}" for t in (
        "article", "aside", "details", "figcaption", "figure", "footer", "header", "main",
        "mark", "nav", "section", "summary", "time")),
    "html-meta-color-scheme": ("meta:color-scheme",),
    "html-anchor-links": ("href:anchor",),
    "html-mailto-links": ("href:mailto",),
    "image-base64": ("image:base64",),
    "image-jpg": ("image:jpg", "image:jpeg"),
    "image-mp4": ("image:mp4",),
    "html-doctype": (), "html-comments": (),  # MJML's own; comments are skipped
    "amp": (), "bimi": (), "css-nesting": (),
}
_IMAGE_SLUG = re.compile(r"^image-([a-z0-9]+)$")

_BRACE = re.compile(r"[{}]")
_AT_RULE = re.compile(r"@(-?[a-z][a-z-]*)", re.IGNORECASE)
_MEDIA_FEATURE = re.compile(r"\(\s*(-?[a-z][a-z-]*)\s*[:)]", re.IGNORECASE)
_PSEUDO = re.compile(r"::?([a-z][a-z-]*)", re.IGNORECASE)
_FUNCTION = re.compile(r"(?<![\w-])([a-z][a-z-]*)\(", re.IGNORECASE)
_UNIT = re.compile(r"(?<![\w.#-])[-+]?(?:\d+|\d*\.\d+)"
                   r"(px|em|rem|pt|vh|vw|vmin|vmax|ch|ex|cm|mm|in|pc|%)(?![a-z])", re.IGNORECASE)
_WORD = re.compile(r"[a-z][a-z-]*", re.IGNORECASE)
_PROPERTY = re.compile(r"^-{0,2}[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class Feature:
    slug: str
    title: str
    url: str
    support: dict[str, str]  # client name -> "y", "a", "n" or "u" (newest tested version)


# -- the caniemail index (built once) ---------------------------------------------------------

def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version)) or (0,)


def _latest_support(stats: dict) -> dict[str, str]:
    support = {}
    for (family, platform), name in MAJOR_CLIENTS.items():
        versions = (stats.get(family) or {}).get(platform) or {}
        if versions:
            newest = max(versions, key=_version_key)
            support[name] = str(versions[newest]).strip()[:1] or "u"
    return support


def _title_keys(slug: str, title: str) -> tuple[str, ...]:
    """Detection keys read off a caniemail title: "position", "display:flex",
    "linear-gradient()", "@media (hover)", ":hover", "em unit", "<abbr> element",
    "align attribute"."""
    if slug in _MANUAL_KEYS:
        return _MANUAL_KEYS[slug]
    if image := _IMAGE_SLUG.match(slug):
        return (f"image:{image.group(1)}",)
    keys = []
    for part in re.split(r",\s*|\s+&\s+", title.strip().removesuffix(" property").lower()):
        part = part.strip()
        patterns = (
            (r"([a-z-]+)", "prop:{}"),
            (r"([a-z-]+):\s*([a-z-]+)", "propval:{}:{}"),
            (r"([a-z-]+)\(\)", "func:{}"),
            (r"@media \((-?[a-z-]+)\)", "media:{}"),
            (r"@([a-z-]+)", "at:{}"),
            (r"::?([a-z-]+)(?:\(\))?", "pseudo:{}"),
            (r"([a-z%]+) unit", "unit:{}"),
            (r"<([a-z0-9]+)>(?: element)?", "tag:{}"),
            (r"<(button|input) type=\"([a-z]+)\"> element", "{}:{}"),
            (r"([a-z-]+) attribute", "attr:{}"),
        )
        for pattern, key in patterns:
            if match := re.fullmatch(pattern, part):
                keys.append(key.format(*match.groups()))
                break
    if slug.startswith("html-"):  # "address": a bare element name
        keys = [k.replace("prop:", "tag:", 1) for k in keys]
    return tuple(keys)


@functools.cache
def caniemail_index() -> tuple[dict[str, Feature], dict[str, tuple[str, ...]]]:
    """Features by slug, and the slugs each detection key points to."""
    data = json.loads(DATA.read_text(encoding="utf-8"))
    features: dict[str, Feature] = {}
    by_key: dict[str, list[str]] = {}
    for item in data["data"]:
        if item.get("category") == "css" and item["slug"].startswith("css-selector-"):
            continue
        slug = item["slug"]
        features[slug] = Feature(slug, item["title"].strip(), item["url"],
                                 _latest_support(item.get("stats") or {}))
        for key in _title_keys(slug, item["title"]):
            by_key.setdefault(key, []).append(slug)
    return features, {key: tuple(slugs) for key, slugs in by_key.items()}


# -- detection --------------------------------------------------------------------------------

def _strip_comments(css: str, found: dict[str, str]) -> str:
    parts, at = [], 0
    while (start := css.find("/*", at)) != -1:
        found.setdefault("comment", "/* ... */")
        parts.append(css[at:start])
        end = css.find("*/", start + 2)
        at = len(css) if end == -1 else end + 2
    parts.append(css[at:])
    return " ".join(parts)


def _declarations(text: str, found: dict[str, str]) -> None:
    for declaration in text.split(";"):
        name, colon, value = declaration.partition(":")
        name = name.strip().lower()
        if not colon or not _PROPERTY.match(name):
            continue
        example = f"{name}: {' '.join(value.split())[:60]}"
        if name.startswith("--"):
            found.setdefault("custom-property", example)
            continue
        found.setdefault(f"prop:{name}", example)
        value = value.lower()
        if "!important" in value:
            found.setdefault("important", example)
            value = value.replace("!important", "")
        found.setdefault(f"propval:{name}:{value.strip()}", example)
        for function in _FUNCTION.findall(value):
            found.setdefault(f"func:{function}", example)
        for unit in _UNIT.findall(value):
            found.setdefault(f"unit:{unit}", example)
        for word in _WORD.findall(value):
            found.setdefault(f"kw:{word}", example)


def _media_feature(name: str) -> str:
    name = name.lower()
    prefix = "-webkit-" if name.startswith("-webkit-") else ""
    bare = name.removeprefix(prefix)
    return prefix + bare.removeprefix("min-").removeprefix("max-")


def _stylesheet(css: str, found: dict[str, str]) -> None:
    """At-rules, media features and pseudo-classes from selectors; declarations from blocks.
    One pass over the braces (regexes that span braces go quadratic on brace-less input)."""
    css = _strip_comments(css, found)
    last = 0
    for brace in _BRACE.finditer(css):
        chunk = css[last:brace.start()]
        if brace.group() == "{":
            head, _, prelude = chunk.rpartition(";")  # "@import url(x); .a" -> ".a"
            _declarations(head, found)
            _prelude(prelude.strip(), found)
        else:
            _declarations(chunk, found)
        last = brace.end()
    _declarations(css[last:], found)
    for rule in _AT_RULE.findall(css):
        found.setdefault(f"at:{rule.lower()}", f"@{rule.lower()}")


def _prelude(prelude: str, found: dict[str, str]) -> None:
    if prelude.lower().startswith("@media"):
        for feature in _MEDIA_FEATURE.findall(prelude):
            found.setdefault(f"media:{_media_feature(feature)}", prelude[:80])
    elif not prelude.startswith("@"):
        for pseudo in _PSEUDO.findall(prelude):
            found.setdefault(f"pseudo:{pseudo.lower()}", prelude[:80])


def _image_key(src: str) -> str | None:
    if src.lower().startswith("data:"):
        return "image:base64"
    path = urlsplit(src).path if "://" in src or src.startswith("/") else src
    extension = path.rpartition(".")[2].lower() if "." in path.rpartition("/")[2] else ""
    return f"image:{extension}" if extension.isalnum() else None


def detect(scan: Scan) -> dict[str, str]:
    """Detection keys used by a scanned document, each with one example of where."""
    found: dict[str, str] = {}
    budget = MAX_CSS_CHARS
    for block in scan.style_blocks:
        if budget <= 0:
            break
        _stylesheet(block[:budget], found)
        budget -= len(block)
    for tag, style in scan.inline_styles:
        _declarations(_strip_comments(style, found), found)
    for tag in scan.tags:
        found.setdefault(f"tag:{tag}", f"<{tag}>")
    for tag, attribute in scan.attributes:
        found.setdefault(f"attr:{attribute}", f"<{tag} {attribute}>")
    for tag, name, value in scan.attribute_values:
        if tag in ("input", "button") and name == "type":
            found.setdefault(f"{tag}:{value}", f'<{tag} type="{value}">')
        elif tag == "meta" and name == "name":
            found.setdefault(f"meta:{value}", f'<meta name="{value}">')
    for anchor in scan.anchors:
        if anchor.href.startswith("#") and len(anchor.href) > 1:
            found.setdefault("href:anchor", f'<a href="{anchor.href[:60]}">')
        elif anchor.href.lower().startswith("mailto:"):
            found.setdefault("href:mailto", f'<a href="{anchor.href[:60]}">')
    for image in scan.images:
        key = _image_key(image.src)
        if key:
            found.setdefault(key, f'<img src="{image.src[:80]}">')
    return found


def features_used(html: str) -> dict[str, str]:
    """caniemail slugs used by an HTML document, each with one example."""
    _, by_key = caniemail_index()
    used: dict[str, str] = {}
    for key, example in detect(scan_html(html)).items():
        for slug in by_key.get(key, ()):
            used.setdefault(slug, example)
    return used


# -- what MJML emits on purpose ---------------------------------------------------------------

REFERENCE_MJML = """<mjml>
  <mj-head>
    <mj-title>Reference</mj-title>
    <mj-preview>Reference preview</mj-preview>
    <mj-attributes><mj-all font-family="Arial, sans-serif" /></mj-attributes>
  </mj-head>
  <mj-body width="600px">
    <mj-wrapper padding="10px">
      <mj-section background-color="#ffffff" padding="10px 0">
        <mj-column>
          <mj-text align="center" font-size="15px" line-height="24px">
            Text <a href="https://example.com">link</a>
          </mj-text>
          <mj-image src="https://example.com/a.png" width="120px" alt="Logo"
                    href="https://example.com" />
          <mj-button href="https://example.com" border-radius="6px">Button</mj-button>
          <mj-divider border-color="#cccccc" />
          <mj-spacer height="10px" />
          <mj-table><tr><td>Cell</td></tr></mj-table>
        </mj-column>
      </mj-section>
    </mj-wrapper>
    <mj-section>
      <mj-group>
        <mj-column><mj-text>Left</mj-text></mj-column>
        <mj-column><mj-text>Right</mj-text></mj-column>
      </mj-group>
    </mj-section>
    <mj-section>
      <mj-column>
        <mj-social>
          <mj-social-element name="linkedin" href="https://example.com">In</mj-social-element>
        </mj-social>
        <mj-navbar><mj-navbar-link href="https://example.com">Home</mj-navbar-link></mj-navbar>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>
"""


@functools.cache
def baseline_features() -> frozenset[str]:
    """The caniemail features in MJML's own output for its standard components."""
    from engine.render.compile import compile_asset

    compiled = compile_asset("email", REFERENCE_MJML)
    if not compiled.valid or compiled.html is None:  # a broken MJML install: report everything
        return frozenset()
    # Image formats are the author's choice even though the reference uses a PNG.
    return frozenset(slug for slug in features_used(compiled.html)
                     if not slug.startswith("image-"))


# -- the check --------------------------------------------------------------------------------

def _clients(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def check_client_support(asset: str, html: str) -> list[Finding]:
    """One warning per feature the email uses that a major client does not support, or
    supports only in part, naming the clients."""
    features, _ = caniemail_index()
    ignored = baseline_features()
    findings = []
    for slug, example in sorted(features_used(html).items()):
        if slug in ignored:
            continue
        feature = features[slug]
        missing = [c for c, s in feature.support.items() if s == "n"]
        partial = [c for c, s in feature.support.items() if s == "a"]
        if not missing and not partial:
            continue
        parts = []
        if missing:
            parts.append(f"not supported by {_clients(missing)}")
        if partial:
            parts.append(f"only partly supported by {_clients(partial)}")
        code = "compat.unsupported" if missing else "compat.partial"
        findings.append(Finding(
            Severity.WARNING, code, asset, slug,
            f"{feature.title} (in {example}) is {' and '.join(parts)}: see {feature.url}"))
    return findings
