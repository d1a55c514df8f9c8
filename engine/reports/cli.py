"""`nurture report NAME [PROGRAM]`: the reports in the terminal, as JSON or CSV, or as an HTML
page with charts."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli_context import AppContext, console, echo, pass_app
from engine.db import utcnow
from engine.reports import NAMES, build_report
from engine.reports.output import to_csv, to_html, to_json, to_terminal
from engine.reports.query import GROUPINGS, SPLITS, parse_query


@click.command("report")
@click.argument("name", type=click.Choice(NAMES))
@click.argument("program", required=False)
@click.option("--from", "start", metavar="DATE", help="First day (ISO date or time); default: 30 "
              "days before --to.")
@click.option("--to", "end", metavar="DATE", help="Last day, included (ISO date), or an ISO "
              "time; default: now.")
@click.option("--by", type=click.Choice(GROUPINGS), help="One row per day, week, month or "
              "quarter (in --tz).")
@click.option("--split", type=click.Choice(SPLITS), help="One row per persona, source or owner.")
@click.option("--tz", default="UTC", show_default=True, help="Time zone of days and periods.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print one table as CSV (see --table).")
@click.option("--table", "table_key", metavar="KEY", help="With --csv: the table to print "
              "(default: the first).")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a self-contained HTML page with charts to this file.")
@pass_app
def report(app: AppContext, name: str, program: str | None, start: str | None, end: str | None,
           by: str | None, split: str | None, tz: str, as_json: bool, as_csv: bool,
           table_key: str | None, html_file: Path | None) -> None:
    """Print report NAME for PROGRAM (default: all programs): funnel, velocity, sla,
    engagement, goal, attribution, or review (the quarter of --to against the one before)."""
    if as_json and as_csv:
        raise click.UsageError("give --json or --csv, not both")
    query = parse_query(program=program, start=start, end=end, by=by, split=split, tz=tz,
                        now=utcnow())
    with app.db.reading() as session:
        built = build_report(name, session, query)
    if html_file is not None:
        html_file.write_text(to_html(built), encoding="utf-8")
        console.print(f"wrote {html_file}")
    if as_json:
        echo(to_json(built))
    elif as_csv:
        echo(to_csv(built, table_key), nl=False)
    elif html_file is None:
        to_terminal(built, console)
