"""What happens to a lead: one pipeline, whichever door the change comes in by (the API, an
import, a landing-page form, a tracked open or click, the CLI; later the CRM).

- `upsert_lead`: its fields written, the lead enrolled, its persona matched again, then
  reassessed (fit points refreshed, routed).
- `respond`: a person's response (an open, a click, a page visit, a form, content consumed
  elsewhere, a talk-to-sales request): the journeys hear it, scoring awards it, then routed.
- `change_stage`: a stage change through the one transition table (the CRM hears every one),
  then routed.
- `route`: trigger rules (to sales, to another program) and the MQL threshold.

The services below (leads, journeys, scoring, sales) read and write their own tables and never
call back up here, so they import no one in a circle.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.errors import Invalid
from engine.journeys.decide import Event, EventKind
from engine.journeys.models import Enrollment
from engine.journeys.service import apply_event, enroll, lead_enrollments, sync_persona
from engine.leads.fields import clean_value
from engine.leads.models import Lead, LeadEvent, StageChange
from engine.leads.service import set_stage, write_lead
from engine.programs.advance import advancement
from engine.programs.spec import Program
from engine.programs.store import list_programs, program_at, running_program, running_version
from engine.sales.service import enroll_elsewhere, hand_to_sales
from engine.scoring.models import ScoreEvent
from engine.scoring.rules import is_mql, matching_triggers
from engine.scoring.service import (
    NURTURE_STAGES,
    current_score,
    refresh_fit,
    score_response,
    scoring_program,
)

MAX_DETAIL = 200
MAX_EVENT_AGE = timedelta(days=90)  # older news of a response no longer says much about a lead
CLOCK_SKEW = timedelta(minutes=5)  # another system's clock may run a little ahead

# A response and the kind scoring knows it by (a talk-to-sales request earns no points: it
# hands the lead to sales).
RESPONSES: dict[EventKind, str | None] = {
    EventKind.OPENED: "open", EventKind.CLICKED: "click", EventKind.PAGE_VIEWED: "page_view",
    EventKind.FORM_SUBMITTED: "form_submitted", EventKind.CONSUMED: "consumed",
    EventKind.TALK_TO_SALES: None,
}


def upsert_lead(*, session: Session, fields: dict, now: datetime, actor: str,
                program: str | None = None) -> tuple[Lead, bool]:
    """Create or update a lead by email, enroll it in `program` if given, and follow through:
    persona, fit, routing. Returns (lead, created). Raises Invalid or NotFound; the caller's
    transaction then stores nothing."""
    running = running_program(session=session, name=program) if program else None
    written = write_lead(session=session, fields=fields, now=now, actor=actor)
    lead = written.lead
    if running and lead.persona and lead.persona not in running[1].personas:
        raise Invalid(f"unknown persona {lead.persona!r} in program {program}", field="persona")
    follow_through(session=session, lead=lead, changed=written.changed and not written.created,
                   enroll_in=(running[0].id, running[1]) if running else None, now=now,
                   actor=actor)
    return lead, written.created


def follow_through(*, session: Session, lead: Lead, changed: bool,
                   enroll_in: tuple[int, Program] | None, now: datetime, actor: str) -> None:
    """After a lead was written (here, or in bulk by the import): its enrollments follow a
    `changed` persona, it is enrolled in `enroll_in` (a program's id and running version),
    then reassessed."""
    if changed:
        sync_persona(session=session, lead=lead, now=now, actor=actor)
    if enroll_in:
        enroll(session=session, lead=lead, program_id=enroll_in[0], program=enroll_in[1],
               now=now, actor=actor)
    reassess(session=session, lead=lead, now=now)


def reassess(*, session: Session, lead: Lead, now: datetime) -> None:
    """Refresh the lead's fit points and route it: a field filled in may complete an MQL's
    requirements without adding a point."""
    program = _scoring(session, lead)
    if program is not None:
        refresh_fit(session=session, lead=lead, program=program, now=now)
    route(session=session, lead=lead, program=program, kind=None, detail=None, now=now)


def respond(*, session: Session, lead: Lead, kind: EventKind, detail: str | None,
            now: datetime, actor: str, tracking_event_id: int | None = None,
            occurred_at: datetime | None = None) -> list[ScoreEvent]:
    """A person's response, from any channel: the journeys hear it (a response resumes a
    paused lead, a talk-to-sales request ends its nurture), scoring awards it, and the lead is
    routed. Returns the points awarded."""
    if kind not in RESPONSES:
        raise Invalid(f"{kind} is not a response ({', '.join(RESPONSES)})", field="kind")
    program = _scoring(session, lead)
    if kind is EventKind.TALK_TO_SALES:  # first: the move to mql must not undo the exit below
        hand_to_sales(session=session, lead=lead, program=program, kind="talk_to_sales",
                      reason="asked to talk to sales" + (f": {detail}" if detail else ""),
                      now=now)
    apply_event(session=session, lead=lead, event=Event(kind, detail=detail), now=now,
                actor=actor, occurred_at=occurred_at)
    scored_as = RESPONSES[kind]
    awards: list[ScoreEvent] = []
    if program is not None:
        refresh_fit(session=session, lead=lead, program=program, now=now)
        if scored_as:
            awards = score_response(session=session, lead=lead, program=program,
                                    kind=scored_as, detail=detail, now=now,
                                    tracking_event_id=tracking_event_id)
    if scored_as:
        _advance_on(session, lead, scored_as, detail, now)
    route(session=session, lead=lead, program=program, kind=scored_as, detail=detail, now=now)
    return awards


def record_event(*, session: Session, lead: Lead, kind: str, detail: str | None,
                 at: datetime | None, now: datetime, actor: str) -> list[ScoreEvent]:
    """A response from another channel (the API, the CLI): content consumed elsewhere, a
    talk-to-sales request, an open, click, visit or form seen by another tool. Checked, then
    responded to now; `at` (when it happened, not in the future nor over MAX_EVENT_AGE ago)
    is kept in the lead's log. Raises Invalid naming the field."""
    event_kind = _event_kind(kind)
    detail = clean_value("detail", detail) if detail not in (None, "") else None
    if detail is not None and (not isinstance(detail, str) or len(detail) > MAX_DETAIL):
        raise Invalid(f"detail must be text of at most {MAX_DETAIL} characters", field="detail")
    _check_detail(session, lead, event_kind, detail)
    if at is not None:
        if at.tzinfo is None:
            raise Invalid("at needs a time zone (e.g. 2026-03-02T10:00:00Z)", field="at")
        if at > now + CLOCK_SKEW or at < now - MAX_EVENT_AGE:
            raise Invalid(f"at must be within the last {MAX_EVENT_AGE.days} days, not in the "
                          "future", field="at")
    return respond(session=session, lead=lead, kind=event_kind, detail=detail, now=now,
                   actor=actor, occurred_at=at)


