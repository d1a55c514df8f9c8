"""`nurture crm status|deliver|dead-letter|receiver|received|map`."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from engine.cli_context import (
    AppContext,
    console,
    echo_json,
    err_console,
    pass_app,
    serve_until_stopped,
)
from engine.crm.map_cli import crm_map
from engine.db import utcnow

_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


@click.group()
def crm() -> None:
    """The CRM webhook: every lead created, stage change (MQL, accepted, rejected, ...),
    buying signal, unsubscribe, suppression, form submission and field change, POSTed signed
    to NURTURE_CRM_WEBHOOK_URL in order per lead, retried, dead-lettered when refused; its
    fields named as the CRM names them by the field map (`nurture crm map show`).

    The other way, the CRM's events (POST /api/v1/crm/events, or `crm import` of its CSV)
    update leads, contacts, accounts and opportunities through the same map (`crm inbound`,
    `crm duplicates`); `crm export` writes changes as CSV for a CRM without an API."""


crm.add_command(crm_map)


@crm.command()
@_JSON
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """The sync health view: pending, retrying (by error kind), sent, dead-lettered (by
    error kind) and the items they hold up, the last success and the oldest item not
    delivered yet; why nothing is sent when the webhook is not configured."""
    from engine.crm.delivery import not_configured
    from engine.crm.service import sync_health

    now = utcnow()
    with app.db.session() as session:
        health = sync_health(session=session, now=now,
                             not_configured=not_configured(app.settings))
    if as_json:
        echo_json(health)
        return
    if health["why_not"]:
        console.print(f"not delivering: {health['why_not']}", style="yellow")
    else:
        console.print(f"delivering to {app.settings.crm_webhook_url}")
    console.print(f"pending   {health['pending']}")
    console.print(f"retrying  {health['retrying']}{_kinds(health['retrying_by_error'])}")
    if health["sending"]:
        console.print(f"sending   {health['sending']}")
    console.print(f"sent      {health['sent']}")
    console.print(f"dead      {health['dead']}{_kinds(health['dead_by_error'])}"
                  + (f"; {health['held_by_dead_letters']} later item(s) of their leads wait "
                     "for them (`nurture crm dead-letter list`)"
                     if health["held_by_dead_letters"] else ""))
    if health["skipped"]:
        console.print(f"skipped   {health['skipped']}")
    console.print(f"last success: {health['last_success'] or 'never'}")
    age = health["oldest_undelivered_age_seconds"]
    console.print("oldest not delivered: " + (f"{health['oldest_undelivered']} "
                                              f"({_age(age)} ago)" if age is not None
                                              else "none"))
    inbound = health["inbound"]
    console.print(f"from the CRM: {inbound['applied']} applied, {inbound['refused']} refused"
                  f", last {inbound['last_received'] or 'never'}")


def _kinds(counts: dict[str, int]) -> str:
    return f" ({', '.join(f'{n} {kind}' for kind, n in counts.items())})" if counts else ""


def _age(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


@crm.command()
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000),
              help="Items claimed per batch.")
@pass_app
def deliver(app: AppContext, limit: int) -> None:
    """Deliver the due CRM items now, batch after batch, until none is due or the webhook
    stops answering (the scheduler's `crm` job does the same in the background)."""
    from sqlalchemy import func, select

    from engine.crm.delivery import deliver_all, due_clause, not_configured, webhook_from_settings
    from engine.crm.models import CrmOutboxItem, CrmStatus
    why = not_configured(app.settings)
    if why:
        raise click.ClickException(why)
    webhook = webhook_from_settings(app.settings)
    with app.db.session() as session:
        waiting = session.scalar(select(func.count()).select_from(CrmOutboxItem).where(
            CrmOutboxItem.status.in_([CrmStatus.PENDING, CrmStatus.SENDING])))
        due = session.scalar(select(func.count()).select_from(CrmOutboxItem)
                             .where(due_clause(utcnow())))
    with Progress(TextColumn("delivering to the CRM", markup=False), BarColumn(),
                  MofNCompleteColumn(), console=err_console, transient=True,
                  disable=not err_console.is_terminal) as bar:
        task = bar.add_task("crm", total=waiting)
        report = deliver_all(db=app.db, webhook=webhook, worker=f"{socket.gethostname()}:{os.getpid()}:cli",
                             clock=utcnow, limit=limit,
                             on_item=lambda outcome: bar.advance(task))
    console.print(f"{report} (of {waiting} waiting, {due} due at the start)")
    if report.unreachable:
        raise click.ClickException(f"the CRM webhook {webhook.url} did not answer: the "
                                   "items wait for their retry (`nurture crm status`)")


@crm.group("dead-letter")
def dead_letter() -> None:
    """Items the CRM refused for good (a 4xx other than 408 and 429, a redirect) or that ran
    out of attempts. A dead letter holds up its lead's later items until it is replayed and
    delivered, or skipped."""


@dead_letter.command("list")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@_JSON
@pass_app
def dead_letter_list(app: AppContext, limit: int, as_json: bool) -> None:
    """The dead letters, oldest first: id, lead, type, attempts, error kind and last error."""
    from engine.crm.service import dead_letters, item_dict

    with app.db.session() as session:
        items = [item_dict(item) for item in dead_letters(session=session, limit=limit)]
    if as_json:
        echo_json(items)
        return
    if not items:
        console.print("no dead letter")
        return
    for item in items:
        console.print(f"{item['id']:>6}  {item['email'] or item['lead_id']}  {item['type']}  "
                      f"{item['attempts']} attempt(s), {item['error_kind'] or '-'}, dead since "
                      f"{(item['dead_at'] or '')[:19]}")
        console.print(f"        {item['last_error'] or ''}")


@dead_letter.command("replay")
@click.argument("item_id", required=False, type=int)
@click.option("--all", "replay_every", is_flag=True, help="Replay every dead letter.")
@pass_app
def dead_letter_replay(app: AppContext, item_id: int | None, replay_every: bool) -> None:
    """Put dead letter ITEM_ID (or --all) back in line, due now with a fresh count of
    attempts; `nurture crm deliver` or the scheduler then sends it, with the same
    Idempotency-Key as before."""
    from engine.crm.service import replay, replay_all

    if (item_id is None) == (not replay_every):
        raise click.UsageError("give one dead letter's ID or --all (`nurture crm dead-letter "
                               "list` shows them)")
    with app.db.session() as session:
        if replay_every:
            count = replay_all(session=session, now=utcnow())
            console.print(f"{count} dead letter(s) back in line")
            return
        item = replay(session=session, item_id=item_id, now=utcnow())
        console.print(f"CRM item {item.id} ({item.kind} of {item.payload.get('email')}) back "
                      "in line")


@dead_letter.command("skip")
@click.argument("item_id", type=int)
@click.option("--reason", required=True, help="Why the CRM need never hear of it.")
@click.option("--by", "actor", required=True, help="Who decides.")
@pass_app
def dead_letter_skip(app: AppContext, item_id: int, reason: str, actor: str) -> None:
    """Give up dead letter ITEM_ID for good, so that its lead's later items go. Recorded
    with the reason; the CRM never hears of it."""
    from engine.crm.service import skip

    if not reason.strip():
        raise click.BadParameter("a reason is required", param_hint="--reason")
    with app.db.session() as session:
        item = skip(session=session, item_id=item_id, reason=reason.strip(), by=actor)
        console.print(f"CRM item {item.id} ({item.kind} of {item.payload.get('email')}) "
                      "skipped")


def _receiver_dir(app: AppContext, directory: str | None) -> Path:
    return Path(directory).resolve() if directory else app.settings.instance_path / "crm-receiver"


@crm.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8026, show_default=True,
              help="0 picks a free port.")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where requests are stored [default: instance/crm-receiver/].")
