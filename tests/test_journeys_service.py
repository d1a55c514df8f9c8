"""Enrollments stored around decide(): enrolment, due steps, stage changes, program versions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from engine.flows.leads import upsert_lead
from engine.journeys.models import Enrollment
from engine.journeys.service import run_due
from engine.leads.models import LeadEvent
from engine.leads.service import get_lead, set_stage
from engine.programs.service import load_program

MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # 09:00 in Paris


def load(db, directory, now=MONDAY):
    with db.session() as s:
        return load_program(session=s, directory=directory, now=now)


def add_lead(db, now=MONDAY, **fields):
    with db.session() as s:
        lead, _ = upsert_lead(session=s, fields=fields, now=now, actor="test", program="acme-nurture")
        return lead.id


def enrollment(db, lead_id):
    with db.session() as s:
        return s.scalar(select(Enrollment).where(Enrollment.lead_id == lead_id))


def sent(db, lead_id):
    with db.session() as s:
        rows = s.scalars(select(LeadEvent).where(LeadEvent.lead_id == lead_id,
                                                 LeadEvent.kind == "send").order_by(LeadEvent.id))
        return [r.detail["asset"] for r in rows]


def advance(db, until):
    """Tick like the scheduler does: at each due time, up to `until`."""
    while True:
        with db.session() as s:
            due = s.scalar(select(func.min(Enrollment.due_at)).where(Enrollment.status == "active"))
            if due is None or due > until:
                return
            run_due(session=s, now=due)


def test_enrolment_sends_first_step_and_schedules_the_next(db, sample_program):
    load(db, sample_program)
    lead_id = add_lead(db, email="Ada@Globex.example", title="CIO", timezone="Europe/Paris")
    assert sent(db, lead_id) == ["welcome_it"]
    row = enrollment(db, lead_id)
    assert row.status == "active" and row.track == "it_manager/inquiry"
    assert row.due_at == MONDAY + timedelta(days=3)
    advance(db, MONDAY + timedelta(days=3))
    assert sent(db, lead_id) == ["welcome_it", "guide_it"]


def test_stage_change_moves_enrollment_and_exit_stage_stops_it(db, sample_program):
    load(db, sample_program)
    lead_id = add_lead(db, email="ada@globex.example", title="CIO", timezone="Europe/Paris")
    with db.session() as s:
        lead = get_lead(session=s, email="ada@globex.example")
        set_stage(session=s, lead=lead, stage="engaged", reason="webinar", actor="test",
                  now=MONDAY + timedelta(hours=1))
    assert enrollment(db, lead_id).track == "it_manager/engaged"
    assert sent(db, lead_id) == ["welcome_it", "case_study_it"]
    with db.session() as s:
        lead = get_lead(session=s, email="ada@globex.example")
        set_stage(session=s, lead=lead, stage="mql", reason="score", actor="test", now=MONDAY + timedelta(hours=2))
        set_stage(session=s, lead=lead, stage="sal", reason="accepted", actor="sales", now=MONDAY + timedelta(hours=3))
    row = enrollment(db, lead_id)
    assert row.status == "exited" and row.due_at is None
    advance(db, MONDAY + timedelta(days=30))
    assert sent(db, lead_id) == ["welcome_it", "case_study_it"]


def test_new_program_version_appends_steps_without_resending(db, sample_program):
    load(db, sample_program)
    lead_id = add_lead(db, email="bob@initech.example", title="CFO", timezone="Europe/Paris")
    advance(db, MONDAY + timedelta(days=20))
    assert sent(db, lead_id) == ["welcome_finance", "cost_guide_finance"]
    assert enrollment(db, lead_id).status == "completed"
    yaml_path = sample_program / "program.yaml"
    text = yaml_path.read_text()
    old = "{email: cost_guide_finance}"
    assert old in text
    yaml_path.write_text(text.replace(old, old + ", {wait: 2d}, {email: tco_finance}", 1))
    result = load(db, sample_program, now=MONDAY + timedelta(days=20))  # a Sunday
    assert result.version == 2 and result.migrated >= 1
    row = enrollment(db, lead_id)
    assert row.status == "active" and row.program_version == 2
    advance(db, MONDAY + timedelta(days=30))
    assert sent(db, lead_id) == ["welcome_finance", "cost_guide_finance", "tco_finance"]