def _event_kind(kind: str) -> EventKind:
    names = ", ".join(str(k) for k in RESPONSES)
    try:
        found = EventKind(kind)
    except ValueError:
        raise Invalid(f"unknown kind {str(kind)[:40]!r}: one of {names}", field="kind") from None
    if found not in RESPONSES:
        raise Invalid(f"{found} is not a response: one of {names}", field="kind")
    return found


def _check_detail(session: Session, lead: Lead, kind: EventKind, detail: str | None) -> None:
    """An email's key (opened, clicked, consumed: required for consumed) or a page's slug
    (page_viewed, form_submitted) of a program the lead is in; a talk-to-sales note is free."""
    if kind is EventKind.TALK_TO_SALES:
        return
    if detail is None:
        if kind is EventKind.CONSUMED:
            raise Invalid("detail: the key of the email whose content was consumed",
                          field="detail")
        return
    programs = [program_at(session, e.program_id, e.program_version)
                for e in lead_enrollments(session=session, lead_id=lead.id)]
    if kind in (EventKind.PAGE_VIEWED, EventKind.FORM_SUBMITTED):
        known, what = {p.slug for program in programs for p in program.pages.values()}, "page"
    else:
        known, what = {key for program in programs for key in program.emails}, "email"
    if detail not in known:
        listed = ", ".join(sorted(known)[:20]) or "none: the lead is in no program"
        raise Invalid(f"no {what} {detail!r} in the lead's programs ({listed})", field="detail")