@click.option("--secret", default=None, help="Check X-Nurture-Signature with this key and "
              "answer 401 when it does not match [default: NURTURE_CRM_WEBHOOK_SECRET; "
              "neither: signatures are not checked].")
@click.option("--fail-first", type=click.IntRange(0), default=0,
              help="Answer the first K requests with --fail-status.")
@click.option("--fail-rate", type=click.FloatRange(0, 1), default=0.0,
              help="Answer this share of requests (0 to 1, at random) with --fail-status.")
@click.option("--fail-status", type=click.IntRange(400, 599), default=503, show_default=True)
@click.option("--status", "statuses", multiple=True, metavar="CODE",
              help="Answer the first requests with these, in order (repeatable): an HTTP "
                   "status, 'hang' (store, then answer after --hang seconds) or 'close' "
                   "(drop the connection unanswered).")
@click.option("--retry-after", default=None, help="Retry-After header of 429 and 503 answers "
              "(seconds or an HTTP date).")
@click.option("--hang", "hang_seconds", type=click.FloatRange(0), default=30.0,
              show_default=True, help="Seconds a 'hang' answer waits.")
@click.option("--seed", type=int, default=None, help="Seed of --fail-rate's draws.")
@pass_app
def receiver(app: AppContext, host: str, port: int, directory: str | None, secret: str | None,
             fail_first: int, fail_rate: float, fail_status: int, statuses: tuple[str, ...],
             retry_after: str | None, hang_seconds: float, seed: int | None) -> None:
    """Run a reference CRM webhook receiver that checks signatures and stores every request
    (until Ctrl-C), answering configured failures on demand. Point NURTURE_CRM_WEBHOOK_URL at
    the URL it prints; read what arrived with `nurture crm received`."""
    from engine.crm.receiver import Answers, Receiver, parse_answer

    try:
        script = [parse_answer(value) for value in statuses]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--status") from None
    key = secret or app.settings.crm_webhook_secret
    store = _receiver_dir(app, directory)
    answers = Answers(script=script, fail_first=fail_first, fail_status=fail_status,
                      fail_rate=fail_rate, seed=seed, retry_after=retry_after,
                      hang_seconds=hang_seconds)
    try:
        server = Receiver(store, host=host, port=port, secret=key, answers=answers,
                          on_request=_print_request)
        server.start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port} or store in {store}: "
                                   f"{exc.strerror or exc}") from None
    console.print(f"nurture crm receiver listening on {server.url}, storing in {store}")
    console.print("signatures checked" if key else "signatures NOT checked (no --secret nor "
                  "NURTURE_CRM_WEBHOOK_SECRET)")
    console.print("Ctrl-C to stop")
    serve_until_stopped(server)
    err_console.print(f"stopped; {len(server.received())} request(s) stored in {store}")


