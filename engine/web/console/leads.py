"""Leads: search and one lead's page, with its stage set through the lead pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from flask import abort, flash, redirect, request, url_for
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.auth.service import Permission
from engine.crm.records import crm_view
from engine.errors import Invalid, NurtureError
from engine.flows.leads import change_stage
from engine.leads.explain import explain
from engine.leads.models import STANDARD_FIELDS, Lead
from engine.leads.service import event_log, list_leads, stage_history
from engine.leads.stages import STAGES, TRANSITIONS
from engine.sales.queue import timeline_entries
from engine.web.console.base import console, db, field, now, page, render, signed_in_user

PAGE_SIZE = 25
MAX_PAGE = 10_000
MAX_QUERY = 200
MAX_REASON = 1000
EVENTS_SHOWN = 200  # the latest ones
MAX_ID = 2**31 - 1  # an id past PostgreSQL's integer is no lead (and no database error)


@dataclass(frozen=True)
class Search:
    text: str
    stage: str
    persona: str
    page: int


def _search() -> tuple[Search, str | None]:
    args = request.args
    text = args.get("q", "").strip()
    stage = args.get("stage", "").strip()
    persona = args.get("persona", "").strip()
    error = None
    if len(text) > MAX_QUERY or len(persona) > 100:
        error = f"A search is at most {MAX_QUERY} characters."
        text, persona = text[:MAX_QUERY], persona[:100]
    if stage and stage not in STAGES:
        error, stage = f"There is no stage {stage[:40]!r}.", ""
    number = args.get("page", "1")
    page_number = int(number) if number.isdigit() and 0 < int(number) <= MAX_PAGE else 1
    return Search(text, stage, persona, page_number), error


def _personas(session: Session) -> list[str]:
    followed = func.coalesce(Lead.enrolled_persona, Lead.persona)
    return list(session.scalars(select(followed).where(followed.is_not(None)).distinct()
                                .order_by(followed)))


@console.get("/leads")
@page()
def leads():
    search, error = _search()
    with db().session() as s:
        found, total = ([], 0) if error else list_leads(
            session=s, text=search.text or None, stage=search.stage or None,
            persona=search.persona or None, limit=PAGE_SIZE,
            offset=(search.page - 1) * PAGE_SIZE)
        rows = [{"id": lead.id, "email": lead.email, "name": _name(lead),
                 "company": lead.company, "stage": lead.stage,
                 "persona": lead.enrolled_persona or lead.persona} for lead in found]
        personas = _personas(s)
    pages = max(1, -(-total // PAGE_SIZE))
    return render("console/leads.html", status=422 if error else 200, search=search,
                  rows=rows, total=total, pages=pages, stages=STAGES, personas=personas,
                  error=error)


def _name(lead: Lead) -> str:
    return " ".join(part for part in (lead.first_name, lead.last_name) if part)


def lead_or_404(session: Session, lead_id: int) -> Lead:
    lead = session.get(Lead, lead_id) if lead_id <= MAX_ID else None
    if lead is None:
        abort(404)
    return lead


def _lead_page(lead_id: int, status: int = 200, **extra):
    with db().session() as s:
        lead = lead_or_404(s, lead_id)
        context = {
            "lead": lead,
            "name": _name(lead),
            "fields": [(name, getattr(lead, name)) for name in STANDARD_FIELDS],
            "custom": sorted((lead.custom or {}).items()),
            "crm": crm_view(s, lead),
            "history": stage_history(session=s, lead_id=lead.id),
            "events": event_log(session=s, lead_id=lead.id, limit=EVENTS_SHOWN, latest=True),
            "timeline": timeline_entries(s, lead.id),
            "explained": explain(session=s, lead=lead, now=now()),
            "stages": [stage for stage in STAGES if stage != lead.stage],
            "allowed": sorted(TRANSITIONS[lead.stage]),
            "events_shown": EVENTS_SHOWN,
        }
        body = render("console/lead.html", status=status, **context, **extra)
    return body


@console.get("/leads/<int:lead_id>")
@page()
def lead(lead_id: int):
    return _lead_page(lead_id)


@console.post("/leads/<int:lead_id>/stage")
@page(Permission.LEADS_STAGE)
def set_lead_stage(lead_id: int):
    stage, reason = field("stage", 40), field("reason", MAX_REASON)
    user = signed_in_user()
    try:
        with db().session() as s:
            lead = lead_or_404(s, lead_id)
            if not reason.strip():
                raise Invalid("a reason is required for a stage change", field="reason")
            change = change_stage(session=s, lead=lead, stage=stage, reason=reason,
                                  actor=f"user:{user.email}", now=now())
            moved = f"Moved from {change.from_stage} to {change.to_stage}."
    except NurtureError as exc:  # nothing was stored: the transaction rolled back
        return _lead_page(lead_id, status=exc.status, stage_error=exc.detail,
                          form={"stage": stage, "reason": reason})
    flash(moved)
    return redirect(url_for("console.lead", lead_id=lead_id) + "#history", 303)
