"""Hand qualified leads to sales, and take sales' answer back.

hand_to_sales moves a nurture lead to mql, records a sales notification and a CRM outbox item
in the same transaction. accept (mql -> sal) and reject (mql -> recycled, re-entering nurture
with its behaviour points reset) are sales' answers; both tell the CRM too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qsl, urlencode, urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.errors import IllegalTransition, Invalid, NotFound
from engine.journeys.service import enroll
from engine.leads.models import Lead, LeadEvent, StageChange
from engine.leads.service import set_stage
from engine.programs.spec import Program
from engine.programs.store import running_program
from engine.sales.models import CrmOutboxItem, SalesNotification
from engine.scoring.rules import one_field_short
from engine.scoring.service import (
    NURTURE_STAGES,
    current_score,
    reset_behaviour,
    scoring_program,
)
from engine.sending.models import OutboxMessage
from engine.tracking.service import timeline

MAX_REASON = 1000
MAX_NAME = 200  # the owner and actor columns
SALES_STAGES = frozenset({"mql", "sal", "opportunity"})


def hand_to_sales(*, session: Session, lead: Lead, program: Program, kind: str, reason: str,
                  now: datetime) -> SalesNotification | None:
    """Make a nurture lead an MQL and tell sales and the CRM. A lead already with sales is
    not moved; a trigger (a hand-raise such as a demo request) still notifies its owner.
    None when nothing was recorded."""
    if lead.stage not in NURTURE_STAGES:
        if kind != "trigger" or lead.stage not in SALES_STAGES:
            return None
        notification = SalesNotification(lead_id=lead.id, at=now, kind=kind, reason=reason,
                                         owner=lead.owner)
        session.add(notification)
        return notification
    set_stage(session=session, lead=lead, stage="mql", reason=reason, actor="scoring", now=now)
    score = current_score(lead, program, now)
    notification = SalesNotification(lead_id=lead.id, at=now, kind=kind, reason=reason,
                                     owner=lead.owner)
    session.add(notification)
    _tell_crm(session, lead, "mql", now, reason=reason, score=round(score, 1))
    return notification


def enroll_elsewhere(*, session: Session, lead: Lead, program_name: str, now: datetime,
                     reason: str) -> None:
    """Enroll in another program; one not loaded is noted on the lead's log, not raised (the
    response that fired the trigger is still recorded and scored)."""
    try:
        record, program = running_program(session=session, name=program_name)
    except NotFound:
        session.add(LeadEvent(lead_id=lead.id, at=now, category="action", kind="trigger_failed",
                              detail={"reason": f"{reason}: program {program_name} is not loaded"},
                              actor="scoring"))
        return
    enroll(session=session, lead=lead, program_id=record.id, program=program, now=now,
           actor=reason[:200])


def accept(*, session: Session, lead: Lead, actor: str, now: datetime,
           owner: str | None = None) -> StageChange:
    """Sales accepts an MQL (mql -> sal); the acceptor owns it unless `owner` names another."""
    actor = _name(actor, "by")
    owner = _name(owner, "owner") if owner and owner.strip() else actor
    _require_mql(lead, "accept")
    lead.owner = owner
    change = set_stage(session=session, lead=lead, stage="sal", reason="accepted by sales",
                       actor=actor, now=now)
    _tell_crm(session, lead, "sal", now, owner=lead.owner)
    return change


def reject(*, session: Session, lead: Lead, reason: str, actor: str, now: datetime) -> StageChange:
    """Sales rejects an MQL: back to nurture as recycled, its behaviour points reset."""
    actor = _name(actor, "by")
    reason = (reason or "").strip()
    if not reason:
        raise Invalid("a reason is required to reject a lead", field="reason")
    if len(reason) > MAX_REASON:
        raise Invalid(f"reason is longer than {MAX_REASON} characters", field="reason")
    _require_mql(lead, "reject")
    change = set_stage(session=session, lead=lead, stage="recycled",
                       reason=f"rejected by sales: {reason}", actor=actor, now=now)
    reset_behaviour(session=session, lead=lead, now=now, reason="rejected by sales")
    _tell_crm(session, lead, "rejected", now, reason=reason)
    return change


def _name(value: str | None, field: str) -> str:
    """Who acts or owns: a name or address of 1 to MAX_NAME characters."""
    name = (value or "").strip()
    if not name or len(name) > MAX_NAME:
        raise Invalid(f"{field} must be a name or address of 1 to {MAX_NAME} characters",
                      field=field)
    return name


def _require_mql(lead: Lead, verb: str) -> None:
    if lead.stage != "mql":
        raise IllegalTransition(f"only an MQL can be {verb}ed; {lead.email} is {lead.stage}",
                                field="stage")


def _tell_crm(session: Session, lead: Lead, kind: str, now: datetime, **payload) -> None:
    session.add(CrmOutboxItem(lead_id=lead.id, kind=kind, created_at=now,
                              payload={"email": lead.email, "stage": lead.stage, **payload}))


# -- what sales sees ------------------------------------------------------------------------

@dataclass(frozen=True)
class QueueEntry:
    lead: Lead
    score: float
    mql_at: datetime | None
    reason: str | None


def mql_queue(*, session: Session, now: datetime, limit: int = 100) -> list[QueueEntry]:
    """MQLs waiting for sales' answer, highest score first."""
    mql_since = (select(StageChange.lead_id, func.max(StageChange.id).label("change_id"))
                 .where(StageChange.to_stage == "mql").group_by(StageChange.lead_id).subquery())
    rows = session.execute(
        select(Lead, StageChange).join(mql_since, mql_since.c.lead_id == Lead.id)
        .join(StageChange, StageChange.id == mql_since.c.change_id)
        .where(Lead.stage == "mql"))
    entries = []
    for lead, change in rows:
        found = scoring_program(session=session, lead_id=lead.id)
        entries.append(QueueEntry(lead=lead, score=current_score(lead, found[1] if found else None,
                                                                 now),
                                  mql_at=change.at, reason=change.reason))
    entries.sort(key=lambda e: (-e.score, e.lead.id))
    return entries[:limit]