def _print_request(entry) -> None:
    lead = entry.body.get("lead", {}) if isinstance(entry.body, dict) else {}
    console.print(f"{time.strftime('%H:%M:%S')} {entry.answered} {entry.event_type:<15} "
                  f"{lead.get('email') or '-'} key={entry.idempotency_key or '-'}"
                  + (" duplicate" if entry.duplicate else "")
                  + (f" refused: {entry.error}" if entry.error else ""))


@crm.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="The receiver's directory [default: instance/crm-receiver/].")
@click.option("--type", "event_type", default=None, help="Only this event type.")
@click.option("--all", "everything", is_flag=True,
              help="Also the requests answered with an error.")
@_JSON
@pass_app
def received(app: AppContext, directory: str | None, event_type: str | None, everything: bool,
             as_json: bool) -> None:
    """What the reference receiver stored, oldest first (the accepted requests unless
    --all)."""
    from engine.crm.receiver import received as stored

    entries = stored(_receiver_dir(app, directory), accepted_only=not everything,
                     event_type=event_type)
    if as_json:
        echo_json([{**entry.__dict__} for entry in entries])
        return
    if not entries:
        console.print("nothing received")
        return
    for entry in entries:
        body = entry.body if isinstance(entry.body, dict) else {}
        console.print(f"{entry.seq:>5} {entry.received_at[:19]} {entry.answered} "
                      f"{entry.event_type:<14} {(body.get('lead') or {}).get('email') or '-'}  "
                      f"{_what(body)}  key {entry.idempotency_key}"
                      + (" (duplicate)" if entry.duplicate else ""))


def _what(body: dict) -> str:
    payload = body.get("payload") or {}
    if body.get("type") == "stage_change":
        return f"{payload.get('from')} -> {payload.get('to')}"
    return str(payload.get("reason") or payload.get("page") or payload.get("stage") or "")


# -- CSV exchange ------------------------------------------------------------------------------

@crm.command("export")
@click.option("--since", required=True, help="Records changed since: an ISO date (UTC "
              "midnight) or time, e.g. 2026-11-01 or 2026-11-01T09:00+01:00.")
@click.option("--object", "obj", type=click.Choice(["lead", "contact"]), default="lead",
              show_default=True, help="Leads not converted, or contacts.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Write the CSV here (default: standard output).")
@pass_app
def export_command(app: AppContext, since: str, obj: str, out_path: str | None) -> None:
    """Leads (or contacts) changed or suppressed since a time, as CSV under the CRM's column
    names (the field map's pushed fields), with NurtureId, CrmId, DoNotContact and UpdatedAt:
    for a CRM without an API."""
    from zoneinfo import ZoneInfo

    from engine.crm.fieldmap import current_map
    from engine.flows.crm_exchange import export_changes
    from engine.reports.query import parse_instant

    start = parse_instant(since, ZoneInfo("UTC"), field="since")
    crm_map = current_map(app.settings)
    with app.db.reading() as session:
        if out_path is None:
            export_changes(session=session, crm_map=crm_map, since=start,
                           out=sys.stdout, obj=obj)
            return
        with open(out_path, "w", encoding="utf-8", newline="") as out:
            rows = export_changes(session=session, crm_map=crm_map, since=start, out=out,
                                  obj=obj)
    err_console.print(f"{rows} {obj}(s) changed since {start.isoformat()} written to {out_path}")


