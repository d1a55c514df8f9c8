"""Instrument a rendered email for tracking: every http(s) link goes through /c/<token>, an
open pixel and a hidden honeypot link are added. The destinations are returned so the sender
stores them on the outbox row before the send: a click token names an index, never a URL.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable
from dataclasses import dataclass

HONEYPOT = -1  # the link index of the hidden link only scanners follow
MAX_LINKS = 200  # links past this are left unwrapped (they still work, untracked)

_ANCHOR = re.compile(r"<a(?=[\s>/])", re.IGNORECASE)
_TAG_END = re.compile(r"""[^>"']*(?:(?:"[^"]*"|'[^']*')[^>"']*)*>""")  # quotes may hold '>'
_ATTRIBUTE = re.compile(r"""\s+([^\s=/>"']+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+)))?""")
_WEB_URL = re.compile(r"https?://[^\s<>\"']+$", re.IGNORECASE)
_TEXT_URL = re.compile(r"https?://[^\s<>()\[\]\"']+")
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class Instrumented:
    html: str
    text: str
    links: list[str]  # destination URLs by index


def instrument(*, html: str, text: str, click_url: Callable[[int, str], str], open_url: str,
               untracked: tuple[str, ...] = ()) -> Instrumented:
    """Wrap links in both parts (one index per distinct URL), then add the pixel and honeypot.
    URLs starting with any of `untracked` (unsubscribe, view in browser) are left as they are:
    their own endpoints record them, and an unsubscribe link must never depend on a redirect."""
    links: list[str] = []
    index_of: dict[str, int] = {}

    def tracked(url: str) -> str | None:
        if url.startswith(untracked):
            return None
        if url not in index_of:
            if len(links) >= MAX_LINKS:
                return None
            index_of[url] = len(links)
            links.append(url)
        return click_url(index_of[url], url)

    def wrap_text(match: re.Match) -> str:
        url = match.group(0).rstrip(".,;:!?")
        wrapped = tracked(url)
        return match.group(0) if wrapped is None else wrapped + match.group(0)[len(url):]

    html_out = _wrap_anchors(html, tracked)
    text_out = _TEXT_URL.sub(wrap_text, text)
    extra = (f'<a href="{html_lib.escape(click_url(HONEYPOT, ""))}" aria-hidden="true" '
             'tabindex="-1" style="display:none;font-size:0;line-height:0;max-height:0;'
             'overflow:hidden;mso-hide:all"></a>'
             f'<img src="{html_lib.escape(open_url)}" width="1" height="1" alt="" '
             'style="display:block;width:1px;height:1px;border:0">')
    return Instrumented(html=_append_to_body(html_out, extra), text=text_out, links=links)


def _wrap_anchors(html: str, tracked: Callable[[str], str | None]) -> str:
    """Replace the href of every <a> tag whose value is an http(s) URL. A linear scan: each tag
    is read once, attribute by attribute (so a quoted '>' or a `data-href` is no href), and an
    unclosed tag ends the scan (nothing after it can be a complete tag)."""
    out, position = [], 0
    while (start := _ANCHOR.search(html, position)) is not None:
        end = _TAG_END.match(html, start.end())
        if end is None:
            break
        out.append(html[position:start.end()])
        out.append(_wrap_tag(html[start.end():end.end()], tracked))
        position = end.end()
    out.append(html[position:])
    return "".join(out)


def _wrap_tag(attributes: str, tracked: Callable[[str], str | None]) -> str:
    for match in _ATTRIBUTE.finditer(attributes):
        if match.group(1).lower() != "href":
            continue
        raw = next((g for g in match.group(2, 3, 4) if g is not None), "")
        url = html_lib.unescape(raw).strip()
        wrapped = tracked(url) if _WEB_URL.match(url) else None
        if wrapped is None:
            return attributes
        value = f'href="{html_lib.escape(wrapped)}"'
        return attributes[:match.start(1)] + value + attributes[match.end():]
    return attributes


def _append_to_body(html: str, extra: str) -> str:
    matches = list(_BODY_END.finditer(html))
    if not matches:
        return html + extra
    at = matches[-1].start()
    return html[:at] + extra + html[at:]
