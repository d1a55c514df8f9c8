"""`nurture sales queue|one-field-short|accept|reject|notifications` and `nurture sla check|report`."""

from __future__ import annotations

import click
from rich.table import Table

from engine.cli_context import AppContext, console, echo_json, parse_at, pass_app, styled
from engine.db import utcnow
from engine.leads.service import get_lead

_AT = click.option("--at", "at", help="As of this ISO time (default: now).")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


@click.group()
def sales() -> None:
    """What sales sees: MQLs by score with their timeline, leads one field short; accept or
    reject an MQL."""


@sales.command()
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@_AT
@_JSON
@pass_app
def queue(app: AppContext, limit: int, at: str | None, as_json: bool) -> None:
    """MQLs waiting for sales, highest score first, with what each opened, clicked and
    visited, in order."""
    from engine.sales.queue import mql_queue, queue_entry

    now = parse_at(at)
    with app.db.session() as session:
        entries = [queue_entry(session, entry) for entry in
                   mql_queue(session=session, now=now, limit=limit)]
    if as_json:
        echo_json(entries)
        return
    if not entries:
        console.print("no MQL is waiting for sales")
    for entry in entries:
        console.print(styled((entry["email"], "bold"), f"  score {entry['score']:g}, "
                                    f"MQL since {entry['mql_at'][:16]}: {entry['reason'] or ''}"))
        for event in entry["timeline"]:
            console.print(f"    {event['at'][:16]}  {event['kind']:<9} {event['what']}")


@sales.command("one-field-short")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@_AT
@_JSON
@pass_app
def one_field_short(app: AppContext, limit: int, at: str | None, as_json: bool) -> None:
    """Leads one field short of qualifying (e.g. score high but no company size), naming it."""
    from engine.sales.queue import one_field_short_leads

    with app.db.session() as session:
        rows = [{"id": n.lead.id, "email": n.lead.email, "score": round(n.score, 1),
                 "missing": n.fields}
                for n in one_field_short_leads(session=session, now=parse_at(at), limit=limit)]
    if as_json:
        echo_json(rows)
        return
    table = Table("lead", "score", "fill in to qualify")
    for row in rows:
        table.add_row(row["email"], f"{row['score']:g}", ", ".join(row["missing"]))
    console.print(table if rows else "no lead is one field short of qualifying")


@sales.command()
@click.argument("email")
@click.option("--by", "actor", required=True, help="Who accepts (becomes the owner).")
@click.option("--owner", help="Give the lead to someone else than the acceptor.")
@pass_app
def accept(app: AppContext, email: str, actor: str, owner: str | None) -> None:
    """Accept an MQL (mql -> sal)."""
    from engine.sales.service import accept as accept_lead

    with app.db.session() as session:
        lead = get_lead(session=session, email=email)
        accept_lead(session=session, lead=lead, actor=actor, owner=owner, now=utcnow())
        console.print(f"{lead.email}: accepted, stage sal, owner {lead.owner}")


@sales.command()
@click.argument("email")
@click.option("--by", "actor", required=True, help="Who rejects.")
@click.option("--reason", required=True, help="Why (kept in the stage history, sent to the CRM).")
@pass_app
def reject(app: AppContext, email: str, actor: str, reason: str) -> None:
    """Reject an MQL: back to nurture as recycled, behaviour points reset."""
    from engine.sales.service import reject as reject_lead

    with app.db.session() as session:
        lead = get_lead(session=session, email=email)
        reject_lead(session=session, lead=lead, reason=reason, actor=actor, now=utcnow())
        console.print(f"{lead.email}: rejected, stage recycled, back in nurture")


@sales.command()
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@_JSON
@pass_app
def notifications(app: AppContext, limit: int, as_json: bool) -> None:
    """The latest sales notifications (MQLs, trigger routes, SLA escalations), newest first,
    each with its email: sent to whom and when, waiting for a retry (why), failed or not sent
    (why). The worker emails them to the owner, or NURTURE_SALES_EMAIL for a lead nobody owns."""
    from sqlalchemy import select

    from engine.leads.models import Lead
    from engine.sales.models import SalesNotification

    with app.db.session() as session:
        rows = [{"at": n.at.isoformat(), "kind": n.kind, "email": email, "owner": n.owner,
                 "reason": n.reason, "status": n.status, "recipient": n.recipient,
                 "sent_at": n.sent_at.isoformat() if n.sent_at else None,
                 "attempts": n.attempts,
                 "retry_at": n.retry_at.isoformat() if n.retry_at else None,
                 "error": n.last_error}
                for n, email in session.execute(
                    select(SalesNotification, Lead.email)
                    .join(Lead, Lead.id == SalesNotification.lead_id)
                    .order_by(SalesNotification.at.desc(), SalesNotification.id.desc())
                    .limit(limit))]
    if as_json:
        echo_json(rows)
        return
    for row in rows:  # lines, not a table: addresses and reasons stay whole in any width
        console.print(f"{row['at'][:16]}  {row['kind']:<10} {row['email']}  owner "
                      f"{row['owner'] or '-'}: {row['reason']}")
        console.print(f"  {_delivery(row)}")
    if not rows:
        console.print("no sales notification yet")


