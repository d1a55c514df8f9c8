"""`nurture user create|passwd|list|disable`: the people who sign in to the console."""

from __future__ import annotations

import sys

import click
from rich.table import Table

from engine.auth.service import ROLES
from engine.auth.users import change_password, create_user, disable_user, list_users
from engine.cli_context import AppContext, console, echo_json, err_console, pass_app
from engine.db import utcnow
from engine.errors import Invalid


@click.group()
def user() -> None:
    """Console users and their roles: admin, marketer, reviewer, sales, read_only."""


def _password(from_stdin: bool) -> str:
    """The new password: one line of standard input, or typed twice without echo."""
    if from_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n")
        if not password:
            raise Invalid("no password on standard input", field="password")
        return password
    return click.prompt("Password", hide_input=True, confirmation_prompt="Repeat password")


@user.command()
@click.argument("email")
@click.option("--role", required=True,
              help=f"What the user may do: {', '.join(ROLES)}.")
@click.option("--name", default=None, help="The person's name, shown in the console.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from standard input (one line) instead of prompting.")
@pass_app
def create(app: AppContext, email: str, role: str, name: str | None,
           password_stdin: bool) -> None:
    """Create a console user who signs in with EMAIL and a password (at least 12 characters)."""
    password = _password(password_stdin)
    with app.db.session() as session:
        row = create_user(session=session, email=email, role=role, name=name,
                          password=password, now=utcnow())
        email, role = row.email, row.role
    console.print(f"created {role} user {email}: sign in at {app.settings.base_url}/sign-in")


@user.command()
@click.argument("email")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from standard input (one line) instead of prompting.")
@pass_app
def passwd(app: AppContext, email: str, password_stdin: bool) -> None:
    """Set a new password for EMAIL; the user's open sessions end."""
    password = _password(password_stdin)
    with app.db.session() as session:
        row = change_password(session=session, email=email, password=password, now=utcnow())
        email = row.email
    console.print(f"password changed for {email}; its sessions are signed out")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the users as JSON.")
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """List users (email, name, role, dates, status); passwords are never shown."""
    with app.db.session() as session:
        rows = [{
            "email": u.email, "name": u.name, "role": u.role,
            "created_at": u.created_at.isoformat(),
            "last_sign_in_at": u.last_sign_in_at.isoformat() if u.last_sign_in_at else None,
            "disabled_at": u.disabled_at.isoformat() if u.disabled_at else None,
        } for u in list_users(session=session)]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        console.print("no users (create one with `nurture user create EMAIL --role admin`)")
        return
    table = Table("email", "name", "role", "created", "last sign-in", "status")
    for r in rows:
        table.add_row(r["email"], r["name"] or "", r["role"], r["created_at"][:10],
                      (r["last_sign_in_at"] or "never")[:10],
                      "disabled" if r["disabled_at"] else "active")
    console.print(table)


@user.command()
@click.argument("email")
@pass_app
def disable(app: AppContext, email: str) -> None:
    """Disable EMAIL: it can no longer sign in and its open sessions end."""
    with app.db.session() as session:
        row, changed = disable_user(session=session, email=email, now=utcnow())
        email = row.email
    if changed:
        console.print(f"disabled {email}; its sessions are signed out")
    else:
        err_console.print(f"{email} was already disabled")
