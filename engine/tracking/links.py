"""Track the links an asset's author wrote, never text that came from a lead.

Once per compiled asset version (`mark_links`, cached), the asset's links are found in its
templates: the href of every <a> in the HTML, and every http(s) URL written in the text part.
One is trackable when its scheme and host are written in the asset
(`https://acme.example/guide?id={{ lead.id }}`) or it is one of the engine's own addresses
(`{{ links.page('demo') }}`); it is then enclosed in a mark the template prints,
`{{ nurture_link_mark }}`. A link whose host comes from a merge field (`href="{{ lead.website }}"`)
is left as it is, untracked: otherwise a lead could choose where a redirect on the sender's
tracking domain leads, and pass it on.

Per send, the marked templates are rendered with a mark nobody can guess (`new_mark`), and
`instrument` wraps what lies between two marks through /c/<token>, removes the marks and adds
an open pixel and a hidden honeypot link. A lead field printed anywhere else (a company of
`https://evil.example/phish`) cannot hold the mark, so it stays plain text. The destinations
are returned so the sender stores them on the outbox row before the send: a click token names
an index, never a URL.
"""

from __future__ import annotations

import html as html_lib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from jinja2 import Environment, TemplateSyntaxError, nodes

from engine.render.compile import TOKEN, protect, restore

HONEYPOT = -1  # the link index of the hidden link only scanners follow
MAX_LINKS = 200  # links past this are left unwrapped (they still work, untracked)
LINK_MARK = "nurture_link_mark"  # the template variable printed around each trackable link
_MARK = "{{ " + LINK_MARK + " }}"

_ANCHOR = re.compile(r"<a(?=[\s>/])", re.IGNORECASE)
_TAG_END = re.compile(r"""[^>"']*(?:(?:"[^"]*"|'[^']*')[^>"']*)*>""")  # quotes may hold '>'
_ATTRIBUTE = re.compile(r"""\s+([^\s=/>"']+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+)))?""")
_LINK_START = re.compile(rf"https?://|{TOKEN.pattern}", re.IGNORECASE)
_URL_RUN = re.compile(r"""[^\s<>()\[\]"']*""")  # placeholder tokens are letters and digits
_AUTHORITY = re.compile(r"https?://([^/?#\s]*)", re.IGNORECASE)
_RAW = re.compile(r"\{%-?\s*(end)?raw\s*-?%\}")
_WEB_URL = re.compile(r"https?://[^\s<>\"']+$", re.IGNORECASE)
_TEXT_URL = re.compile(r"https?://[^\s<>()\[\]\"']+", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_LEFTOVER_MARK = re.compile("\ue000[^\ue000\ue001]{0,40}\ue001|[\ue000\ue001]")
_TRAILING = ".,;:!?"  # punctuation after a URL in text belongs to the sentence
_parser = Environment()


@dataclass(frozen=True)
class Instrumented:
    html: str
    text: str
    links: list[str]  # destination URLs by index


# -- once per asset version -------------------------------------------------------------------

def mark_links(*, html: str, text: str) -> tuple[str, str]:
    """The compiled HTML and text templates with each trackable asset link between marks."""
    return _marked_html(html), _marked_text(text)


def new_mark() -> str:
    """A mark for one send: unguessable, and unchanged by upper/lower and HTML escaping."""
    return f"\ue000{secrets.randbelow(10**20):020d}\ue001"


@lru_cache(maxsize=64)
def _marked_html(template: str) -> str:
    """Marks around the href value of every <a> whose link is trackable. A linear scan: each
    tag is read once, attribute by attribute (so a quoted '>' or a `data-href` is no href), and
    an unclosed tag ends the scan (nothing after it can be a complete tag)."""
    protected, saved = protect(template)
    spans, position = [], 0
    while (start := _ANCHOR.search(protected, position)) is not None:
        end = _TAG_END.match(protected, start.end())
        if end is None:
            break
        href = _href(protected, start.end(), end.end())
        if href is not None:
            value = protected[href[0]:href[1]]
            at = href[0] + len(value) - len(value.lstrip())
            if length := _link_length(value.lstrip(), saved):
                spans.append((at, at + length))
        position = end.end()
    return restore(_with_marks(protected, _outside_raw(spans, protected, saved)), saved)


@lru_cache(maxsize=64)
def _marked_text(template: str) -> str:
    """Marks around every trackable URL written in the text part (without the punctuation
    that ends a sentence after it)."""
    protected, saved = protect(template)
    spans, position = [], 0
    while (start := _LINK_START.search(protected, position)) is not None:
        value = _URL_RUN.match(protected, start.start()).group(0).rstrip(_TRAILING)
        if length := _link_length(value, saved):
            spans.append((start.start(), start.start() + length))
            position = start.start() + length
        else:
            position = start.end()
    return restore(_with_marks(protected, _outside_raw(spans, protected, saved)), saved)


def _href(protected: str, start: int, end: int) -> tuple[int, int] | None:
    """Where the value of the tag's href attribute is, if it has one."""
    for match in _ATTRIBUTE.finditer(protected, start, end):
        if match.group(1).lower() == "href":
            group = next((g for g in (2, 3, 4) if match.group(g) is not None), None)
            return match.span(group) if group is not None else None
    return None


def _link_length(value: str, saved: list[str]) -> int:
    """The length of the trackable link `value` starts with, 0 for none. Trackable: its scheme
    and host are the asset's own words, or it starts with one of the engine's addresses; it
    holds only text and {{ expressions }}, up to block tags that may end it ({% endif %}), not
    continue it (a mark inside a block could print without its pair)."""
    end = len(value)
    for token in TOKEN.finditer(value):
        if not saved[int(token[1])].startswith("{{"):
            rest = value[token.start():]
            if any(not saved[int(t[1])].startswith("{%") for t in TOKEN.finditer(rest)) \
                    or TOKEN.sub("", rest):
                return 0
            end = token.start()
            break
    link = value[:end]
    if (first := TOKEN.match(link)) is not None:  # its host must be the engine's own
        ends_host = link[first.end():first.end() + 1] in ("", "/", "?", "#")
        return end if ends_host and _engine_link(saved[int(first[1])]) else 0
    authority = _AUTHORITY.match(link)
    return end if authority and authority[1] and not TOKEN.search(authority[1]) else 0


def _engine_link(placeholder: str) -> bool:
    """Exactly `{{ links.NAME }}` or `{{ links.page('slug') }}`: an address under the engine's
    URL (nothing chained on it that could make it another: `.replace(...)`, `~ lead.x`)."""
    try:
        body = _parser.parse(placeholder).body
    except TemplateSyntaxError:
        return False
    if len(body) != 1 or not isinstance(body[0], nodes.Output) or len(body[0].nodes) != 1:
        return False
    node = body[0].nodes[0]
    if isinstance(node, nodes.Call):
        if (node.kwargs or node.dyn_args or node.dyn_kwargs or len(node.args) != 1
                or not isinstance(node.args[0], nodes.Const)
                or not isinstance(node.args[0].value, str)
                or not isinstance(node.node, nodes.Getattr) or node.node.attr != "page"):
            return False
        node = node.node
    return (isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name)
            and node.node.name == "links")


