"""`nurture tracking drain|show`."""

from __future__ import annotations

import click

from engine.cli_context import AppContext, console, echo_json, pass_app


@click.group()
def tracking() -> None:
    """Opens, clicks and page visits recorded by the public endpoints."""


@tracking.command()
@pass_app
def drain(app: AppContext) -> None:
    """Store the events waiting in the buffer now (the scheduler queues this as a job)."""
    from engine.config import redis_connection
    from engine.flows.tracking import drain_buffer
    from engine.tracking.buffer import EventBuffer

    buffer = EventBuffer(redis_connection(app.settings))
    stored = drain_buffer(db=app.db, buffer=buffer)
    console.print(f"stored {stored} buffered events; {buffer.pending()} waiting")


@tracking.command()
@click.argument("email")
@click.option("--bots", is_flag=True, help="Include bot, scanner and proxy hits (flagged).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
@pass_app
def show(app: AppContext, email: str, bots: bool, as_json: bool) -> None:
    """A lead's tracked events in order, with user agent, and why a hit was filtered."""
    from engine.leads.service import get_lead
    from engine.sales.queue import shown_url
    from engine.tracking.service import timeline

    with app.db.session() as session:
        lead = get_lead(session=session, email=email)
        rows = [{"at": e.at.isoformat(), "kind": e.kind, "url": shown_url(e.url) or None,
                 "link": e.link_index,
                 "bot": e.bot_reason, "user_agent": e.user_agent}
                for e in timeline(session=session, lead_id=lead.id, include_bots=bots)]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        flag = f"  [filtered: {row['bot']}]" if row["bot"] else ""
        console.print(f"{row['at'][:19]}  {row['kind']:<9} {row['url'] or ''}{flag}")
    if not rows:
        console.print("no tracked event")
