"""`nurture apikey create|list|revoke`."""

from __future__ import annotations

import click
from rich.table import Table

from engine.auth.service import ROLES, create_key, list_keys, revoke_key
from engine.cli_context import AppContext, console, echo, echo_json, err_console, pass_app
from engine.db import utcnow


class _Choice(click.Choice):
    """click.Choice whose refusal exits 1, like every other refused input of `nurture`."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            exc.exit_code = 1
            raise


@click.group()
def apikey() -> None:
    """API keys with roles: admin, marketer, reviewer, sales, read_only."""


@apikey.command()
@click.option("--role", required=True, type=_Choice(ROLES, case_sensitive=False),
              help="What the key may do.")
@click.option("--name", default=None, help="Who or what uses the key (default: ROLE-PREFIX).")
@pass_app
def create(app: AppContext, role: str, name: str | None) -> None:
    """Create a key and print it once: only its hash is stored.

    The key alone goes to standard output (KEY=$(nurture apikey create ...)), notes to stderr.
    """
    with app.db.session() as session:
        row, key = create_key(session=session, role=role, name=name, now=utcnow())
        prefix, label = row.prefix, row.name
    echo(key)
    err_console.print(f"created {role} key {label!r} (prefix {prefix}). "
                      "Store it now: it cannot be shown again.")


@apikey.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as JSON.")
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """List keys (prefix, name, role, dates); secrets are never shown."""
    with app.db.session() as session:
        rows = [{
            "prefix": k.prefix, "name": k.name, "role": k.role,
            "created_at": k.created_at.isoformat(),
            "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
            "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
        } for k in list_keys(session=session)]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        console.print("no API keys (create one with `nurture apikey create --role ROLE`)")
        return
    table = Table("prefix", "name", "role", "created", "last used", "status")
    for r in rows:  # dates only, to fit 80 columns; --json has the full timestamps
        status = "revoked" if r["revoked_at"] else "active"
        table.add_row(r["prefix"], r["name"], r["role"], r["created_at"][:10],
                      (r["last_used_at"] or "never")[:10], status)
    console.print(table)


@apikey.command()
@click.argument("prefix")
@pass_app
def revoke(app: AppContext, prefix: str) -> None:
    """Revoke the key with PREFIX: requests with it are refused from now on."""
    with app.db.session() as session:
        row, changed = revoke_key(session=session, prefix=prefix, now=utcnow())
        label, when = row.name, row.revoked_at
    if changed:
        console.print(f"revoked key {row.prefix} ({label})")
    else:
        console.print(f"key {row.prefix} ({label}) was already revoked"
                      f" on {when:%Y-%m-%d %H:%M} UTC")
