"""Why a lead is where it is: the rules and events behind its score, its stage, and its next
send (or why nothing is scheduled). Read-only; `nurture leads explain` and the API print it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.journeys.decide import Status
from engine.journeys.service import lead_enrollments
from engine.leads.models import Lead
from engine.leads.service import change_dict, stage_history
from engine.programs.models import ProgramRecord
from engine.programs.spec import Program
from engine.programs.store import program_at
from engine.sales.models import SalesNotification, SlaBreach
from engine.scoring.models import ScoreEvent
from engine.scoring.rules import decayed, fit_awards, missing_requirements
from engine.scoring.service import current_score, scoring_program
from engine.sending.models import Delivery, OutboxMessage
from engine.sending.suppression import suppressed_reasons


def explain(*, session: Session, lead: Lead, now: datetime) -> dict:
    found = scoring_program(session=session, lead_id=lead.id)
    suppressed = suppressed_reasons(session=session, emails=[lead.email]).get(lead.email)
    enrollments = lead_enrollments(session=session, lead_id=lead.id)
    followed = next((e.state.get("persona") for e in enrollments if e.state), None)
    return {
        "lead": {"id": lead.id, "email": lead.email, "stage": lead.stage,
                 "persona": lead.persona or followed, "owner": lead.owner},
        "score": _score(session, lead, found[0].name if found else None,
                        found[1] if found else None, now),
        "stage_history": [change_dict(c) for c in stage_history(session=session,
                                                                 lead_id=lead.id)],
        "next_sends": [_next_send(session, e, suppressed) for e in enrollments],
        "suppressed": suppressed,
        "sales": _sales(session, lead),
    }


def _score(session: Session, lead: Lead, program_name: str | None, program: Program | None,
           now: datetime) -> dict:
    if program is None:
        return {"program": None, "total": 0.0, "note": "no enrolled program has scoring rules"}
    rules = program.scoring
    events = list(session.scalars(select(ScoreEvent).where(
        ScoreEvent.lead_id == lead.id, ScoreEvent.category == "behaviour")
        .order_by(ScoreEvent.at, ScoreEvent.id)))
    last_reset = max((i for i, e in enumerate(events) if e.kind == "reset"), default=-1)
    behaviour = [
        {"at": e.at.isoformat(), "rule": e.rule, "points": e.points,
         "now": round(decayed(e.points, e.at, now, rules.half_life), 2)}
        for e in events[last_reset + 1:]]
    return {
        "program": program_name,
        "total": round(current_score(lead, program, now), 2),
        "threshold": rules.threshold,
        "half_life_days": rules.half_life.days if rules.half_life else None,
        "fit": [{"rule": a.rule, "points": a.points} for a in fit_awards(rules, lead.fields())],
        "behaviour": behaviour,
        "missing_requirements": missing_requirements(rules, lead.fields()),
        "reset": events[last_reset].rule if last_reset >= 0 else None,
    }


def _next_send(session: Session, enrollment, suppressed: str | None) -> dict:
    record = session.get(ProgramRecord, enrollment.program_id)
    program = program_at(session, enrollment.program_id, enrollment.program_version)
    state = enrollment.state or {}
    queued = list(session.scalars(select(OutboxMessage).where(
        OutboxMessage.enrollment_id == enrollment.id,
        OutboxMessage.status.in_((Delivery.PENDING, Delivery.FAILED_TEMP, Delivery.SENDING)))
        .order_by(OutboxMessage.due_at)))
    return {
        "program": record.name if record else str(enrollment.program_id),
        "status": enrollment.status, "track": enrollment.track,
        "next_email": state.get("next_email"),
        "due_at": enrollment.due_at.isoformat() if enrollment.due_at else None,
        "queued": [{"email": row.step, "status": row.status, "due_at": row.due_at.isoformat(),
                    "note": row.last_error} for row in queued],
        "why": _why(enrollment, state, program, queued, suppressed),
    }


def _why(enrollment, state: dict, program: Program, queued: list, suppressed: str | None) -> str:
    if suppressed:
        return f"nothing will be sent: the address is suppressed ({suppressed})"
    status = enrollment.status
    if status == Status.EXITED:
        return f"left the program: {state.get('exit_reason') or 'exited'}"
    if status == Status.PAUSED:
        return "paused: a non-responder with no re-engagement track; a response resumes it"
    if status == Status.IDLE:
        cell = f"{state.get('persona')}/{state.get('stage')}"
        return f"waiting: the program has no track for {cell}"
    if status == Status.COMPLETED:
        return f"finished {enrollment.track}; new steps added to it will be sent"
    if queued:
        row = queued[0]
        return f"{row.step} queued to send at {row.due_at.isoformat()} ({row.status})"
    email = state.get("next_email")
    subject = program.emails[email].subject if email in program.emails else ""
    return f"next: {email} ({subject}) at {enrollment.due_at.isoformat()}"


def _sales(session: Session, lead: Lead) -> dict:
    notes = session.scalars(select(SalesNotification).where(SalesNotification.lead_id == lead.id)
                            .order_by(SalesNotification.at))
    breaches = session.scalars(select(SlaBreach).where(SlaBreach.lead_id == lead.id)
                               .order_by(SlaBreach.detected_at))
    return {
        "notifications": [{"at": n.at.isoformat(), "kind": n.kind, "reason": n.reason,
                           "owner": n.owner} for n in notes],
        "sla_breaches": [{"kind": b.kind, "since": b.since.isoformat(),
                          "due_at": b.due_at.isoformat(), "action": b.action,
                          "resolved_at": b.resolved_at.isoformat() if b.resolved_at else None}
                         for b in breaches],
    }
