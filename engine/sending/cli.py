"""`nurture sink` (a local SMTP server that stores everything) and `nurture inbox` (read it)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

import click
from rich.table import Table

from engine.cli_context import (
    AppContext,
    console,
    echo,
    echo_json,
    err_console,
    pass_app,
    serve_until_stopped,
)


def _sink_dir(app: AppContext, directory: str | None) -> Path:
    if directory:
        return Path(directory).resolve()
    return app.settings.sink_dir or app.settings.instance_path / "sink"


@click.command()
@click.option("--host", default=None, help="Address to listen on [default: 127.0.0.1, or "
                                           "NURTURE_SINK_HOST].")
@click.option("--port", type=int, default=None,
              help="Port to listen on [default: 8025, or NURTURE_SINK_PORT].")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where messages are stored [default: instance/sink/, or NURTURE_SINK_DIR].")
@click.option("--reply", "replies", multiple=True, metavar="PATTERN=REPLY",
              help="Answer REPLY at RCPT for matching recipients instead of accepting them, "
                   "e.g. 'bounce@=550 5.1.1 No such user', 'later@example.com=451 4.3.0 Try "
                   "later', '@slow.example=421 4.7.28 Slow down'. Repeatable.")
@pass_app
def sink(app: AppContext, host: str | None, port: int | None, directory: str | None,
         replies: tuple[str, ...]) -> None:
    """Run a local SMTP server that accepts every message and stores it (until Ctrl-C).

    When SMTP_URL is unset, the engine sends here. Read what arrived with `nurture inbox`.
    A message is synced to disk before it is answered 250; one that cannot be stored (disk
    full: 452 4.3.1, any other error: 451 4.3.0) is refused for now, and the sender retries.
    """
    from engine.sending.sink import Sink, parse_reply_rule

    try:
        rules = dict(parse_reply_rule(rule) for rule in replies)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--reply") from exc
    sink_dir = _sink_dir(app, directory)
    try:
        server = Sink(sink_dir, host or app.settings.sink_host, port or app.settings.sink_port,
                      replies=rules)
    except OSError as exc:
        raise click.ClickException(f"cannot store messages in {sink_dir}: "
                                   f"{exc.strerror or exc}") from exc
    try:
        server.start()
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {server.host}:{server.port}: "
                                   f"{exc.strerror or exc}") from exc
    console.print(f"nurture sink listening on {server.url}, storing in {server.directory}")
    for pattern, reply in rules.items():
        console.print(f"  {pattern} -> {reply}")
    console.print("Ctrl-C to stop")
    serve_until_stopped(server)
    handler = server.handler
    deferred = (f", {handler.deferred} answered 4xx (not stored, the sender retries)"
                if handler.deferred else "")
    err_console.print(f"stopped; {handler.received} message(s) received{deferred}")


@click.group(invoke_without_command=True)
@click.option("--to", "to", default=None, metavar="ADDRESS",
              help="Only messages for this envelope recipient.")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True,
              help="Show the newest N messages.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of index entries.")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="The sink's directory [default: instance/sink/, or NURTURE_SINK_DIR].")
@click.pass_context
def inbox(ctx: click.Context, to: str | None, limit: int, as_json: bool,
          directory: str | None) -> None:
    """Messages received by the local sink (`nurture sink`), newest last.

    \b
    nurture inbox [--to ADDRESS] [--limit N] [--json]   list: number, time, recipient, subject
    nurture inbox show N|MESSAGE-ID [--raw]             one message: headers and text part
    """
    directory_path = ctx.meta["nurture.sink_dir"] = _sink_dir(
        ctx.ensure_object(AppContext), directory)
    if ctx.invoked_subcommand is not None:
        return
    from engine.sending.inbox import list_messages

    messages = list_messages(directory_path, to=to, limit=limit)
    if as_json:
        echo_json([json.loads(m.to_json()) for m in messages], ensure_ascii=False)
        return
    if not messages:
        err_console.print(f"no messages in {directory_path}")
        return
    for m in messages:
        received = m.received_at[:19].replace("T", " ")
        console.print(f"{m.seq:>5}  {received}  {', '.join(m.rcpt_tos)}  {m.subject}")


@inbox.command("show")
@click.argument("key", metavar="N|MESSAGE-ID")
@click.option("--raw", is_flag=True, help="Print the stored file as it is.")
@click.pass_context
def inbox_show(ctx: click.Context, key: str, raw: bool) -> None:
    """One stored message by its number in `nurture inbox` or its Message-ID."""
    from engine.sending.inbox import find_message, read_bytes, read_message, text_part

    directory = ctx.meta["nurture.sink_dir"]
    stored = find_message(directory, key)
    if raw:
        echo(read_bytes(directory, stored).decode("utf-8", "replace"), nl=False)
        return
    message = read_message(directory, stored)
    for name, value in message.items():
        echo(f"{name}: {' '.join(str(value).split())}")
    echo("")
    echo(text_part(message))


@click.command("send-runs")
@click.option("--hours", default=24, show_default=True, type=click.IntRange(1, 24 * 366),
              help="How far back to look.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@pass_app
def send_runs(app: AppContext, hours: int, as_json: bool) -> None:
    """The send runs of the last HOURS hours, by the hour they were due: due, sent, held,
    failed and skipped, with the reasons; `unknown`: sends the server may have had twice (a
    connection dropped after DATA, or a worker lost mid-send), `duplicates`: sent twice."""
    from engine.db import utcnow
    from engine.sending.reports import send_runs as runs_of

    now = utcnow()
    with app.db.session() as session:
        runs = runs_of(session=session, since=now - timedelta(hours=hours), until=now)
    if as_json:
        echo_json([{"hour": r.hour.isoformat(), **r.counts,
                    "reasons": dict(r.reasons)} for r in runs])
        return
    if not runs:
        console.print(f"no sends were due in the last {hours} hour(s)")
        return
    columns = ("due", "sent", "held", "failed", "skipped", "pending")
    table = Table("hour (UTC)", *columns, title=f"Send runs, last {hours} hour(s)")
    for run in runs:
        table.add_row(run.hour.strftime("%Y-%m-%d %H:00"), *(str(run.counts[k]) for k in columns))
    console.print(table)
    unknown = sum(run.counts["unknown"] for run in runs)
    duplicates = sum(run.counts["duplicates"] for run in runs)
    if unknown or duplicates:
        console.print(f"{unknown} send(s) the server may have had twice (a connection dropped "
                      f"after DATA, or a worker lost mid-send); {duplicates} known duplicate(s)")
    reasons = Counter()
    for run in runs:
        reasons.update(run.reasons)
    for reason, count in reasons.most_common(10):
        console.print(f"  {count:>6}  {reason}")


@click.command()
@click.option("--hours", default=24, show_default=True, type=click.IntRange(1, 24 * 31),
              help="How far ahead to look.")
@click.option("--json", "as_json", is_flag=True, help="Print the forecast as JSON.")
@pass_app
def forecast(app: AppContext, hours: int, as_json: bool) -> None:
    """What would be sent in the next HOURS hours, by hour and email, without sending."""
    from engine.db import utcnow
    from engine.sending.reports import forecast as forecast_of

    with app.db.session() as session:
        lines = forecast_of(session=session, now=utcnow(), hours=hours)
    if as_json:
        echo_json([{"hour": line.hour.isoformat(), "email": line.email,
                    "sends": line.sends, "suppressed": line.suppressed}
                   for line in lines])
        return
    if not lines:
        console.print(f"nothing is due in the next {hours} hour(s)")
        return
    table = Table("hour (UTC)", "email", "sends", "suppressed", title=f"Next {hours} hour(s)")
    for line in lines:
        table.add_row(line.hour.strftime("%Y-%m-%d %H:00"), line.email, str(line.sends),
                      str(line.suppressed))
    console.print(table)
    total = sum(line.sends - line.suppressed for line in lines)
    console.print(f"{total} email(s) would go out (sends are still checked at send time: "
                  "window, frequency cap, consent)")
