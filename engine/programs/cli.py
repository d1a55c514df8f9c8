"""`nurture program validate|load|show`."""

from __future__ import annotations

import click
from rich.table import Table

from engine.cli_context import AppContext, console, echo_json, err_console, pass_app
from engine.db import utcnow
from engine.programs.loader import validate_program_dir
from engine.programs.service import load_program, matrix, side_tracks
from engine.programs.store import current_program


@click.group()
def program() -> None:
    """Programs as code: a directory with program.yaml, emails/*.mjml and pages/*.html."""


@program.command()
@click.argument("directory", type=click.Path(file_okay=False))
def validate(directory: str) -> None:
    """Check DIRECTORY and print every error as file:line: message (exit 1 on errors)."""
    errors = validate_program_dir(directory)
    for error in errors:
        err_console.print(str(error), markup=False)
    if errors:
        err_console.print(f"{len(errors)} error(s)")
        raise SystemExit(1)
    console.print(f"{directory}: valid")


@program.command()
@click.argument("directory", type=click.Path(file_okay=False))
@pass_app
def load(app: AppContext, directory: str) -> None:
    """Validate DIRECTORY, then store it as a new version of its program (all or nothing)."""
    with app.db.session() as session:
        result = load_program(session=session, directory=directory, now=utcnow())
        name = result.record.name
    if result.created:
        console.print(f"loaded {name} version {result.version}"
                      f" ({result.migrated} running enrollment(s) migrated)")
    else:
        console.print(f"{name} version {result.version} is unchanged: nothing stored")


@program.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the matrix as JSON.")
@pass_app
def show(app: AppContext, name: str, as_json: bool) -> None:
    """Print the persona x stage matrix of program NAME, flagging empty cells."""
    with app.db.session() as session:
        record, prog = current_program(session=session, name=name)
    rows = matrix(prog)
    side = side_tracks(prog)
    if as_json:
        echo_json({"program": name, "version": record.current_version, "cells": rows,
                   "side_tracks": side})
        return
    console.print(f"[bold]{prog.name}[/bold] ({name}, version {record.current_version}, "
                  f"time zone {prog.timezone})")
    table = Table("stage \\ persona", *prog.personas)
    for stage in dict.fromkeys(r["stage"] for r in rows):
        cells = [_cell(r) for r in rows if r["stage"] == stage]
        table.add_row(stage, *cells)
    console.print(table)
    empty = [f"{r['persona']}/{r['stage']}" for r in rows if r["empty"]]
    if empty:
        console.print(f"[yellow]{len(empty)} empty cell(s)[/yellow] (leads there wait): "
                      + ", ".join(empty))
    if side:
        console.print("side tracks: " + ", ".join(f"{t['track']} ({len(t['emails'])} emails)" for t in side))


def _cell(row: dict) -> str:
    if row["exit"]:
        return "[dim]exits program[/dim]"
    if row["track"]:
        return f"{row['track']} ({len(row['emails'])} emails)"
    return "[red]EMPTY[/red]"
