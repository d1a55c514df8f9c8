"""`nurture qa run|waive` and `nurture launch`: the QA gate from the command line."""

from __future__ import annotations

from itertools import count
from pathlib import Path

import click

from engine.cli_context import AppContext, console, echo_json, err_console, pass_app, styled
from engine.db import utcnow
from qa.findings import Severity

_SEVERITY_STYLE = {Severity.BLOCKER: "bold red", Severity.WARNING: "yellow", Severity.INFO: "dim"}


@click.group()
def qa() -> None:
    """Test a program before it launches: links, formatting, proofs, scenarios; the gate."""


def _register() -> None:
    from qa.proof_cli import approvals, proof
    from qa.scenarios_cli import scenarios

    for command in (proof, approvals, scenarios):
        qa.add_command(command)


def _allow_host_option(command):
    return click.option(
        "--allow-host", "allow_hosts", multiple=True, metavar="HOST", callback=_check_allow_hosts,
        help="Let the link checker fetch this internal host (exact name, address or network, "
             "optionally :PORT), which may resolve to private or loopback addresses; "
             "repeatable, added to NURTURE_QA_ALLOW_HOSTS. Link-local and cloud metadata "
             "addresses stay refused.")(command)


def _check_allow_hosts(ctx, param, hosts: tuple[str, ...]) -> tuple[str, ...]:
    from qa.netguard import parse_allowlist

    try:
        parse_allowlist(hosts)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return hosts


def run_gate_for(app: AppContext, program: str, *, offline: bool, out: str | None,
                 screenshots: bool = True, allow_hosts: tuple[str, ...] = ()):
    """Run the gate on a directory or a loaded program's current version; write the report
    (screenshots beside it). The link checker may fetch `allow_hosts` and the hosts of
    NURTURE_QA_ALLOW_HOSTS (see qa.netguard)."""
    from rich.progress import BarColumn, Progress, TextColumn

    from qa.gate import GateOptions, default_checks, load_target, run_gate
    from qa.links import LinkCheckOptions
    from qa.netguard import parse_allowlist
    from qa.report import write_report

    try:
        parse_allowlist(app.settings.qa_allow_hosts)
    except ValueError as exc:
        raise click.ClickException(f"NURTURE_QA_ALLOW_HOSTS: {exc}") from None

    now = utcnow()
    with app.db.reading() as session:  # link checks may take minutes: no write lock
        target = load_target(session=session, program=program)
        out_dir = Path(out) if out else (app.settings.instance_path / "qa"
                                         / target.loaded.program.slug / now.strftime("%Y%m%dT%H%M%S"))
        options = GateOptions(
            base_url=app.settings.base_url, screenshots_dir=out_dir if screenshots else None,
            links=LinkCheckOptions(network=not offline,
                                   allow_hosts=app.settings.qa_allow_hosts + allow_hosts,
                                   cache_path=app.settings.instance_path / "qa" / "link-cache.json"))
        with Progress(TextColumn("QA: {task.description}", markup=False), BarColumn(),
                      TextColumn("{task.completed}/{task.total}"), console=err_console,
                      transient=True) as bar:
            task = bar.add_task("starting", total=len(default_checks()))
            started = count()

            def step(name: str) -> None:  # the checks done so far, and the one running
                bar.update(task, description=name, completed=next(started))

            report = run_gate(target=target, session=session, options=options, now=now,
                              progress=step)
    return target, report, write_report(report, out_dir)


def print_report(report, paths) -> None:
    """One line per finding (a table would cut codes and places short in a narrow terminal)."""
    for finding in report.findings:
        waived = finding.key in report.waivers
        style = "dim strike" if waived else _SEVERITY_STYLE[finding.severity]
        console.print(styled((f"{finding.severity:<7}", style),
                                    f" {finding.code}  {finding.asset}  {finding.location}: "
                                    f"{finding.message}" + ("  (waived)" if waived else "")))
    counts = report.counts()
    verdict = ("passed", "green") if report.passed else ("blocked", "bold red")
    console.print(styled("QA ", verdict, f": {counts['blocker']} blocker(s), "
                                f"{counts['warning']} warning(s), {counts['info']} info, "
                                f"{counts['waived']} waived"))
    console.print(f"report: {paths[1]} (JSON: {paths[0]})")


@qa.command("run")
@click.argument("program")
@click.option("--out", type=click.Path(file_okay=False), help="Report directory "
              "(default instance/qa/<program>/<time>).")
@click.option("--offline", is_flag=True, help="Check links statically only (no HTTP).")
@click.option("--no-screenshots", is_flag=True, help="Skip the Chromium screenshots.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report instead.")
@_allow_host_option
@pass_app
def run(app: AppContext, program: str, out: str | None, offline: bool, no_screenshots: bool,
        as_json: bool, allow_hosts: tuple[str, ...]) -> None:
    """Run every check on PROGRAM (a loaded program's name: its current version, with its
    approvals and waivers; or a directory) and write an HTML and a JSON report. Exit 1 while
    blockers remain."""
    _, report, paths = run_gate_for(app, program, offline=offline, out=out,
                                    screenshots=not no_screenshots, allow_hosts=allow_hosts)
    if as_json:
        echo_json(report.to_dict())
    else:
        print_report(report, paths)
    if not report.passed:
        raise SystemExit(1)


