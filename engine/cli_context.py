"""What every `nurture` command shares: the consoles and the lazily opened settings and database."""

from __future__ import annotations

from functools import cached_property

import click
from rich.console import Console

from engine.config import Settings
from engine.db import Database

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
