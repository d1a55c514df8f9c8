"""Hand qualified leads to sales, and take sales' answer back.

hand_to_sales moves a nurture lead to mql and records a sales notification, in the transaction
of the change (the stage change tells the CRM). accept (mql -> sal) and reject (mql -> recycled,
re-entering nurture with its behaviour points reset) are sales' answers. What sales sees (the
queue, timelines) is engine/sales/queue.py.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from engine.crm.outbox import BUYING_SIGNAL, tell_crm
from engine.errors import IllegalTransition, Invalid, NotFound
from engine.journeys.service import enroll
from engine.leads.models import Lead, LeadEvent, StageChange
from engine.leads.service import set_stage
from engine.programs.spec import Program
from engine.programs.store import running_program
from engine.sales.models import SalesNotification
from engine.scoring.service import (
    NURTURE_STAGES,
    current_score,
    reset_behaviour,
)

MAX_REASON = 1000
MAX_NAME = 200  # the owner and actor columns
SALES_STAGES = frozenset({"mql", "sal", "opportunity"})
SIGNAL_STAGES = SALES_STAGES | {"customer"}  # a hand-raise here is a buying signal


def hand_to_sales(*, session: Session, lead: Lead, program: Program | None, kind: str,
                  reason: str, now: datetime) -> SalesNotification | None:
    """Make a nurture lead an MQL and tell sales and the CRM (`kind`: mql for a score, trigger
    or talk_to_sales for a hand-raise). A hand-raise of a lead already with sales, or of a
    customer, is a buying signal: the owner (or sales) and the CRM are told, and its stage
    stays (a customer's is expansion interest). None when nothing was recorded."""
    if lead.stage in NURTURE_STAGES:
        score = current_score(lead, program, now)
        set_stage(session=session, lead=lead, stage="mql", reason=reason, actor="scoring",
                  now=now, crm={"score": round(score, 1)})
        return _notify(session, lead, kind, reason, now)
    if kind == "mql" or lead.stage not in SIGNAL_STAGES:
        return None
    expansion = lead.stage == "customer"
    tell_crm(session=session, lead_id=lead.id, email=lead.email, kind=BUYING_SIGNAL, now=now,
             stage=lead.stage, reason=reason, owner=lead.owner, expansion=expansion)
    return _notify(session, lead, "expansion" if expansion else kind, reason, now)


def _notify(session: Session, lead: Lead, kind: str, reason: str,
            now: datetime) -> SalesNotification:
    notification = SalesNotification(lead_id=lead.id, at=now, kind=kind, reason=reason,
                                     owner=lead.owner)
    session.add(notification)
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
    return set_stage(session=session, lead=lead, stage="sal", reason="accepted by sales",
                     actor=actor, now=now, crm={"owner": owner})


def assign_owner(*, session: Session, lead: Lead, owner: str, actor: str,
                 now: datetime) -> None:
    """A new owner for the lead (the CRM reassigned it), noted on its log."""
    owner = _name(owner, "owner")
    if owner == lead.owner:
        return
    session.add(LeadEvent(lead_id=lead.id, at=now, category="action", kind="owner_changed",
                          detail={"from": lead.owner, "to": owner}, actor=actor))
    lead.owner = owner
    lead.updated_at = now


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
                       reason=f"rejected by sales: {reason}", actor=actor, now=now,
                       crm={"rejected": True})
    reset_behaviour(session=session, lead=lead, now=now, reason="rejected by sales")
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
