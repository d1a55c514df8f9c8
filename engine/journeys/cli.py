"""`nurture simulate`: a program's paths on a simulated clock, without sending or storing."""

from __future__ import annotations

from collections import Counter
from zoneinfo import ZoneInfo

import click
from rich.table import Table

from engine.cli_context import console, echo_json, err_console, styled
from engine.db import utcnow
from engine.journeys.simulate import SimLead, parse_start, read_events
from engine.journeys.simulate import simulate as run_simulation
from engine.programs.loader import load_program_dir


@click.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--leads", "leads_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Leads CSV (same columns as `nurture leads import`).")
@click.option("--events", "events_path", type=click.Path(exists=True, dir_okay=False),
              help="Scripted events CSV: day,email,event[,detail].")
@click.option("--days", required=True, type=click.IntRange(1, 3660), help="Days to simulate.")
@click.option("--start", help="Start of the clock, ISO 8601 (default: today 00:00 UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print every action as a JSON array.")
def simulate(directory, leads_path, events_path, days, start, as_json) -> None:
    """Run program DIRECTORY over leads on a simulated clock; nothing is sent or stored.

    Events (column `event`): opened, clicked, page_viewed, form_submitted, consumed (detail:
    email name), stage (detail: stage), persona (detail: persona), unsubscribed, bounced
    (detail: soft or hard, default hard), talk_to_sales. `day` may be fractional (1.5 = noon
    of day 1). Sends land inside the program's send window in each lead's time zone. The
    program's `advance` rules move leads between stages (action `advance`, with the rule in
    words), idle ones as simulated time passes. Custom columns are fields persona and fit
    rules read, as in the live engine.
    """
    from engine.leads.importer import read_lead_rows

    program = load_program_dir(directory).program
    clock = parse_start(start, utcnow())
    leads = []
    for row in read_lead_rows(leads_path):
        if row.error:
            err_console.print(f"{leads_path}: row {row.number}: {row.error.field}: "
                              f"{row.error.detail} (skipped)")
        else:
            leads.append(row.fields)
    emails = {lead["email"] for lead in leads}
    events = read_events(events_path, start=clock, program=program, emails=emails) if events_path else []
    sims = run_simulation(program, leads, events, start=clock, days=days)
    if as_json:
        entries = sorted((e for s in sims for e in s.path), key=lambda e: e.at)
        echo_json([e.to_dict() for e in entries])
        return
    for sim in sims:
        _print_path(sim)
    _print_totals(sims, days)


def _print_path(sim: SimLead) -> None:
    state = sim.state
    console.print(styled((sim.email, "bold"), f"  persona {state.persona}, stage "
                                f"{state.stage}, {state.timezone} -> {state.status}"
                                + (f" ({state.exit_reason})" if state.exit_reason else "")))
    tz = ZoneInfo(state.timezone)
    for entry in sim.path:
        local = entry.at.astimezone(tz).strftime("%a %Y-%m-%d %H:%M %Z")
        what = entry.asset or entry.track or ""
        console.print(f"  {local:<26} {entry.action:<8} {what:<28} {entry.reason}")


def _print_totals(sims: list[SimLead], days: int) -> None:
    actions = Counter(e.action for s in sims for e in s.path)
    sends = Counter(e.asset for s in sims for e in s.path if e.action == "send")
    table = Table("email", "sends", title=f"{len(sims)} lead(s), {days} day(s)")
    for asset, count in sends.most_common():
        table.add_row(asset, str(count))
    console.print(table)
    console.print(", ".join(f"{count} {kind}" for kind, count in sorted(actions.items())) or "no actions")