def _delivery(row: dict) -> str:
    """Where a notification's email stands, in words."""
    status, error = row["status"], row["error"]
    if status == "sent":
        return f"emailed to {row['recipient']} at {row['sent_at'][:16]}"
    if status == "failed":
        return f"not emailed to {row['recipient']}: {error}"
    if status == "skipped":
        return f"not emailed: {error}"
    if status == "sending":
        return f"being emailed (attempt {row['attempts']})"
    if error:
        return (f"waiting to be emailed: attempt {row['attempts']} to {row['recipient']} "
                f"failed ({error}), next try {row['retry_at'][:16]}")
    return "waiting to be emailed (by `nurture worker`)"


@click.group()
def sla() -> None:
    """Service levels: MQLs answered within 14 days, opportunities updated within 14 days."""


@sla.command()
@click.option("--at", "at", help="Check as of this ISO time (default: now). A time in the "
                                 "future only previews, unless --record is given.")
@click.option("--record", is_flag=True,
              help="Store what a check at a future --at finds (a time now or past always "
                   "stores).")
@pass_app
def check(app: AppContext, at: str | None, record: bool) -> None:
    """Record new breaches (escalating MQLs, enrolling stalled opportunities in the
    configured track) and resolve those whose lead moved on. Safe to run again.

    With --at in the future it is a preview: it prints what a check then would find and
    stores nothing (no breach, escalation or enrollment), unless --record is given."""
    from engine.sales.sla import check_slas

    now = utcnow()
    when = parse_at(at) if at else now
    preview = when > now and not record
    with app.db.sessionmaker() as session:  # closing it uncommitted rolls back
        result = check_slas(session=session, now=when)
        lines = _breach_lines(session, result.new)
        if not preview:
            session.commit()
    if preview:
        console.print(f"SLA check preview at {when.isoformat()} (a future time: nothing "
                      f"stored; --record to store it): {result}")
    else:
        console.print(f"SLA check: {result}")
    for line in lines:
        console.print(line)


def _breach_lines(session, breaches) -> list[str]:
    from sqlalchemy import select

    from engine.leads.models import Lead

    emails = dict(session.execute(select(Lead.id, Lead.email).where(
        Lead.id.in_([b.lead_id for b in breaches]))).all())
    return [f"  {emails[b.lead_id]}  {b.kind}  due {b.due_at:%Y-%m-%d %H:%M} UTC  {b.action}"
            for b in breaches]


@sla.command()
@click.option("--all", "include_resolved", is_flag=True, help="Include resolved breaches.")
@_JSON
@pass_app
def report(app: AppContext, include_resolved: bool, as_json: bool) -> None:
    """Breaches by owner, oldest first."""
    from sqlalchemy import select

    from engine.leads.models import Lead
    from engine.sales.sla import sla_report

    with app.db.session() as session:
        grouped = sla_report(session=session, include_resolved=include_resolved)
        emails = dict(session.execute(select(Lead.id, Lead.email).where(Lead.id.in_(
            [b.lead_id for breaches in grouped.values() for b in breaches]))).all())
        data = {owner: [{"lead": emails[b.lead_id], "kind": b.kind,
                         "since": b.since.isoformat(), "due_at": b.due_at.isoformat(),
                         "detected_at": b.detected_at.isoformat(), "action": b.action,
                         "resolved_at": b.resolved_at.isoformat() if b.resolved_at else None}
                        for b in breaches]
                for owner, breaches in grouped.items()}
    if as_json:
        echo_json(data)
        return
    if not data:
        console.print("no SLA breach")
    for owner, breaches in data.items():
        console.print(styled((owner, "bold"), f": {len(breaches)}"))
        for b in breaches:
            state = f"resolved {b['resolved_at'][:10]}" if b["resolved_at"] else "open"
            console.print(f"  {b['lead']}  {b['kind']}  due {b['due_at'][:10]}  {state}  "
                          f"{b['action']}")
