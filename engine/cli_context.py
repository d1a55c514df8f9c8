"""What every `nurture` command shares: the consoles and the lazily opened settings and database.

Commands print through `console`/`err_console`, `echo` or `echo_json`, never `click.echo` or
`print`: these show stored text that holds terminal controls as visible escapes.

The consoles never read rich markup: every string they print (in `print`, table cells, column
headers, titles, rules) is shown as written, so `[/]` in an asset path cannot crash a command
and `[red]` or `[link=...]` in a lead's field cannot restyle the output or forge a terminal
hyperlink; `markup=True` changes nothing. Colour is given as data, never parsed out of text:
`console.print(styled((lead.email, "bold"), f"  stage {lead.stage}"))`, a table cell
`styled((severity, "red"))`, or `console.print(text, style="yellow")`, the styles being
constants (a style string can hold a link). Commands do not use rich's Text (it drops BEL and
CR where `styled` shows them) nor what reads markup whatever the console says (`rich.markup`,
`Text.from_markup`, a Panel's title); a progress `TextColumn` showing a task's description
takes `markup=False`. tests/test_cli_output.py holds all of this.
"""

from __future__ import annotations

import json
import re
import signal
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import click
from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment
from rich.text import Text

from engine.config import Settings
from engine.db import Database, utcnow
from engine.text import CONTROL_CHARACTERS

# What a terminal may act on instead of showing: control characters, and the bidi embeddings,
# overrides and isolates that reorder what is shown.
_UNPRINTABLE = re.compile(f"[{CONTROL_CHARACTERS}\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with each character a terminal could act on shown as an escape: \\x1b, \\u202e."""
    return _UNPRINTABLE.sub(_escape, text)


class SafeConsole(Console):
    """A rich Console that cannot be made to drive the terminal by what it prints: strings are
    shown as written, never read as markup or emoji codes, and control characters in the text
    become visible escapes, while its own styles and cursor controls (rendered from styles and
    control segments, never from text) are untouched."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"highlight": False, "soft_wrap": True, **kwargs,
                            "markup": False, "emoji": False})

    def render_str(self, text: str, **kwargs) -> Any:
        # every string rich prints passes here, before layout: widths stay right, and BEL or CR
        # show instead of being dropped by rich
        return super().render_str(printable(text), **{**kwargs, "markup": False, "emoji": False})

    def render(self, renderable: RenderableType,
               options: ConsoleOptions | None = None) -> Iterable[Segment]:
        # everything else (rich Text, tables): the text of every segment
        for segment in super().render(renderable, options):
            if segment.control is None and _UNPRINTABLE.search(segment.text):
                segment = Segment(printable(segment.text), segment.style)
            yield segment


console = SafeConsole()
err_console = SafeConsole(stderr=True)


def styled(*parts: str | tuple[str, str]) -> Text:
    """One line from plain and styled parts, for console.print or a table cell:
    styled((lead.email, "bold"), "  stage mql"). Text is shown as written, controls as escapes."""
    return Text.assemble(*(printable(part) if isinstance(part, str)
                           else (printable(part[0]), part[1]) for part in parts))


def echo(text: str, *, err: bool = False, nl: bool = True) -> None:
    """Plain text out (no rich markup or layout), control characters shown as escapes."""
    click.echo(printable(text), err=err, nl=nl)


def echo_json(data: Any, *, ensure_ascii: bool = True) -> None:
    """`data` as indented JSON. json.dumps escapes C0 controls, not DEL, and with ensure_ascii
    off not C1 or bidi controls either: those are escaped here, as JSON reads them."""
    text = json.dumps(data, indent=2, ensure_ascii=ensure_ascii)
    click.echo(_UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


class AppContext:
    """What every command may need, created lazily: nothing connects until a command asks."""

    @cached_property
    def settings(self) -> Settings:
        return Settings.from_env()

    @cached_property
    def db(self) -> Database:
        from engine.migrate import SchemaNotCurrent, open_database

        try:
            return open_database(self.settings)
        except SchemaNotCurrent as exc:
            raise click.ClickException(str(exc)) from exc


pass_app = click.make_pass_decorator(AppContext, ensure=True)


def parse_at(at: str | None) -> datetime:
    """An --at option: an ISO date or time (UTC unless it names an offset); unset is now."""
    if not at:
        return utcnow()
    try:
        value = datetime.fromisoformat(at)
    except ValueError:
        raise click.BadParameter(f"{at!r} is not an ISO date or time", param_hint="--at") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def serve_until_stopped(server) -> None:
    """Keep a background server (the SMTP sink, the CRM receiver) running until Ctrl-C or
    SIGTERM, then stop it. Explicit handlers: a shell starting `nurture sink &` makes it ignore
    SIGINT otherwise."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
