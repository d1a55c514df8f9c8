"""What every `nurture` command shares: the consoles and the lazily opened settings and database."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cached_property

import click
from rich.console import Console

from engine.config import Settings
from engine.db import Database, utcnow

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


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