def _advance_on(session: Session, lead: Lead, kind: str, detail: str | None,
                now: datetime) -> None:
    """The first `advance` rule of the lead's programs (in the order it joined them) that this
    response fires moves its stage, recorded with the rule in words."""
    for enrollment in lead_enrollments(session=session, lead_id=lead.id):
        program = program_at(session, enrollment.program_id, enrollment.program_version)
        found = advancement(program.advance, stage=lead.stage, event_kind=kind, detail=detail,
                            now=now)
        if found is not None:
            set_stage(session=session, lead=lead, stage=found.to, reason=found.reason,
                      actor="advance", now=now)
            return


def advance_idle(*, session: Session, now: datetime) -> list[tuple[Lead, str]]:
    """The `idle` advance rules of every running program, for the leads enrolled in it: a lead
    without a response for the rule's time (counted from its last response or its entering the
    stage, whichever is later) moves, recorded with the rule in words, then is routed.
    Idempotent: a moved lead is in another stage, where the clock starts again. Returns the
    leads moved and why."""
    moved = []
    responded = (select(LeadEvent.lead_id, func.max(LeadEvent.at).label("at"))
                 .where(LeadEvent.category == "event",
                        LeadEvent.kind.in_([str(kind) for kind in RESPONSES]))
                 .group_by(LeadEvent.lead_id).subquery())
    entered = (select(StageChange.lead_id, func.max(StageChange.at).label("at"))
               .group_by(StageChange.lead_id).subquery())
    for record in list_programs(session=session):
        if record.current_version is None:
            continue
        program = program_at(session, record.id, running_version(record))
        stages = {stage for rule in program.advance if rule.idle for stage in rule.from_stages}
        if not stages:
            continue
        rows = session.execute(
            select(Lead, responded.c.at, entered.c.at)
            .join(Enrollment, (Enrollment.lead_id == Lead.id)
                  & (Enrollment.program_id == record.id))
            .outerjoin(responded, responded.c.lead_id == Lead.id)
            .outerjoin(entered, entered.c.lead_id == Lead.id)
            .where(Lead.stage.in_(sorted(stages))).order_by(Lead.id)).all()
        for lead, last_response, since in rows:
            found = advancement(program.advance, stage=lead.stage, event_kind=None,
                                last_response_at=last_response, stage_since=since, now=now)
            if found is not None:
                change_stage(session=session, lead=lead, stage=found.to, reason=found.reason,
                             actor="advance", now=now)
                moved.append((lead, found.reason))
    return moved


def change_stage(*, session: Session, lead: Lead, stage: str, reason: str, actor: str,
                 now: datetime) -> StageChange:
    """A stage change asked for by a person or a system (the API, the CLI, an import): through
    the transition table, told to the journeys and the CRM, then routed."""
    change = set_stage(session=session, lead=lead, stage=stage, reason=reason, actor=actor,
                       now=now)
    route(session=session, lead=lead, program=_scoring(session, lead), kind=None, detail=None,
          now=now)
    return change


def route(*, session: Session, lead: Lead, program: Program | None, kind: str | None,
          detail: str | None, now: datetime) -> None:
    """Trigger rules matching this response (`kind`: open, click, page_view, form_submitted,
    consumed; None when nothing was done), then the MQL threshold."""
    if program is None:
        return
    rules = program.scoring
    for trigger in matching_triggers(rules, kind, detail) if kind else ():
        reason = f"trigger {trigger.describe()}"
        if trigger.route == "sales":
            hand_to_sales(session=session, lead=lead, program=program, kind="trigger",
                          reason=reason, now=now)
        elif trigger.enroll:
            enroll_elsewhere(session=session, lead=lead, program_name=trigger.enroll, now=now,
                             reason=reason)
    score = current_score(lead, program, now)
    if lead.stage in NURTURE_STAGES and is_mql(rules, score, lead.fields()):
        hand_to_sales(session=session, lead=lead, program=program, kind="mql", now=now,
                      reason=f"score {score:.0f} reached the MQL threshold {rules.threshold:g}")


def _scoring(session: Session, lead: Lead) -> Program | None:
    found = scoring_program(session=session, lead_id=lead.id)
    return found[1] if found else None