@dataclass(frozen=True)
class NearMiss:
    lead: Lead
    score: float
    fields: list[str]  # each of which, filled in alone, could qualify the lead


def one_field_short_leads(*, session: Session, now: datetime, limit: int = 100) -> list[NearMiss]:
    """Nurture leads one field short of qualifying (e.g. a high score, no company size), with
    the field (or the fields, any one of which would do), highest score first."""
    found: list[NearMiss] = []
    query = (select(Lead).where(Lead.stage.in_(NURTURE_STAGES))
             .where((Lead.behaviour_score > 0) | (Lead.fit_score > 0))
             .execution_options(yield_per=500))
    for lead in session.scalars(query):
        program = scoring_program(session=session, lead_id=lead.id)
        if program is None:
            continue
        score = current_score(lead, program[1], now)
        fields = one_field_short(program[1].scoring, score, lead.fields())
        if fields:
            found.append(NearMiss(lead=lead, score=score, fields=fields))
    found.sort(key=lambda n: (-n.score, n.lead.id))
    return found[:limit]


def queue_entry(session, entry) -> dict:
    """An MQL as sales sees it (also the API's shape)."""
    return {
        "id": entry.lead.id, "email": entry.lead.email, "company": entry.lead.company,
        "title": entry.lead.title, "owner": entry.lead.owner, "score": round(entry.score, 1),
        "mql_at": entry.mql_at.isoformat() if entry.mql_at else None, "reason": entry.reason,
        "timeline": timeline_entries(session, entry.lead.id),
    }


def timeline_entries(session, lead_id: int) -> list[dict]:
    steps: dict[int, str] = {}
    entries = []
    for event in timeline(session=session, lead_id=lead_id):
        if event.outbox_id and event.outbox_id not in steps:
            row = session.get(OutboxMessage, event.outbox_id)
            steps[event.outbox_id] = row.step if row else "?"
        email = steps.get(event.outbox_id, "")
        what = {"open": f"opened {email}", "view": f"viewed {email} in the browser",
                "click": f"clicked {shown_url(event.url)} in {email}",
                "page_view": f"visited {event.url}"}[event.kind]
        entries.append({"at": event.at.isoformat(), "kind": event.kind, "what": what})
    return entries


def shown_url(url: str | None) -> str:
    """A URL for people: a landing-page link (ours, under any base path) without the lead's
    personal `t` token; other URLs as they are."""
    parts = urlsplit(url or "")
    if "/p/" not in parts.path:
        return url or ""
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "t"]
    return parts._replace(query=urlencode(query)).geturl()
