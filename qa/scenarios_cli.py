"""`nurture qa scenarios PROGRAM`: run a program's scenario table through the real decision
logic, print pass or fail per row with the first difference, then path coverage and the
static checks. Exit 1 when a scenario fails, the table is missing or does not validate, or a
static check finds a blocker (a dead-end track)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from engine.cli_context import AppContext, console, echo_json, err_console, parse_at, styled
from engine.programs.loader import ProgramInvalid, is_program_dir, load_program_dir
from engine.programs.spec import Program
from qa.findings import Severity
from qa.program_checks import ProgramReview, review_program


@click.command("scenarios")
@click.argument("program")
@click.option("--file", "scenario_file", type=click.Path(exists=True, dir_okay=False),
              help="Scenario table (default: scenarios.yaml, .yml or .csv in the directory; "
                   "required for a loaded program's name).")
@click.option("--start", help="Start of the simulated clock, ISO 8601 (default: the table's "
                              "`start`, else Monday 2025-01-06 00:00 UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print the review as JSON.")
def scenarios(program: str, scenario_file: str | None, start: str | None, as_json: bool) -> None:
    """Walk every scenario of PROGRAM (a program directory, or a loaded program's name with
    --file) through the decision logic on a simulated clock; print pass or fail per row, the
    first difference, path coverage and the static checks."""
    spec, directory = _load(program, scenario_file)
    review = review_program(spec, directory, scenario_file=scenario_file,
                            start=parse_at(start) if start else None)
    if as_json:
        echo_json(review.to_dict())
    else:
        _print(review)
    if not review.passed:
        raise SystemExit(1)


def _load(program: str, scenario_file: str | None) -> tuple[Program, Path | None]:
    """A program directory, else the current version of a loaded program (which needs --file:
    the scenario table is not stored with the program)."""
    path = Path(program)
    if is_program_dir(path):
        try:
            return load_program_dir(path).program, path
        except ProgramInvalid as exc:
            for error in exc.errors:
                err_console.print(str(error))
            raise SystemExit(1) from exc
    if scenario_file is None:
        raise click.UsageError(f"{program!r} is not a program directory; for a loaded program "
                               "give its scenario table with --file")
    from engine.errors import NurtureError
    from engine.programs.store import current_program

    app = click.get_current_context().ensure_object(AppContext)
    try:
        with app.db.session() as session:
            return current_program(session=session, name=program)[1], None
    except NurtureError as exc:
        raise click.ClickException(exc.detail) from exc


def _print(review: ProgramReview) -> None:
    if review.errors:
        for error in review.errors:
            err_console.print(str(error))
    if review.results:
        _print_results(review)
    if review.coverage:
        _print_coverage(review)
    _print_findings(review)


def _print_results(review: ProgramReview) -> None:
    table = Table("scenario", "line", "result", "first difference",
                  title=f"{review.file} from {review.start:%Y-%m-%d %H:%M %Z}")
    for result in review.results:
        verdict = styled(("pass", "green")) if result.passed else styled(("FAIL", "bold red"))
        table.add_row(result.scenario.name, str(result.scenario.line), verdict,
                      result.first_difference or "")
    console.print(table)
    failed = len(review.failed)
    console.print(f"{len(review.results) - failed} passed, {failed} failed")


def _print_coverage(review: ProgramReview) -> None:
    counts = review.coverage.counts()
    console.print("coverage: " + ", ".join(f"{kind} {c['covered']}/{c['total']}"
                                           for kind, c in counts.items()))
    missing = review.coverage.uncovered()
    if missing:
        table = Table("kind", "not exercised by any scenario", "what", title="Uncovered")
        for item in missing:
            table.add_row(item.kind, item.name, item.detail)
        console.print(table)


_STYLE = {Severity.BLOCKER: "bold red", Severity.WARNING: "yellow", Severity.INFO: "dim"}


def _print_findings(review: ProgramReview) -> None:
    # Coverage gaps are printed above, scenario failures in the results table; the static
    # checks' info findings (cells of exit stages) are only counted, to keep blockers and
    # warnings readable.
    static = [f for f in review.findings
              if not f.code.startswith("coverage.") and f.code != "scenario.failed"]
    shown = [f for f in static if f.severity is not Severity.INFO]
    if shown:
        table = Table("severity", "code", "where", "message", title="Program checks")
        for finding in shown:
            style = _STYLE[finding.severity]
            table.add_row(styled((finding.severity, style)), finding.code,
                          finding.location, finding.message)
        console.print(table)
    infos = len(static) - len(shown)
    console.print(f"program checks: {len(shown)} blocker(s) and warning(s), {infos} info "
                  "(--json for all)")
