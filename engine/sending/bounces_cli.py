"""`nurture bounces scan` (record the DSNs and complaints the local sink received) and
`nurture bounces record` (enter one by hand)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.table import Table

from engine.cli_context import AppContext, console, echo_json, pass_app
from engine.db import utcnow
from engine.errors import Invalid
from engine.programs.spec import parse_duration

RESULTS = ("suppressed", "soft", "ignored", "unidentified", "unreadable")


@click.group()
def bounces() -> None:
    """Bounces and complaints: hard bounces and complaints suppress the address."""


@bounces.command("scan")
@click.option("--since", default=None, metavar="WHEN",
              help="Only messages received since WHEN: an ISO 8601 date or date-time (UTC "
                   "when naive), or a duration back from now such as 24h or 7d.")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="The sink's directory [default: instance/sink/, or NURTURE_SINK_DIR].")
@click.option("--json", "as_json", is_flag=True, help="Print the counts and reports as JSON.")
@pass_app
def scan(app: AppContext, since: str | None, directory: str | None, as_json: bool) -> None:
    """Find delivery reports (DSNs) and abuse complaints (ARF) among the messages the local sink
    stored, and record them. Running it again records nothing twice."""
    from engine.sending.bounces import scan_sink

    now = utcnow()
    sink_dir = _sink_dir(app, directory)
    with app.db.session() as session:
        scanned, lines = scan_sink(session=session, directory=sink_dir, now=now,
                                   since=parse_since(since, now))
    counts = Counter({result: 0 for result in RESULTS}) + Counter(line.result for line in lines)
    counts = {result: counts[result] for result in RESULTS}
    if as_json:
        echo_json({"scanned": scanned, **counts,
                   "reports": [asdict(line) for line in lines]})
        return
    _print_scan(scanned, counts, lines, sink_dir)


def _sink_dir(app: AppContext, directory: str | None) -> Path:
    if directory:
        return Path(directory).resolve()
    return app.settings.sink_dir or app.settings.instance_path / "sink"


def parse_since(text: str | None, now: datetime) -> datetime | None:
    """An ISO 8601 date or date-time (naive is UTC), or a duration back from `now`."""
    if not text:
        return None
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise Invalid(f"not an ISO 8601 date, date-time or duration: {text[:100]!r}",
                      field="since") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _print_scan(scanned: int, counts: dict[str, int], lines, sink_dir: Path) -> None:
    acted = [line for line in lines if line.result in ("suppressed", "soft")]
    if acted:
        table = Table("#", "address", "type", "result", "reason", title="Recorded")
        for line in acted:
            table.add_row(str(line.seq), line.email or "", line.kind or "", line.result,
                          line.reason)
        console.print(table)
    for line in lines:
        if line.result in ("unidentified", "unreadable"):
            console.print(f"  {line.result}: message {line.seq} ({line.file}): {line.reason}")
    summary = ", ".join(f"{counts[r]} {r}" for r in RESULTS)
    console.print(f"{scanned} message(s) scanned in {sink_dir}: {summary}")


@bounces.command("record")
@click.argument("email")
@click.option("--type", "kind", required=True, type=click.Choice(["hard", "soft", "complaint"]),
              help="hard and complaint suppress the address; soft is only logged.")
@click.option("--reason", required=True, help="Why, e.g. the bounce's status and text.")
@click.option("--message-id", default=None, help="The Message-ID of the email that bounced.")
@pass_app
def record(app: AppContext, email: str, kind: str, reason: str, message_id: str | None) -> None:
    """Record a bounce or complaint for EMAIL by hand."""
    from engine.sending.bounces import apply_bounce

    with app.db.session() as session:
        outcome = apply_bounce(session=session, email=email, kind=kind, source="cli",
                               now=utcnow(), message_id=message_id, reason=reason)
    messages = {
        "suppressed": f"{outcome.email}: suppressed ({kind})",
        "soft": f"{outcome.email}: soft bounce recorded on the lead's log",
        "ignored": (f"{outcome.email}: no lead has this address; a soft bounce is not recorded"
                    if kind == "soft" and outcome.lead_id is None
                    else f"{outcome.email}: already recorded, nothing changed"),
    }
    console.print(messages[outcome.result])
