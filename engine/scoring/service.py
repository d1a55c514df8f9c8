"""Score leads: store every award (engine/scoring/rules.py decides it) and keep the lead's
stored score current. Routing on a score or a trigger is engine/flows/leads.py's.

A lead is scored by the rules of the program it is enrolled in (the first one enrolled whose
current version has scoring rules): a score is the lead's, not the program's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine.journeys.models import Enrollment
from engine.leads.models import Lead
from engine.programs.models import ProgramRecord
from engine.programs.spec import Program
from engine.programs.store import program_at, running_version
from engine.scoring.models import ScoreEvent
from engine.scoring.rules import (
    apply_caps,
    behaviour_awards,
    cap_day,
    decayed,
    fit_awards,
    score_at,
)

NURTURE_STAGES = frozenset({"inquiry", "engaged", "recycled"})  # not yet with sales


def scoring_program(*, session: Session, lead_id: int) -> tuple[ProgramRecord, Program] | None:
    """The program whose rules score this lead, at the version it runs; None if it has none."""
    return lead_program(session=session, lead_id=lead_id,
                        uses=lambda p: p.scoring.active or p.scoring.threshold is not None)


def lead_program(*, session: Session, lead_id: int,
                 uses: Callable[[Program], bool]) -> tuple[ProgramRecord, Program] | None:
    """The first program the lead was enrolled in (the version it runs) for which `uses` holds."""
    records = session.execute(
        select(ProgramRecord).join(Enrollment, Enrollment.program_id == ProgramRecord.id)
        .where(Enrollment.lead_id == lead_id, ProgramRecord.current_version.is_not(None))
        .order_by(Enrollment.id)).scalars()
    for record in records:
        program = program_at(session, record.id, running_version(record))
        if uses(program):
            return record, program
    return None


def current_score(lead: Lead, program: Program | None, now: datetime) -> float:
    if program is None:
        return lead.fit_score + lead.behaviour_score
    return score_at(program.scoring, fit=lead.fit_score, behaviour=lead.behaviour_score,
                    behaviour_at=lead.behaviour_at, now=now)


def score_response(*, session: Session, lead: Lead, program: Program, kind: str,
                   detail: str | None, now: datetime,
                   tracking_event_id: int | None = None) -> list[ScoreEvent]:
    """Award a person's response (open, click, page_view, form_submitted, consumed) by the
    program's rules, within the daily caps. Returns the awards stored."""
    rules = program.scoring
    refresh_fit(session=session, lead=lead, program=program, now=now)
    awards = behaviour_awards(rules, kind, detail)
    if awards and rules.daily_caps:
        awards = apply_caps(rules, awards, _awarded_today(session, lead, program, now))
    stored = [ScoreEvent(lead_id=lead.id, at=now, category="behaviour", kind=a.kind,
                         points=a.points, rule=a.rule[:300], tracking_event_id=tracking_event_id)
              for a in awards]
    session.add_all(stored)
    if stored:
        lead.behaviour_score = decayed(lead.behaviour_score, lead.behaviour_at or now, now,
                                       rules.half_life) + sum(a.points for a in awards)
        lead.behaviour_at = now
    return stored


def refresh_fit(*, session: Session, lead: Lead, program: Program, now: datetime) -> bool:
    """Recompute fit points from the lead's fields; a change is recorded with the rules that
    now hold. Returns whether it changed."""
    awards = fit_awards(program.scoring, lead.fields())
    total = float(sum(a.points for a in awards))
    if total == lead.fit_score:
        return False
    rule = "; ".join(a.rule for a in awards) or "no fit rule holds"
    session.add(ScoreEvent(lead_id=lead.id, at=now, category="fit", kind="fit",
                           points=total - lead.fit_score, rule=f"fit now {total:g}: {rule}"[:300]))
    lead.fit_score = total
    return True


def reset_behaviour(*, session: Session, lead: Lead, now: datetime, reason: str) -> None:
    """Clear behaviour points (a lead sales sent back must earn its next MQL afresh)."""
    if lead.behaviour_score:
        session.add(ScoreEvent(lead_id=lead.id, at=now, category="behaviour", kind="reset",
                               points=0.0, rule=f"behaviour points reset: {reason}"[:300]))
    lead.behaviour_score, lead.behaviour_at = 0.0, now


def _awarded_today(session: Session, lead: Lead, program: Program,
                   now: datetime) -> dict[str, float]:
    start, end = cap_day(now, lead.timezone or program.timezone)
    rows = session.execute(
        select(ScoreEvent.kind, func.sum(ScoreEvent.points))
        .where(ScoreEvent.lead_id == lead.id, ScoreEvent.category == "behaviour",
               ScoreEvent.at >= start, ScoreEvent.at < end)
        .group_by(ScoreEvent.kind))
    return {kind: float(total or 0) for kind, total in rows}