@crm.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--object", "obj", type=click.Choice(["lead", "contact", "account",
                                                    "opportunity"]), required=True,
              help="What the file's rows are.")
@click.option("--id-column", default="Id", show_default=True, help="The CRM id's column.")
@click.option("--updated-column", default=None, help="The column of when the CRM last changed "
              "each record (e.g. LastModifiedDate): it settles most_recent rules and "
              "duplicates; without it, the import's time.")
@click.option("--encoding", default="utf-8", show_default=True)
@_JSON
@pass_app
def import_command(app: AppContext, file: str, obj: str, id_column: str,
                   updated_column: str | None, encoding: str, as_json: bool) -> None:
    """Apply a CSV the CRM exported, under its column names, through the field map: each row
    as that record's update (the same as POST /api/v1/crm/events), whole or not at all.
    Importing the same file again changes nothing. Exits 1 when a row was refused."""
    from dataclasses import asdict

    from engine.crm.fieldmap import current_map
    from engine.flows.crm_exchange import import_records

    crm_map = current_map(app.settings)
    with Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(),
                  console=err_console, transient=True, disable=as_json) as bar:
        task = bar.add_task("import", total=None)
        summary = import_records(
            db=app.db, crm_map=crm_map, path=file, obj=obj, now=utcnow(), id_column=id_column,
            updated_column=updated_column, encoding=encoding,
            progress=lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        echo_json({**asdict(summary), "rows": summary.rows})
    else:
        console.print(f"{summary.rows} row(s): {summary.applied} applied, {summary.repeat} "
                      f"already imported, {summary.refused} refused; {summary.conflicts} "
                      f"conflict(s) settled by the map")
        for duplicate in summary.duplicates:
            console.print(f"duplicate: row {duplicate['row']}: {duplicate['email']} is "
                          f"{' and '.join(duplicate['records'])} in the CRM; kept "
                          f"{duplicate['kept']} ({duplicate['rule']})", style="yellow")
        for error in summary.errors:
            err_console.print(f"refused: {error}", style="red")
    if summary.refused:
        raise SystemExit(1)


# -- what the CRM sent -------------------------------------------------------------------------

@crm.command("inbound")
@click.option("--outcome", type=click.Choice(["applied", "refused"]), default=None)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@_JSON
@pass_app
def inbound_command(app: AppContext, outcome: str | None, limit: int, as_json: bool) -> None:
    """Events the CRM sent (POST /api/v1/crm/events, `crm import`), newest first: what each
    changed, the conflicts the map settled, or why it was refused."""
    from engine.crm.service import inbound_log

    with app.db.reading() as session:
        events = inbound_log(session=session, outcome=outcome, limit=limit)
    if as_json:
        echo_json(events)
        return
    if not events:
        console.print("no event from the CRM")
    for event in events:
        style = "red" if event["outcome"] == "refused" else None
        console.print(f"{event['received_at']}  {event['type']:<20} {event['outcome']:<8} "
                      f"{event['event_id']}", style=style)
        for line in event.get("changes", []):
            console.print(f"    {line}")
        for c in event.get("conflicts", []):
            console.print(f"    conflict {c['object']}.{c['field']}: ours {c['local']!r}, "
                          f"the CRM's {c['crm']!r}: kept {c['kept']} ({c['rule']})")
        if event.get("error"):
            console.print(f"    {event['error']}", style="red")


@crm.command("duplicates")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@_JSON
@pass_app
def duplicates_command(app: AppContext, limit: int, as_json: bool) -> None:
    """Emails the CRM holds two records for (one lead each here): which record was kept
    (the one updated most recently) and when it was found. Merge them in the CRM."""
    from engine.crm.service import inbound_log

    with app.db.reading() as session:
        events = inbound_log(session=session, duplicates=True, limit=limit)
    found = [{**d, "event_id": e["event_id"], "received_at": e["received_at"]}
             for e in events for d in e["duplicates"]]
    if as_json:
        echo_json(found)
        return
    if not found:
        console.print("no duplicate found")
    for d in found:
        console.print(f"{d['email']}: CRM records {' and '.join(d['records'])}; kept "
                      f"{d['kept']} ({d['rule']}), {d['received_at']}")
