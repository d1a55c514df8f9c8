"""What every `nurture` command shares: the consoles and the lazily opened settings and database.

Commands print through `console`/`err_console`, `echo` or `echo_json`, never `click.echo` or
`print`: these show stored text that holds terminal controls as visible escapes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import click
from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment

from engine.config import Settings
from engine.db import Database, utcnow

# What a terminal may act on instead of showing: C0 controls but tab and newline (ESC starts
# every escape sequence, CR overwrites the line), DEL, C1 controls (\x9b is CSI on 8-bit
# terminals), and the bidi embeddings, overrides and isolates that reorder what is shown.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with each character a terminal could act on shown as an escape: \\x1b, \\u202e."""
    return _UNPRINTABLE.sub(_escape, text)


class SafeConsole(Console):
    """A rich Console that cannot be made to drive the terminal by what it prints: control
    characters in the text become visible escapes, while its own styles and cursor controls
    (rendered from styles and control segments, never from text) are untouched."""

    def render_str(self, text: str, **kwargs) -> Any:
        # strings, before markup and layout: widths stay right, and BEL or CR show instead of
        # being dropped by rich
        return super().render_str(printable(text), **kwargs)

    def render(self, renderable: RenderableType,
               options: ConsoleOptions | None = None) -> Iterable[Segment]:
        # everything else (rich Text, tables): the text of every segment
        for segment in super().render(renderable, options):
            if segment.control is None and _UNPRINTABLE.search(segment.text):
                segment = Segment(printable(segment.text), segment.style)
            yield segment


# emoji off: ":skull:" in a lead's field is shown as typed
console = SafeConsole(highlight=False, soft_wrap=True, emoji=False)
err_console = SafeConsole(stderr=True, highlight=False, soft_wrap=True, emoji=False)


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
