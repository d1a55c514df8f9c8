"""`nurture leads import|set-stage|event|show|explain`."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from engine.cli_context import (
    AppContext,
    console,
    echo_json,
    err_console,
    parse_at,
    pass_app,
    styled,
)
from engine.crm.records import crm_view
from engine.db import utcnow
from engine.flows import leads as pipeline
from engine.journeys.service import lead_enrollments
from engine.leads.importer import ImportSummary, import_leads
from engine.leads.models import STANDARD_FIELDS
from engine.leads.service import (
    change_dict,
    event_log,
    get_lead,
    lead_dict,
    stage_history,
)
from engine.programs.models import ProgramRecord


@click.group()
def leads() -> None:
    """Leads: import, show, change stage, explain."""


@leads.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--program", required=True, help="Program to enroll the leads in (its name).")
@click.option("--dry-run", is_flag=True,
              help="Validate and count what would happen; store nothing. The rejects file is "
                   "still written.")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False),
              help="Where to write rejected rows (default: FILE's name with .rejects.csv).")
@click.option("--encoding", default="utf-8", show_default=True,
              help="Text encoding of FILE, e.g. latin-1 or cp1252 (a UTF-8 BOM is always fine).")
@pass_app
def import_command(app: AppContext, file: str, program: str, dry_run: bool,
                   rejects_path: str | None, encoding: str) -> None:
    """Create or update leads from FILE (CSV) by email, and enroll them in a program.

    Columns: email (required), first_name, last_name, company, title, country, timezone,
    persona, stage, source_channel, source_offer, source_partner, consent, plus custom columns.
    Header names are case-insensitive; comma, semicolon or tab delimited. A blank cell keeps the
    stored value. Importing the same file again changes nothing. One row per email: when two
    rows have the same email (any case), the first that imports wins and the later one is
    rejected as a duplicate, naming both rows (listed after the counts, and in the rejects
    file); merge them by hand and import that row again.

    Rows that cannot be imported are written to the rejects file with row (1 = the first row
    after the header), column, reason and the original cells; the other rows import. Cells that
    a spreadsheet would run as a formula (starting with = + - @ tab or CR, or ') get a leading '
    there. A field may hold tab and line breaks, no other control character. A quote left open
    rejects only the line it starts on ("line N: unterminated quote"); the lines after it are
    read as rows. Every row counts once: created + updated + unchanged + rejected = data rows.
    Exit code 0 even with rejected rows; 1 when the file cannot be imported at all.
    """
    with Progress(TextColumn("importing"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=err_console, transient=True,
                  disable=not err_console.is_terminal) as bar:
        task = bar.add_task("import", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = import_leads(db=app.db, path=file, program=program, now=utcnow(),
                               dry_run=dry_run, rejects_path=rejects_path, encoding=encoding,
                               progress=progress)
    counts = (f"created {summary.created}, updated {summary.updated}, "
              f"unchanged {summary.unchanged}, rejected {summary.rejected}")
    console.print(f"dry run, nothing stored: {counts}" if dry_run else counts)
    _print_duplicates(summary)
    if summary.rejects_path:
        console.print(f"rejected rows: {summary.rejects_path} (row 1 = the first row after the "
                      "header)")


def _print_duplicates(summary: ImportSummary) -> None:
    if not summary.duplicate_rows:
        return
    console.print(f"duplicate emails: {summary.duplicate_rows} row(s) rejected, an earlier row "
                  "with the same email was imported")
    for duplicate in summary.duplicates:
        console.print(f"  rows {duplicate.first_row} and {duplicate.row}: {duplicate.email} "
                      f"(row {duplicate.row} rejected)")
    unlisted = summary.duplicate_rows - len(summary.duplicates)
    if unlisted:
        console.print(f"  and {unlisted} more, in the rejects file")


@leads.command("set-stage")
@click.argument("email")
@click.argument("stage")
@click.option("--reason", required=True, help="Why the stage changes (kept in the history).")
@click.option("--actor", default="cli", show_default=True, help="Who changes it.")
@pass_app
def set_stage_command(app: AppContext, email: str, stage: str, reason: str, actor: str) -> None:
    """Move the lead with EMAIL to lifecycle STAGE, through the stage transition table."""
    with app.db.session() as session:
        lead = get_lead(session=session, email=email)
        before = lead.stage
        pipeline.change_stage(session=session, lead=lead, stage=stage, reason=reason,
                              actor=actor, now=utcnow())
        console.print(f"{lead.email}: stage {before} -> {lead.stage}")
        for enrollment in lead_enrollments(session=session, lead_id=lead.id):
            name = _program_name(session, enrollment.program_id)
            console.print(f"  {name}: {enrollment.status}"
                          + (f" in {enrollment.track}" if enrollment.track else ""))


@leads.command()
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@pass_app
def show(app: AppContext, email: str, as_json: bool) -> None:
    """Print a lead: fields, stage history, enrollments and event log."""
    with app.db.session() as session:
        lead = get_lead(session=session, email=email)
        data = {
            "lead": lead_dict(lead),
            "stage_history": [change_dict(c)
                              for c in stage_history(session=session, lead_id=lead.id)],
            "enrollments": [_enrollment(session, e) for e in
                            lead_enrollments(session=session, lead_id=lead.id)],
            "crm": crm_view(session, lead),
            "events": [
                {"at": e.at.isoformat(), "category": e.category, "kind": e.kind,
                 "detail": e.detail, "actor": e.actor}
                for e in event_log(session=session, lead_id=lead.id)
            ],
        }
    if as_json:
        echo_json(data)
        return
    _print_lead(data)


def _program_name(session, program_id: int) -> str:
    record = session.get(ProgramRecord, program_id)
    return record.name if record else f"program {program_id}"


def _enrollment(session, enrollment) -> dict:
    state = enrollment.state or {}
    zone = state.get("timezone") or "UTC"
    due = enrollment.due_at
    return {
        "program": _program_name(session, enrollment.program_id),
        "version": enrollment.program_version, "status": enrollment.status,
        "track": enrollment.track, "next_email": state.get("next_email"),
        "timezone": zone,
        "due_at": due.isoformat() if due else None,
        "due_local": due.astimezone(ZoneInfo(zone)).isoformat() if due else None,
        "exit_reason": state.get("exit_reason"),
    }


def _when(value: str | None, zone: str = "UTC") -> str:
    if not value:
        return "-"
    local = datetime.fromisoformat(value).astimezone(ZoneInfo(zone))
    return local.strftime("%a %Y-%m-%d %H:%M %Z")


def _print_changes(changes: list[dict]) -> None:
    for c in changes:
        console.print(f"  {_when(c['at'])}  {c['from'] or '(new)'} -> {c['to']}  {c['reason']}"
                      f"  by {c['actor']}")


def _print_lead(data: dict) -> None:
    lead = data["lead"]
    out = console.print
    out(styled((lead["email"], "bold"), f"  lead {lead['id']}, created "
                      f"{_when(lead['created_at'])}, updated {_when(lead['updated_at'])}"))
    fields = [(name, lead[name]) for name in STANDARD_FIELDS[1:] if lead[name] is not None]
    fields += [(f"{name} (custom)", value) for name, value in sorted(lead["custom"].items())]
    width = max((len(name) for name, _ in fields), default=0)
    for name, value in fields:
        out(f"  {name:<{width}}  {value}")

    out("Stage history", style="bold")
    _print_changes(data["stage_history"])

    out(styled(("Enrollments", "bold"), "" if data["enrollments"] else ": none"))
    for e in data["enrollments"]:
        line = f"  {e['program']} v{e['version']}: {e['status']}"
        if e["exit_reason"]:
            line += f" ({e['exit_reason']})"
        if e["track"]:
            line += f", track {e['track']}"
        if e["next_email"]:
            line += f", next {e['next_email']}"
        if e["due_at"]:
            line += (f" due {_when(e['due_at'], e['timezone'])} ({e['timezone']}),"
                     f" {_when(e['due_at'])}")
        out(line)

    _print_crm(data["crm"])

    out(styled(("Event log", "bold"), "" if data["events"] else ": empty"))
    for event in data["events"]:
        out(f"  {_when(event['at'])}  {event['category']:<6}  {event['kind']:<16}  "
            f"{_detail(event['detail'], event['actor'])}")


def _print_crm(crm: dict) -> None:
    account = crm["account"]
    record = f"{crm['object']} {crm['id']}" if crm["id"] else "not linked to a record"
    console.print(styled(("CRM", "bold"), f": {record}"))
    if account:
        via = "" if account["matched_by"] == "crm" else " (by its email's domain)"
        console.print(f"  account {account['name'] or account['domain'] or account['crm_id']}"
                      f"{via}" + (f", owner {account['owner']}" if account["owner"] else ""))
    for o in crm["opportunities"]:
        amount = f", {o['amount']} {o['currency'] or ''}".rstrip() if o["amount"] else ""
        role = f" as {o['role']}" if o["role"] else ""
        console.print(f"  opportunity {o['name'] or o['crm_id']}{role}: {o['status']}, "
                      f"stage {o['stage'] or '-'}{amount}")


def _detail(detail: dict, actor: str) -> str:
    parts = [f"{key} {value}" for key, value in detail.items()
             if value not in (None, "") and key not in ("detail", "cause")]
    if detail.get("detail") is not None:
        parts.insert(0, str(detail["detail"]))
    return ", ".join(parts + [f"by {actor}"])


@leads.command("advance")
@click.option("--at", "at", help="As of this ISO time (default: now); a future time only "
              "previews, unless --record is given.")
@click.option("--record", is_flag=True, help="With a future --at, store the moves.")
@pass_app
def advance_command(app: AppContext, at: str | None, record: bool) -> None:
    """Apply the programs' idle `advance` rules: each lead without a response for a rule's
    time moves stage, recorded with the rule in words (the scheduler's daily check does this
    too; running it again moves nobody twice). A future --at previews and stores nothing."""
    now = utcnow()
    when = parse_at(at) if at else now
    preview = when > now and not record
    with app.db.sessionmaker() as session:  # closing it uncommitted rolls back
        moved = [(lead.email, reason)
                 for lead, reason in pipeline.advance_idle(session=session, now=when)]
        if not preview:
            session.commit()
    for email, reason in moved:
        console.print(f"{email}: {reason}")
    console.print(f"{len(moved)} lead(s) moved" + (
        f" at {when.isoformat()} (a preview: nothing stored; --record to store it)"
        if preview else ""))


@leads.command("event")
@click.argument("email")
@click.argument("kind", type=click.Choice([str(k) for k in pipeline.RESPONSES]))
@click.option("--detail", help="The email's key (opened, clicked, consumed: required for "
              "consumed), the page's slug (page_viewed, form_submitted), or a note "
              "(talk_to_sales).")
@click.option("--at", "at", help="When it happened (ISO time, within the last 90 days; "
              "default: now). It counts from now.")
@click.option("--actor", default="cli", show_default=True, help="Who records it.")
@pass_app
def event_command(app: AppContext, email: str, kind: str, detail: str | None, at: str | None,
                  actor: str) -> None:
    """Record a response seen by another channel for the lead with EMAIL: content it
    consumed elsewhere, a talk-to-sales request, an open, click, visit or form. Its journeys,
    score and routing follow, as for a tracked one."""
    now = utcnow()
    with app.db.session() as session:
        lead = get_lead(session=session, email=email)
        before = lead.stage
        awards = pipeline.record_event(session=session, lead=lead, kind=kind, detail=detail,
                                       at=parse_at(at) if at else None, now=now, actor=actor)
        points = sum(a.points for a in awards)
        console.print(f"{lead.email}: {kind}" + (f" {detail}" if detail else "")
                      + f" recorded, {points:+g} points" + (
                          f"; stage {before} -> {lead.stage}" if lead.stage != before else ""))


@leads.command()
@click.argument("email")
@click.option("--at", "at", help="Explain as of this ISO time (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@pass_app
def explain(app: AppContext, email: str, at: str | None, as_json: bool) -> None:
    """Why a lead has its score, its stage and its next send (or why nothing is scheduled):
    the fit rules that hold, every behaviour award and what it is worth now after decay, the
    stage changes with their reasons, sales notifications and SLA breaches."""
    from engine.leads.explain import explain as explain_lead

    now = parse_at(at)
    with app.db.session() as session:
        data = explain_lead(session=session, lead=get_lead(session=session, email=email), now=now)
    if as_json:
        echo_json(data)
        return
    _print_explanation(data)


def _print_explanation(data: dict) -> None:
    out = console.print
    lead, score = data["lead"], data["score"]
    out(styled((lead["email"], "bold"), f"  stage {lead['stage']}"
                      + (f", owner {lead['owner']}" if lead["owner"] else "")))
    if score["program"] is None:
        out(styled(("Score", "bold"), f" 0: {score['note']}"))
    else:
        threshold = score["threshold"]
        out(styled((f"Score {score['total']:g}", "bold"), f" (rules of {score['program']}"
                          + (f"; MQL at {threshold:g}" if threshold is not None
                             else "; no MQL threshold")
                          + (f"; behaviour halves every {score['half_life_days']} days"
                             if score["half_life_days"] else "") + ")"))
        for fit in score["fit"]:
            out(f"  fit        {fit['rule']}")
        if score["reset"]:
            out(f"  {score['reset']}")
        for award in score["behaviour"]:
            out(f"  {_when(award['at'])}  {award['rule']}, worth {award['now']:g} now")
        if score["missing_requirements"]:
            out(f"  cannot become an MQL without: {', '.join(score['missing_requirements'])}")
    out("Stage", style="bold")
    _print_changes(data["stage_history"])
    out(styled(("Next send", "bold"),
                      "" if data["next_sends"] else ": not enrolled in any program"))
    for send in data["next_sends"]:
        out(f"  {send['program']}: {send['why']}")
    sales = data["sales"]
    for note in sales["notifications"]:
        out(f"  sales {note['kind']} {_when(note['at'])}: {note['reason']}")
    for breach in sales["sla_breaches"]:
        state = f"resolved {_when(breach['resolved_at'])}" if breach["resolved_at"] else "open"
        out(f"  SLA {breach['kind']} since {_when(breach['since'])} ({state}): {breach['action']}")
