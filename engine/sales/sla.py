"""Service levels between marketing and sales, checked daily (`nurture sla check`, and the
scheduler's daily job).

- An MQL that sales neither accepts nor rejects within `sla.mql_response` is a breach: it is
  recorded once and escalated (a sales notification naming the owner, or `sla.escalate_to`,
  which engine/sales/notify.py emails).
- An opportunity without update for `sla.opportunity_stalled` is stalled. Its last update is
  the latest change the CRM reported on the lead's open opportunities (engine/crm/records.py);
  a lead in the opportunity stage without any, its own last change (stage or field): recorded once, and enrolled in `sla.stalled_track` for marketing support.
A breach is resolved when the lead leaves the stage, a stall also when the opportunity is
updated. Running the check twice records nothing new: a breach is unique per lead, kind and the moment its clock started.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.crm.models import Opportunity, OpportunityContact, OpportunityStatus
from engine.journeys.decide import ActionKind, Event, EventKind
from engine.journeys.service import apply_event
from engine.leads.models import Lead, StageChange
from engine.sales.models import SalesNotification, SlaBreach
from engine.scoring.rules import SlaRules
from engine.scoring.service import lead_program

MQL_UNANSWERED = "mql_unanswered"
OPPORTUNITY_STALLED = "opportunity_stalled"
_STAGE_OF = {MQL_UNANSWERED: "mql", OPPORTUNITY_STALLED: "opportunity"}


@dataclass
class SlaCheck:
    new: list[SlaBreach] = field(default_factory=list)
    resolved: int = 0

    def __str__(self) -> str:
        kinds = Counter(b.kind for b in self.new)
        found = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "no new breach"
        return f"{found}; {self.resolved} resolved"


def check_slas(*, session: Session, now: datetime) -> SlaCheck:
    result = SlaCheck(resolved=_resolve_left(session, now))
    for lead, since in _entered_stage(session, "mql"):
        rules = _rules(session, lead)
        due = rules.mql_due(since)
        if now >= due and not _already(session, lead, MQL_UNANSWERED, since):
            action = _escalate(session, lead, rules, since, now)
            result.new.append(_breach(session, lead, MQL_UNANSWERED, since, due, now, action))
    updates = _opportunity_updates(session)
    for lead, since in _entered_stage(session, "opportunity"):
        updated = max(since, updates.get(lead.id, lead.updated_at))
        rules = _rules(session, lead)
        due = rules.stalled_due(updated)
        if now >= due and not _already(session, lead, OPPORTUNITY_STALLED, updated):
            action = _assist(session, lead, rules, now)
            result.new.append(_breach(session, lead, OPPORTUNITY_STALLED, updated, due, now,
                                      action))
    return result


def _opportunity_updates(session: Session) -> dict[int, datetime]:
    """Per lead, the last update of its open opportunities in the CRM."""
    rows = session.execute(
        select(OpportunityContact.lead_id, func.max(Opportunity.updated_at))
        .join(Opportunity, Opportunity.id == OpportunityContact.opportunity_id)
        .where(Opportunity.status == OpportunityStatus.OPEN)
        .group_by(OpportunityContact.lead_id))
    return {lead_id: at for lead_id, at in rows}


def _rules(session: Session, lead: Lead) -> SlaRules:
    """The SLA section of the first enrolled program that has one; else the defaults."""
    found = lead_program(session=session, lead_id=lead.id, uses=lambda p: p.sla != SlaRules())
    return found[1].sla if found else SlaRules()


def _entered_stage(session: Session, stage: str) -> list[tuple[Lead, datetime]]:
    """Leads now in `stage`, with when they last entered it."""
    entered = (select(StageChange.lead_id, func.max(StageChange.at).label("since"))
               .where(StageChange.to_stage == stage).group_by(StageChange.lead_id).subquery())
    rows = session.execute(select(Lead, entered.c.since)
                           .join(entered, entered.c.lead_id == Lead.id)
                           .where(Lead.stage == stage).order_by(Lead.id))
    return [(lead, since) for lead, since in rows]


def _already(session: Session, lead: Lead, kind: str, since: datetime) -> bool:
    return session.scalar(select(SlaBreach.id).where(
        SlaBreach.lead_id == lead.id, SlaBreach.kind == kind, SlaBreach.since == since)) is not None


def _escalate(session: Session, lead: Lead, rules: SlaRules, since: datetime,
              now: datetime) -> str:
    owner = lead.owner or rules.escalate_to
    days = (now - since).days
    session.add(SalesNotification(
        lead_id=lead.id, at=now, kind="escalation", owner=owner,
        reason=f"MQL unanswered for {days} days (SLA {rules.mql_response.days} days)"))
    return f"escalated to {owner or 'sales (no owner)'}"


def _assist(session: Session, lead: Lead, rules: SlaRules, now: datetime) -> str:
    if not rules.stalled_track:
        return "stalled; no marketing track configured (sla.stalled_track)"
    decisions = apply_event(session=session, lead=lead, now=now, actor="sla",
                            event=Event(EventKind.ASSIST, detail=rules.stalled_track))
    moved = [a.track for d in decisions for a in d.actions if a.kind == ActionKind.MOVE]
    if not moved:
        return f"stalled; already in (or without) {rules.stalled_track}: nothing to enroll"
    return f"stalled; enrolled in {', '.join(moved)} for marketing support"


def _breach(session: Session, lead: Lead, kind: str, since: datetime, due_at: datetime,
            now: datetime, action: str) -> SlaBreach:
    breach = SlaBreach(lead_id=lead.id, kind=kind, since=since, due_at=due_at, detected_at=now,
                       owner=lead.owner, action=action)
    session.add(breach)
    session.flush()
    return breach


def _resolve_left(session: Session, now: datetime) -> int:
    """Close open breaches whose lead has left the stage the breach was about, and stalls
    whose opportunity was updated since (its clock restarted)."""
    resolved = 0
    updates = _opportunity_updates(session)
    open_breaches = session.execute(select(SlaBreach, Lead.stage, Lead.updated_at)
                                    .join(Lead, Lead.id == SlaBreach.lead_id)
                                    .where(SlaBreach.resolved_at.is_(None)))
    for breach, stage, updated_at in open_breaches:
        updated_at = updates.get(breach.lead_id, updated_at)
        restarted = breach.kind == OPPORTUNITY_STALLED and updated_at > breach.since
        if stage != _STAGE_OF.get(breach.kind) or restarted:
            breach.resolved_at = now
            resolved += 1
    return resolved


def sla_report(*, session: Session, include_resolved: bool = False) -> dict[str, list[SlaBreach]]:
    """Breaches by owner ("unassigned" for none), oldest first."""
    query = select(SlaBreach).order_by(SlaBreach.due_at, SlaBreach.id)
    if not include_resolved:
        query = query.where(SlaBreach.resolved_at.is_(None))
    by_owner: dict[str, list[SlaBreach]] = defaultdict(list)
    for breach in session.scalars(query):
        by_owner[breach.owner or "unassigned"].append(breach)
    return dict(sorted(by_owner.items()))
