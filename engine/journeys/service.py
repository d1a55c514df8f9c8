"""Persistence around decide(): enrollments, due times and the append-only event log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.journeys.decide import (
    Decision,
    EnrollmentState,
    Event,
    EventKind,
    Status,
    decide,
    new_state,
)
from engine.journeys.models import Enrollment
from engine.leads.models import Lead, LeadEvent
from engine.programs.personas import resolve_persona
from engine.programs.spec import Program
from engine.programs.store import program_at
from engine.sending.outbox import insert_rows, outbox_rows
from engine.sending.responses import mark_response


def event_row(*, lead_id: int, program_id: int | None, event: Event, now: datetime,
              actor: str, occurred_at: datetime | None = None,
              answers: int | None = None) -> dict:
    detail = {"detail": event.detail} if event.detail is not None else {}
    if occurred_at is not None:  # it happened elsewhere, earlier: recorded now, said when
        detail["occurred_at"] = occurred_at.isoformat()
    if answers is not None:  # the email it answers (an unsubscribe link's)
        detail["outbox_id"] = answers
    return {"lead_id": lead_id, "program_id": program_id, "at": now, "category": "event",
            "kind": str(event.kind), "detail": detail, "actor": actor}


def action_rows(*, lead_id: int, program_id: int | None, decision: Decision) -> list[dict]:
    return [
        {"lead_id": lead_id, "program_id": program_id, "at": a.at, "category": "action",
         "kind": str(a.kind), "actor": "engine",
         "detail": {"asset": a.asset, "track": a.track, "reason": a.reason, "cause": str(a.cause)}}
        for a in decision.actions
    ]


def enrollment_columns(state: EnrollmentState, now: datetime) -> dict:
    return {"status": str(state.status), "track": state.track, "due_at": state.due_at,
            "state": state.to_dict(), "persona": state.persona,
            "program_version": state.version, "updated_at": now}


def _record(session: Session, enrollment: Enrollment, program: Program, decision: Decision,
            event: Event, now: datetime, actor: str,
            occurred_at: datetime | None = None, answers: int | None = None) -> None:
    """Store the decision: the enrollment's new state, the event log, and an outbox row per send."""
    for key, value in enrollment_columns(decision.state, now).items():
        setattr(enrollment, key, value)
    rows = [event_row(lead_id=enrollment.lead_id, program_id=enrollment.program_id, event=event,
                      now=now, actor=actor, occurred_at=occurred_at, answers=answers)]
    rows += action_rows(lead_id=enrollment.lead_id, program_id=enrollment.program_id,
                        decision=decision)
    session.add_all(LeadEvent(**row) for row in rows)
    insert_rows(session, outbox_rows(enrollment_id=enrollment.id, lead_id=enrollment.lead_id,
                                     program_id=enrollment.program_id, program=program,
                                     decision=decision, now=now))


def enroll(*, session: Session, lead: Lead, program_id: int, program: Program, now: datetime,
           actor: str = "system") -> Enrollment:
    """Enroll a lead (idempotent: an existing enrollment is returned unchanged)."""
    existing = session.scalar(select(Enrollment).where(
        Enrollment.lead_id == lead.id, Enrollment.program_id == program_id))
    if existing is not None:
        return existing
    state = new_state(program, persona=resolve_persona(program, lead.fields()), stage=lead.stage,
                      timezone=lead.timezone)
    event = Event(EventKind.ENROLLED)
    decision = decide(program, state, event, now)
    enrollment = Enrollment(lead_id=lead.id, program_id=program_id, created_at=now,
                            **enrollment_columns(decision.state, now))
    session.add(enrollment)
    session.flush()
    if lead.enrolled_persona is None:  # its first enrollment
        lead.enrolled_persona = decision.state.persona
    _record(session, enrollment, program, decision, event, now, actor)
    return enrollment


def apply_event(*, session: Session, lead: Lead, event: Event, now: datetime,
                actor: str = "system", occurred_at: datetime | None = None,
                answers: int | None = None) -> list[Decision]:
    """Feed one event to every enrollment of the lead; log it even when it has none. An
    unsubscribe, complaint or bounce is also put on the email it answers (`answers`, when the
    response names it, as an unsubscribe link does)."""
    mark_response(session, lead_id=lead.id, event=event, at=now, send_id=answers)
    enrollments = list(session.scalars(select(Enrollment).where(Enrollment.lead_id == lead.id)))
    if not enrollments:
        session.add(LeadEvent(**event_row(lead_id=lead.id, program_id=None, event=event, now=now,
                                          actor=actor, occurred_at=occurred_at,
                                          answers=answers)))
        return []
    decisions = []
    for enrollment in enrollments:
        program = program_at(session, enrollment.program_id, enrollment.program_version)
        decision = decide(program, EnrollmentState.from_dict(enrollment.state), event, now)
        _record(session, enrollment, program, decision, event, now, actor, occurred_at, answers)
        decisions.append(decision)
    return decisions


def sync_persona(*, session: Session, lead: Lead, now: datetime, actor: str) -> None:
    """After a lead's fields change, move enrollments whose persona no longer matches."""
    enrollments = lead_enrollments(session=session, lead_id=lead.id)
    for enrollment in enrollments:
        program = program_at(session, enrollment.program_id, enrollment.program_version)
        state = EnrollmentState.from_dict(enrollment.state)
        persona = resolve_persona(program, lead.fields())
        if persona != state.persona:
            event = Event(EventKind.PERSONA, detail=persona)
            _record(session, enrollment, program, decide(program, state, event, now), event, now, actor)
    if enrollments:  # the first one's persona may have moved
        lead.enrolled_persona = enrollments[0].persona


def run_due(*, session: Session, now: datetime, limit: int = 1000) -> int:
    """Process enrollments whose next step is due. Returns how many were processed."""
    due = list(session.scalars(
        select(Enrollment).where(Enrollment.due_at <= now, Enrollment.status == Status.ACTIVE)
        .order_by(Enrollment.due_at).limit(limit)
    ))
    for enrollment in due:
        program = program_at(session, enrollment.program_id, enrollment.program_version)
        event = Event(EventKind.DUE)
        decision = decide(program, EnrollmentState.from_dict(enrollment.state), event, now)
        _record(session, enrollment, program, decision, event, now, "scheduler")
    return len(due)


def migrate_enrollments(*, session: Session, program_id: int, program: Program, now: datetime,
                        actor: str) -> int:
    """Move running enrollments to a new program version, keeping their position by step identity."""
    count = 0
    query = select(Enrollment).where(Enrollment.program_id == program_id,
                                     Enrollment.program_version != program.version,
                                     Enrollment.status != Status.EXITED)
    for enrollment in session.scalars(query.execution_options(yield_per=500)):
        event = Event(EventKind.PROGRAM_UPDATED, detail=f"version {program.version}")
        decision = decide(program, EnrollmentState.from_dict(enrollment.state), event, now)
        _record(session, enrollment, program, decision, event, now, actor)
        count += 1
    return count


def lead_enrollments(*, session: Session, lead_id: int) -> list[Enrollment]:
    return list(session.scalars(select(Enrollment).where(Enrollment.lead_id == lead_id)
                                .order_by(Enrollment.id)))
