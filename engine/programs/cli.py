"""`nurture program validate|load|list|show`."""

from __future__ import annotations

import click
from rich.console import RenderableType
from rich.table import Column, Table

from engine.cli_context import AppContext, console, echo_json, err_console, pass_app, styled
from engine.db import utcnow
from engine.launch.service import last_launch, pending_changes, pending_lines
from engine.programs.loader import validate_program_dir
from engine.programs.service import (
    ProgramSummary,
    load_program,
    matrix,
    program_summaries,
    side_tracks,
)
from engine.programs.spec import Program
from engine.programs.store import current_program


@click.group()
def program() -> None:
    """Programs as code: a directory with program.yaml, emails/*.mjml and pages/*.html."""


@program.command()
@click.argument("directory", type=click.Path(file_okay=False))
def validate(directory: str) -> None:
    """Check DIRECTORY and print every error as file:line: message (exit 1 on errors).

    A program.yaml without sender.from takes NURTURE_FROM; without either it is an error. A
    crm.yaml kept with the program (a CRM field map) is checked too; the map in effect is the
    instance's (`nurture crm map show`)."""
    errors = validate_program_dir(directory)
    for error in errors:
        err_console.print(str(error))
    if errors:
        err_console.print(f"{len(errors)} error(s)")
        raise SystemExit(1)
    console.print(f"{directory}: valid")


@program.command()
@click.argument("directory", type=click.Path(file_okay=False))
@pass_app
def load(app: AppContext, directory: str) -> None:
    """Validate DIRECTORY, then store it as a new version of its program (all or nothing).
    Once the program is launched, the new version waits for `nurture launch`."""
    with app.db.session() as session:
        result = load_program(session=session, directory=directory, now=utcnow())
        name = result.record.name
    if not result.created:
        console.print(f"{name} version {result.version} is unchanged: nothing stored")
    elif result.pending:
        console.print(f"loaded {name} version {result.version}: pending launch (leads keep "
                      f"version {result.live_version} until `nurture launch {name}` passes "
                      "the QA gate)")
    else:
        console.print(f"loaded {name} version {result.version}"
                      f" ({result.migrated} running enrollment(s) migrated)")


@program.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the programs as JSON.")
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """List the loaded programs: kind, goal, newest version, launch state (not launched, live,
    or pending launch while leads run an older launched version) and enrolled leads by status.
    `nurture program show NAME` lists every change waiting for a launch, edited emails included."""
    with app.db.session() as session:
        summaries = program_summaries(session=session)
    if as_json:
        echo_json([summary.to_dict() for summary in summaries])
        return
    if not summaries:
        console.print("no programs (load one with `nurture program load DIR`)")
        return
    table = Table(Column("program", no_wrap=True), *(
        Column(header, overflow="fold") for header in ("name", "kind", "goal", "version",
                                                       "launch", "enrolled")))
    for summary in summaries:
        table.add_row(summary.record.name, summary.program.name, summary.program.kind or "-",
                      summary.program.goal.describe() if summary.program.goal else "-",
                      str(summary.record.current_version), _launch_cell(summary),
                      ", ".join(f"{n} {status}" for status, n in summary.enrolled.items()) or "none")
    console.print(table)


def _launch_cell(summary: ProgramSummary) -> RenderableType:
    record = summary.record
    if summary.launch_state == "not launched":
        return styled(("not launched", "yellow"))
    if summary.launch_state == "live":
        return f"live (version {record.live_version})"
    return styled(f"version {record.live_version} live, ",
                  (f"{record.current_version} pending launch", "yellow"))


@program.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the matrix as JSON.")
@pass_app
def show(app: AppContext, name: str, as_json: bool) -> None:
    """Print program NAME's newest version: its kind, goal and advance rules, the persona x
    stage matrix flagging empty cells, then what is live and what waits for the next launch,
    and why."""
    with app.db.session() as session:
        record, prog = current_program(session=session, name=name)
        pending = pending_changes(session=session, record=record)
        launch = last_launch(session=session, record=record)
    rows = matrix(prog)
    side = side_tracks(prog)
    if as_json:
        goal = {**prog.goal.to_dict(), "text": prog.goal.describe()} if prog.goal else None
        echo_json({"program": name, "version": record.current_version,
                   "live_version": record.live_version, "kind": prog.kind, "goal": goal,
                   "advance": [rule.describe() for rule in prog.advance],
                   "cells": rows, "side_tracks": side, "pending": [p.to_dict() for p in pending]})
        return
    console.print(styled((prog.name, "bold"), f" ({name}, version "
                                f"{record.current_version}, time zone {prog.timezone})"))
    _print_purpose(prog)
    table = Table("stage \\ persona", *prog.personas)
    for stage in dict.fromkeys(r["stage"] for r in rows):
        cells = [_cell(r) for r in rows if r["stage"] == stage]
        table.add_row(stage, *cells)
    console.print(table)
    empty = [f"{r['persona']}/{r['stage']}" for r in rows if r["empty"]]
    if empty:
        console.print(styled((f"{len(empty)} empty cell(s)", "yellow"),
                                    " (leads there wait): " + ", ".join(empty)))
    if side:
        console.print("side tracks: " + ", ".join(f"{t['track']} ({len(t['emails'])} emails)" for t in side))
    _print_launch_state(record, launch, pending)


def _print_purpose(prog: Program) -> None:
    console.print(f"kind: {prog.kind or 'not set'}")
    console.print(f"goal: {prog.goal.describe() if prog.goal else 'not set (reports have nothing to measure)'}")
    for rule in prog.advance:
        console.print(rule.describe())


def _print_launch_state(record, launch, pending) -> None:
    if record.live_version is None:
        console.print(styled(("not launched", "yellow"), ": nothing is sent until "
                                    f"`nurture launch {record.name}` passes the QA gate"))
    else:
        when = f", launched {launch.at:%Y-%m-%d %H:%M} UTC by {launch.by}" if launch else ""
        console.print(f"live: version {record.live_version}{when}")
    if record.live_version is not None and not pending:
        console.print("nothing pending: leads get the newest version of everything")
    elif pending:
        console.print(styled(("pending launch", "yellow"), " (leads get the live versions "
                                    "until `nurture launch` passes the QA gate):"))
        for line in pending_lines(pending):
            console.print(f"  {line}")


def _cell(row: dict) -> RenderableType:
    if row["exit"]:
        return styled(("exits program", "dim"))
    if row["track"]:
        return f"{row['track']} ({len(row['emails'])} emails)"
    return styled(("EMPTY", "red"))
