"""One linear pass over an email's HTML, collecting what the formatting and client-support
checks read: images, links, styles, tags, the visible text and the preheader.

The parser is libxml2's HTML parser driven in SAX (target) mode: no tree is built, so deeply
nested or broken markup costs linear time and no recursion. Python's html.parser goes quadratic
on inputs such as '<a <a <a ...'. Comments are skipped, and with them MJML's Outlook-only
conditional comments (`<!--[if mso]>...<![endif]-->`), which only Outlook for Windows reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lxml import etree

MAX_SCAN_CHARS = 2 * 1024 * 1024  # past this only the size check matters; the rest is skipped
MAX_ITEMS = 2000  # images, links and styles kept per document
MAX_ELEMENTS = 20_000  # a long email has a few thousand; past this the rest is skipped
MAX_TEXT_CHARS = 512 * 1024

_HIDDEN_STYLE = re.compile(r"display\s*:\s*none", re.IGNORECASE)
_SKIP_TEXT = frozenset({"head", "title", "style", "script", "template"})
_BLOCK = frozenset({
    "address", "article", "blockquote", "br", "div", "footer", "h1", "h2", "h3", "h4", "h5",
    "h6", "header", "hr", "li", "ol", "p", "section", "table", "td", "th", "tr", "ul",
})
# Attributes whose values the client-support check needs (input types, meta names).
_VALUE_ATTRIBUTES = frozenset({"type", "name"})


@dataclass(frozen=True)
class Image:
    src: str
    alt: str | None  # None: no alt attribute at all
    width: str | None
    height: str | None
    style: str
    linked: bool  # inside an <a href>
    decorative: bool  # role=presentation, aria-hidden, or a 1x1 pixel


@dataclass(frozen=True)
class Anchor:
    href: str
    text: str


@dataclass
class Scan:
    images: list[Image] = field(default_factory=list)
    anchors: list[Anchor] = field(default_factory=list)
    inline_styles: list[tuple[str, str]] = field(default_factory=list)  # (tag, style)
    style_blocks: list[str] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)
    attributes: set[tuple[str, str]] = field(default_factory=set)  # (tag, attribute)
    attribute_values: set[tuple[str, str, str]] = field(default_factory=set)
    preheader: str | None = None
    truncated: bool = False
    _text: list[str] = field(default_factory=list, repr=False)

    @property
    def text(self) -> str:
        """The visible text, block elements on their own lines, whitespace collapsed."""
        lines = (" ".join(line.split()) for line in "".join(self._text).splitlines())
        return "\n".join(line for line in lines if line)


class _Enough(Exception):
    """Raised from a parser callback to stop parsing a document past MAX_ELEMENTS."""


def _append(items: list, item) -> None:
    if len(items) < MAX_ITEMS:
        items.append(item)


class _Collector:
    """lxml parser target. Events arrive balanced (the parser closes what the markup leaves
    open), so a plain stack tracks hidden elements and open links."""

    def __init__(self) -> None:
        self.scan = Scan()
        self.stack: list[tuple[str, bool]] = []  # (tag, starts a hidden or text-less region)
        self.quiet = 0  # depth inside head/style/script or a display:none element
        self.in_body = False
        self.seen_visible = False
        self.preheader_depth: int | None = None
        self.preheader: list[str] = []
        self.anchors: list[tuple[str, list[str]]] = []  # open <a href>: (href, text parts)
        self.style_depth = 0
        self.style_text: list[str] = []
        self.text_chars = 0
        self.elements = 0

    def start(self, tag, attrib) -> None:
        self.elements += 1
        if self.elements > MAX_ELEMENTS:
            raise _Enough
        tag = str(tag).lower()
        attrs = {str(k).lower(): str(v) for k, v in attrib.items()}
        scan = self.scan
        scan.tags.add(tag)
        for name, value in attrs.items():
            scan.attributes.add((tag, name))
            if name in _VALUE_ATTRIBUTES:
                scan.attribute_values.add((tag, name, value.strip().lower()))
        style = attrs.get("style", "")
        if style:
            _append(scan.inline_styles, (tag, style))
        if tag == "body":
            self.in_body = True
        hidden = bool(_HIDDEN_STYLE.search(style)) or "hidden" in attrs
        quiet = tag in _SKIP_TEXT or hidden
        if hidden and self.in_body and not self.seen_visible and scan.preheader is None \
                and self.preheader_depth is None:
            self.preheader_depth = len(self.stack)
        if tag == "style":
            self.style_depth += 1
        if tag == "a" and "href" in attrs:
            self.anchors.append((attrs["href"].strip(), []))
        if tag == "img":
            self._image(attrs)
        if tag in _BLOCK:
            self._text("\n")
        self.stack.append((tag, quiet))
        self.quiet += quiet

    def _image(self, attrs: dict[str, str]) -> None:
        width, height = attrs.get("width"), attrs.get("height")
        pixel = width in ("0", "1", "2") and height in ("0", "1", "2")
        decorative = (pixel or attrs.get("role", "").lower() == "presentation"
                      or attrs.get("aria-hidden", "").lower() == "true")
        _append(self.scan.images, Image(
            src=attrs.get("src", "").strip(), alt=attrs.get("alt"), width=width, height=height,
            style=attrs.get("style", ""), linked=bool(self.anchors), decorative=decorative))

    def end(self, tag) -> None:
        if not self.stack:
            return
        tag, quiet = self.stack.pop()
        self.quiet -= quiet
        if self.preheader_depth is not None and len(self.stack) == self.preheader_depth:
            self.preheader_depth = None
            text = " ".join("".join(self.preheader).split())
            if text:
                self.scan.preheader = text
            self.preheader = []
        if tag == "style" and self.style_depth:
            self.style_depth -= 1
            if not self.style_depth:
                _append(self.scan.style_blocks, "".join(self.style_text))
                self.style_text = []
        if tag == "a" and self.anchors:
            href, parts = self.anchors.pop()
            _append(self.scan.anchors, Anchor(href, " ".join("".join(parts).split())))
        if tag in _BLOCK:
            self._text("\n")

    def data(self, data) -> None:
        if self.style_depth:
            if sum(map(len, self.style_text)) < MAX_TEXT_CHARS:
                self.style_text.append(data)
            return
        if self.preheader_depth is not None:
            if len(self.preheader) < MAX_ITEMS:
                self.preheader.append(data)
            return
        if self.quiet:
            return
        if self.in_body and data.strip():
            self.seen_visible = True
        if self.anchors and len(self.anchors[-1][1]) < MAX_ITEMS:
            self.anchors[-1][1].append(data)
        self._text(data)

    def _text(self, data: str) -> None:
        if self.text_chars < MAX_TEXT_CHARS:
            self.scan._text.append(data)
            self.text_chars += len(data)

    def comment(self, text) -> None:
        pass

    def close(self) -> Scan:
        while self.stack:
            self.end(self.stack[-1][0])
        return self.scan


def scan_html(html: str) -> Scan:
    """Everything the checks read from one HTML document, in one bounded pass."""
    truncated = len(html) > MAX_SCAN_CHARS
    collector = _Collector()
    parser = etree.HTMLParser(target=collector, recover=True, no_network=True,
                              remove_comments=True, remove_pis=True)
    try:
        if html.strip():
            parser.feed(html[:MAX_SCAN_CHARS])
        scan = parser.close()
    except _Enough:
        scan, truncated = collector.close(), True
    except etree.LxmlError:  # recover=True makes this rare; keep what was collected
        scan = collector.close()
    scan.truncated = truncated
    return scan