@qa.command()
@click.argument("program")
@click.argument("finding_key")
@click.option("--reason", required=True, help="Why this finding may ship.")
@click.option("--by", "by", required=True, help="Who waives it.")
@pass_app
def waive(app: AppContext, program: str, finding_key: str, reason: str, by: str) -> None:
    """Accept one finding of a loaded PROGRAM, named by its key (the report lists each
    finding's key), with a reason; recorded, and shown as waived in every later report.
    Approval findings (approval.*) cannot be waived: a reviewer approves the proof."""
    from engine.launch.service import waive as record_waiver
    from engine.programs.store import current_program

    with app.db.session() as session:
        record, _ = current_program(session=session, name=program)
        record_waiver(session=session, program_id=record.id, finding_key=finding_key,
                      reason=reason, by=by, now=utcnow())
    console.print(f"waived {finding_key} for {program}: {reason}")


@click.command()
@click.argument("program")
@click.option("--by", "by", required=True, help="Who launches it.")
@click.option("--offline", is_flag=True, help="Check links statically only (no HTTP).")
@click.option("--no-screenshots", is_flag=True, help="Skip the Chromium screenshots.")
@click.option("--out", type=click.Path(file_okay=False), help="Report directory.")
@_allow_host_option
@pass_app
def launch(app: AppContext, program: str, by: str, offline: bool, no_screenshots: bool,
           out: str | None, allow_hosts: tuple[str, ...]) -> None:
    """Launch a loaded PROGRAM: run the QA gate on its current version and the current
    version of each email and page, and refuse, naming each blocker, while any remains. On
    launch exactly what the gate checked goes live: sends, pages and new enrollments use it,
    running enrollments move to it, and the addresses in `launch.notify` are told what the
    program does. Loads and uploads after a launch wait for the next one."""
    from engine.assets.models import AssetVersion
    from engine.launch.service import pending_lines, record_launch
    from engine.programs.loader import is_program_dir
    from engine.programs.models import ProgramRecord

    if is_program_dir(program):
        raise click.BadParameter("launch a loaded program by name (`nurture program load DIR` "
                                 "first)", param_hint="PROGRAM")
    pending = _pending(app, program)
    if not pending:
        console.print(f"{program} is already launched at its current version: "
                      "nothing pending")
        return
    console.print("to launch:")
    for line in pending_lines(pending):
        console.print(f"  {line}")
    target, report, paths = run_gate_for(app, program, offline=offline, out=out,
                                         screenshots=not no_screenshots, allow_hosts=allow_hosts)
    now = utcnow()
    blockers = report.blockers
    with app.db.session() as session:
        record = session.get(ProgramRecord, target.record.id)
        summary = ("\n".join(f"{f.code} {f.asset} {f.location}: {f.message}" for f in blockers)
                   or "passed")
        record_launch(session=session, record=record, version=target.version, by=by, now=now,
                      launched=not blockers, summary=summary[:20_000],
                      assets={p: session.get(AssetVersion, v.id)
                              for p, v in target.checked_versions.items()})
    if blockers:
        print_report(report, paths)
        err_console.print(f"not launched: {len(blockers)} blocker(s) remain; fix them, or waive "
                          "one with `nurture qa waive PROGRAM KEY --reason ... --by ...`"
                          + _approval_advice(blockers))
        raise SystemExit(1)
    counts = report.counts()
    spec = target.loaded.program
    console.print(f"QA passed: 0 blockers, {counts['warning']} warning(s), {counts['waived']} "
                  f"waived; report: {paths[1]}")
    console.print(styled(("launched", "green"), f" {spec.name} v{target.version}: its "
                                "sends start now, with the versions above"))
    if spec.launch_notify:
        _notify(app, spec, by, now)


def _approval_advice(blockers) -> str:
    from engine.launch.service import may_be_waived

    if all(may_be_waived(f.key) for f in blockers):
        return ""
    return ("; approval blockers cannot be waived: a reviewer approves the proof "
            "(`nurture qa proof PROGRAM --to REVIEWER`)")


def _pending(app: AppContext, program: str):
    from engine.launch.service import pending_changes
    from engine.programs.store import current_program

    with app.db.session() as session:
        return pending_changes(session=session,
                               record=current_program(session=session, name=program)[0])


def _notify(app: AppContext, spec, by: str, now) -> None:
    from engine.launch.service import launch_notice
    from engine.sending.smtp import transport_from_settings

    transport = transport_from_settings(app.settings)
    try:
        result = transport.send(launch_notice(spec, to=list(spec.launch_notify), by=by, now=now))
    finally:
        transport.close()
    told = ", ".join(spec.launch_notify)
    if result.sent:
        console.print(f"told {told} what the program does")
    else:
        err_console.print(f"could not tell {told}: {result.code or ''} {result.text}")


_register()
