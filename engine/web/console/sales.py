"""Sales: the MQL queue by score with each lead's timeline, accept and reject (sales and
admin), and SLA breaches by owner."""

from __future__ import annotations

from flask import flash, redirect, url_for

from engine.auth.service import Permission
from engine.errors import NurtureError
from engine.leads.models import Lead
from engine.sales.queue import mql_queue, queue_entry
from engine.sales.service import MAX_REASON, accept, reject
from engine.sales.sla import sla_report
from engine.web.console.base import console, db, field, now, page, render, signed_in_user
from engine.web.console.leads import lead_or_404

QUEUE_LIMIT = 100


def _sales_page(status: int = 200, **extra):
    with db().session() as s:
        at = now()
        queue = [queue_entry(s, entry) for entry in mql_queue(session=s, now=at,
                                                              limit=QUEUE_LIMIT)]
        breaches = {owner: [{"kind": b.kind, "since": b.since, "due_at": b.due_at,
                             "action": b.action, "lead_id": b.lead_id,
                             "email": s.get(Lead, b.lead_id).email}
                            for b in rows]
                    for owner, rows in sla_report(session=s).items()}
    return render("console/sales.html", status=status, queue=queue, breaches=breaches,
                  max_reason=MAX_REASON, **extra)


@console.get("/sales")
@page()
def sales():
    return _sales_page()


@console.post("/sales/<int:lead_id>/accept")
@page(Permission.SALES_ANSWER)
def accept_mql(lead_id: int):
    user = signed_in_user()
    try:
        with db().session() as s:
            lead = lead_or_404(s, lead_id)
            accept(session=s, lead=lead, actor=f"user:{user.email}", owner=user.email,
                   now=now())
            done = f"Accepted {lead.email}: it is yours."
    except NurtureError as exc:
        return _sales_page(status=exc.status, error=exc.detail, error_lead=lead_id)
    flash(done)
    return redirect(url_for("console.sales"), 303)


@console.post("/sales/<int:lead_id>/reject")
@page(Permission.SALES_ANSWER)
def reject_mql(lead_id: int):
    reason = field("reason", MAX_REASON)
    user = signed_in_user()
    try:
        with db().session() as s:
            lead = lead_or_404(s, lead_id)
            reject(session=s, lead=lead, reason=reason, actor=f"user:{user.email}", now=now())
            done = f"Rejected {lead.email}: it goes back to nurture."
    except NurtureError as exc:
        return _sales_page(status=exc.status, error=exc.detail, error_lead=lead_id,
                           reason=reason)
    flash(done)
    return redirect(url_for("console.sales"), 303)