def _outside_raw(spans: list[tuple[int, int]], protected: str,
                 saved: list[str]) -> list[tuple[int, int]]:
    """The spans not inside {% raw %}...{% endraw %}, where a mark would print as written."""
    raw, opened = [], None
    for token in TOKEN.finditer(protected):
        found = _RAW.fullmatch(saved[int(token[1])])
        if found and not found[1] and opened is None:
            opened = token.start()
        elif found and found[1] and opened is not None:
            raw.append((opened, token.end()))
            opened = None
    if opened is not None:
        raw.append((opened, len(protected)))
    return [span for span in spans if not any(a <= span[0] < b for a, b in raw)]


def _with_marks(protected: str, spans: list[tuple[int, int]]) -> str:
    out, position = [], 0
    for start, end in spans:
        out += [protected[position:start], _MARK, protected[start:end], _MARK]
        position = end
    out.append(protected[position:])
    return "".join(out)


# -- per send ---------------------------------------------------------------------------------

def instrument(*, html: str, text: str, mark: str, click_url: Callable[[int, str], str],
               open_url: str, untracked: tuple[str, ...] = ()) -> Instrumented:
    """Wrap the marked links of both rendered parts (one index per distinct URL), remove the
    marks, then add the pixel and honeypot. URLs starting with any of `untracked` (unsubscribe,
    view in browser) are left as they are: their own endpoints record them, and an unsubscribe
    link must never depend on a redirect."""
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

    def wrap_href(value: str) -> str:
        url = html_lib.unescape(value).strip()
        wrapped = tracked(url) if _WEB_URL.match(url) else None
        return value if wrapped is None else html_lib.escape(wrapped)

    def wrap_text(value: str) -> str:
        found = _TEXT_URL.match(value)  # lead data inside the link may end it early
        if found is None:
            return value
        url = found.group(0).rstrip(_TRAILING)
        wrapped = tracked(url)
        return value if wrapped is None else wrapped + value[len(url):]

    html_out = _wrap_marked(html, mark, wrap_href)
    text_out = _wrap_marked(text, mark, wrap_text)
    extra = (f'<a href="{html_lib.escape(click_url(HONEYPOT, ""))}" aria-hidden="true" '
             'tabindex="-1" style="display:none;font-size:0;line-height:0;max-height:0;'
             'overflow:hidden;mso-hide:all"></a>'
             f'<img src="{html_lib.escape(open_url)}" width="1" height="1" alt="" '
             'style="display:block;width:1px;height:1px;border:0">')
    return Instrumented(html=_append_to_body(html_out, extra), text=text_out, links=links)


def _wrap_marked(content: str, mark: str, wrap: Callable[[str], str]) -> str:
    """`wrap` applied to what lies between each pair of marks; the marks removed, and what is
    left of a mark a template's filter changed or cut (`wordwrap`, `replace`): its link goes
    untracked, and no stray mark reaches a reader."""
    parts = content.split(mark)
    joined = "".join(wrap(part) if i % 2 and i < len(parts) - 1 else part
                     for i, part in enumerate(parts))
    return _LEFTOVER_MARK.sub("", joined)


def _append_to_body(html: str, extra: str) -> str:
    matches = list(_BODY_END.finditer(html))
    if not matches:
        return html + extra
    at = matches[-1].start()
    return html[:at] + extra + html[at:]
