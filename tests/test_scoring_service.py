"""Scoring stored around the pure rules: awards and their ScoreEvents, daily caps per local day,
decay, fit points, and routing at the MQL threshold and by trigger rules, on a simulated clock
with the sample program's scoring section."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from defects import drop_advance
from responses import response
from sqlalchemy import select

from engine.crm.models import CrmOutboxItem
from engine.flows.leads import upsert_lead
from engine.journeys.models import Enrollment
from engine.leads.models import Lead, StageChange
from engine.leads.service import get_lead, set_stage
from engine.programs.models import ProgramRecord
from engine.programs.service import load_program
from engine.sales.models import SalesNotification
from engine.sales.queue import one_field_short_leads
from engine.sales.service import accept
from engine.scoring.models import ScoreEvent
from engine.scoring.service import current_score, scoring_program

# Sample program: open 1 (cap 1 a day), click 10 (cap 20), page_view 3 + pricing 20 (cap 40),
# form_submitted 20; half-life 30 days; fit title 15, company_size >= 200 10, industry 5;
# MQL at 55, requiring company; a demo request (page slug `demo`) routes to sales at once.
MONDAY = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # 11:00 in Paris, inside the send window
DAY = timedelta(days=1)
DIRECTOR = {"title": "IT Director", "company": "Globex"}  # fit 15 (title)


def load(db, directory: Path, now: datetime = MONDAY) -> None:
    """The program without its advance rules: here a click scores and leaves the stage alone."""
    with db.session() as s:
        load_program(session=s, directory=drop_advance(directory), now=now)


def add_lead(db, email: str, now: datetime = MONDAY, program: str = "acme-nurture",
             **fields) -> int:
    with db.session() as s:
        lead, _ = upsert_lead(session=s, fields={"email": email, **fields}, now=now,
                              actor="test", program=program)
        return lead.id


def respond(db, lead_id: int, kind: str, detail: str | None = None,
            now: datetime = MONDAY) -> list[tuple[str, float, str]]:
    with db.session() as s:
        stored = response(s, s.get(Lead, lead_id), kind, detail, now)
        return [(e.kind, e.points, e.rule) for e in stored]


def score(db, lead_id: int, now: datetime) -> float:
    with db.session() as s:
        program = scoring_program(session=s, lead_id=lead_id)
        return current_score(s.get(Lead, lead_id), program[1] if program else None, now)


def lead(db, lead_id: int) -> Lead:
    with db.session() as s:
        return s.get(Lead, lead_id)


def rows(db, model, lead_id: int, **where) -> list:
    with db.session() as s:
        query = select(model).where(model.lead_id == lead_id,
                                    *(getattr(model, k) == v for k, v in where.items()))
        return list(s.scalars(query.order_by(model.id)))


def stage_items(db, lead_id: int) -> list:
    """The lead's CRM items of stage changes (its lead_created item aside)."""
    return rows(db, CrmOutboxItem, lead_id, kind="stage_change")


def reach_mql(db, lead_id: int, now: datetime = MONDAY) -> None:
    """Two clicks (20, the daily cap) and a pricing visit (23): 43 behaviour points."""
    respond(db, lead_id, "click", "welcome_it", now)
    respond(db, lead_id, "click", "guide_it", now + timedelta(minutes=1))
    respond(db, lead_id, "page_view", "pricing", now + timedelta(minutes=2))


def program_copy(sample: Path, tmp_path: Path, name: str, *, scoring: bool = True) -> Path:
    """A copy of the sample as program `name`, without its scoring and SLA sections when
    `scoring` is false."""
    directory = tmp_path / name
    shutil.copytree(sample, directory)
    path = directory / "program.yaml"
    text = path.read_text().replace("program: acme-nurture", f"program: {name}", 1)
    if not scoring:
        text = text[:text.index("# Lead scoring.")]
    path.write_text(text)
    return directory


# -- behaviour points -----------------------------------------------------------------------

def test_click_awards_click_points_with_the_rule(db, sample_program):
    load(db, sample_program)
    lead_id = add_lead(db, "ada@globex.example", company="Globex")
    assert respond(db, lead_id, "click", "welcome_it") == [("click", 10.0, "click: +10")]
    [event] = rows(db, ScoreEvent, lead_id, category="behaviour")
    assert (event.kind, event.points, event.rule, event.at) == ("click", 10.0, "click: +10", MONDAY)
    assert lead(db, lead_id).behaviour_score == 10
    assert score(db, lead_id, MONDAY) == pytest.approx(10)


def test_pricing_page_view_awards_page_view_and_page_points(db, sample_program):
    load(db, sample_program)
    lead_id = add_lead(db, "ada@globex.example")
    awards = respond(db, lead_id, "page_view", "pricing")
    assert awards == [("page_view", 3.0, "page_view: +3"), ("page_view", 20.0, "page pricing: +20")]
    assert score(db, lead_id, MONDAY) == pytest.approx(23)
    other = add_lead(db, "bob@globex.example")
    assert respond(db, other, "page_view", "blog") == [("page_view", 3.0, "page_view: +3")]


def test_daily_caps_cut_the_award_and_say_so(db, sample_program):
    load(db, sample_program)
    lead_id = add_lead(db, "ada@globex.example")
    assert respond(db, lead_id, "open", "welcome_it") == [("open", 1.0, "open: +1")]
    assert respond(db, lead_id, "open", "guide_it", MONDAY + timedelta(hours=1)) == []
    respond(db, lead_id, "page_view", "pricing", MONDAY + timedelta(hours=2))  # 23 of 40
    second = respond(db, lead_id, "page_view", "pricing", MONDAY + timedelta(hours=3))
    assert second == [
        ("page_view", 3.0, "page_view: +3"),
        ("page_view", 14.0, "page pricing: +20 (capped to +14: daily cap 40 for page_view)"),
    ]
    assert respond(db, lead_id, "page_view", "pricing", MONDAY + timedelta(hours=4)) == []
    assert score(db, lead_id, MONDAY + timedelta(hours=4)) == pytest.approx(1 + 40, abs=0.1)
    capped = rows(db, ScoreEvent, lead_id, points=14.0)
    assert len(capped) == 1 and "capped" in capped[0].rule


def test_cap_resets_at_local_midnight_of_the_lead_else_of_the_program(db, sample_program):
    load(db, sample_program)
    paris = add_lead(db, "ada@globex.example")  # no time zone: the program's, Europe/Paris
    new_york = add_lead(db, "bob@globex.example", timezone="America/New_York")
    evening = datetime(2026, 11, 2, 22, 0, tzinfo=UTC)  # 23:00 in Paris, 17:00 in New York
    for lead_id in (paris, new_york):
        respond(db, lead_id, "click", "welcome_it", evening)
        respond(db, lead_id, "click", "guide_it", evening + timedelta(minutes=10))
        assert respond(db, lead_id, "click", "guide_it", evening + timedelta(minutes=20)) == []
    after_paris_midnight = evening + timedelta(minutes=90)  # 00:30 in Paris, 18:30 in New York
    assert respond(db, paris, "click", "guide_it", after_paris_midnight) == [
        ("click", 10.0, "click: +10")]
    assert respond(db, new_york, "click", "guide_it", after_paris_midnight) == []
    after_new_york_midnight = datetime(2026, 11, 3, 5, 30, tzinfo=UTC)  # 00:30 in New York
    assert respond(db, new_york, "click", "guide_it", after_new_york_midnight) == [
        ("click", 10.0, "click: +10")]


def test_behaviour_points_halve_in_30_days_and_new_awards_add_to_the_decayed_value(
        db, sample_program):
    load(db, sample_program)
    lead_id = add_lead(db, "ada@globex.example", **DIRECTOR)
    respond(db, lead_id, "click", "welcome_it")
    assert score(db, lead_id, MONDAY) == pytest.approx(15 + 10)
    assert score(db, lead_id, MONDAY + 30 * DAY) == pytest.approx(15 + 5)
    assert score(db, lead_id, MONDAY + 60 * DAY) == pytest.approx(15 + 2.5)
    respond(db, lead_id, "click", "guide_it", MONDAY + 30 * DAY)
    stored = lead(db, lead_id)
    assert stored.behaviour_score == pytest.approx(5 + 10)
    assert stored.behaviour_at == MONDAY + 30 * DAY
    assert score(db, lead_id, MONDAY + 30 * DAY) == pytest.approx(15 + 15)
    assert score(db, lead_id, MONDAY + 60 * DAY) == pytest.approx(15 + 7.5)


# -- fit points -----------------------------------------------------------------------------

def test_fit_points_follow_the_lead_fields_through_upsert(db, sample_program):
    load(db, sample_program)
    lead_id = add_lead(db, "ada@globex.example", title="Engineer", company="Globex")
    upsert = {"email": "ada@globex.example", "title": "Head of Infrastructure",
              "company_size": "1,200", "industry": "Software"}
    with db.session() as s:
        upsert_lead(session=s, fields=upsert, now=MONDAY + DAY, actor="test")
    assert lead(db, lead_id).fit_score == 30
    assert score(db, lead_id, MONDAY + DAY) == pytest.approx(30)
    [fit] = rows(db, ScoreEvent, lead_id, category="fit")
    assert fit.points == 30 and fit.at == MONDAY + DAY
    for part in ("title", "company_size >= 200", "industry in software"):
        assert part in fit.rule
    with db.session() as s:
        upsert_lead(session=s, fields={"email": "ada@globex.example", "industry": "retail"},
                    now=MONDAY + 2 * DAY, actor="test")
    assert lead(db, lead_id).fit_score == 25
    changes = rows(db, ScoreEvent, lead_id, category="fit")
    assert [(e.points, e.at) for e in changes] == [(30, MONDAY + DAY), (-5, MONDAY + 2 * DAY)]
    assert "industry" not in changes[-1].rule


def test_fit_points_count_in_the_first_award(db, sample_program):
    load(db, sample_program)
    lead_id = add_lead(db, "ada@globex.example", title="CFO", company_size=250)
    respond(db, lead_id, "open", "welcome_finance")
    assert score(db, lead_id, MONDAY) == pytest.approx(15 + 10 + 1)
    assert [e.points for e in rows(db, ScoreEvent, lead_id, category="fit")] == [25]


def test_a_new_lead_has_its_fit_points_at_once(db, sample_program):
    load(db, sample_program)
    lead_id = add_lead(db, "ada@globex.example", title="CFO", company_size=250)
    assert lead(db, lead_id).fit_score == 25
    assert score(db, lead_id, MONDAY) == pytest.approx(25)


def test_a_lead_without_a_scoring_program_scores_nothing(db, sample_program, tmp_path):
    load(db, program_copy(sample_program, tmp_path, "plain-nurture", scoring=False))
    enrolled = add_lead(db, "ada@globex.example", program="plain-nurture", **DIRECTOR)
    with db.session() as s:
        unenrolled, _ = upsert_lead(session=s, fields={"email": "bob@globex.example", **DIRECTOR},
                                    now=MONDAY, actor="test")
        unenrolled = unenrolled.id
    for lead_id in (enrolled, unenrolled):
        assert respond(db, lead_id, "page_view", "pricing") == []
        assert respond(db, lead_id, "form_submitted", "demo") == []
        assert rows(db, ScoreEvent, lead_id) == []
        stored = lead(db, lead_id)
        assert (stored.fit_score, stored.behaviour_score, stored.stage) == (0, 0, "inquiry")
        assert score(db, lead_id, MONDAY) == 0
        assert rows(db, SalesNotification, lead_id) == []


# -- thresholds and triggers ----------------------------------------------------------------

def test_reaching_the_threshold_makes_an_mql_told_to_sales_and_the_crm(db, sample_program):
    load(db, sample_program)
    lead_id = add_lead(db, "ada@globex.example", **DIRECTOR)
    respond(db, lead_id, "click", "welcome_it")
    respond(db, lead_id, "click", "guide_it", MONDAY + timedelta(minutes=1))  # 15 + 20 = 35
    assert lead(db, lead_id).stage == "inquiry"
    assert rows(db, SalesNotification, lead_id) == stage_items(db, lead_id) == []
    at = MONDAY + timedelta(minutes=2)
    respond(db, lead_id, "page_view", "pricing", at)  # 35 + 23 = 58
    assert lead(db, lead_id).stage == "mql"
    [change] = rows(db, StageChange, lead_id, to_stage="mql")
    assert (change.from_stage, change.at) == ("inquiry", at)
    assert change.reason == "score 58 reached the MQL threshold 55"
    [notification] = rows(db, SalesNotification, lead_id)
    assert (notification.kind, notification.at, notification.reason) == ("mql", at, change.reason)
    [item] = stage_items(db, lead_id)
    assert (item.kind, item.status, item.created_at) == ("stage_change", "pending", at)
    assert item.payload["score"] == 58
    assert (item.payload["from"], item.payload["to"]) == ("inquiry", "mql")
    assert (item.payload["reason"], item.payload["actor"]) == (change.reason, "scoring")
    assert item.payload["email"] == "ada@globex.example"
    respond(db, lead_id, "click", "checklist_it", MONDAY + DAY)  # more points: told once
    assert len(rows(db, SalesNotification, lead_id)) == len(stage_items(db, lead_id)) == 1


def test_the_mql_its_notification_and_crm_item_share_the_scoring_transaction(db, sample_program):
    load(db, sample_program)
    lead_id = add_lead(db, "ada@globex.example", **DIRECTOR)
    respond(db, lead_id, "click", "welcome_it")
    respond(db, lead_id, "click", "guide_it")

    class Crash(Exception):
        pass

    with pytest.raises(Crash), db.session() as s:
        response(s, s.get(Lead, lead_id), "page_view", "pricing", MONDAY + timedelta(minutes=2))
        assert s.get(Lead, lead_id).stage == "mql"
        raise Crash
    assert lead(db, lead_id).stage == "inquiry"
    assert rows(db, StageChange, lead_id, to_stage="mql") == []
    assert rows(db, SalesNotification, lead_id) == stage_items(db, lead_id) == []
    assert len(rows(db, ScoreEvent, lead_id, category="behaviour")) == 2


def test_a_lead_missing_a_required_field_is_one_field_short_not_an_mql(db, sample_program):
    load(db, sample_program)
    lead_id = add_lead(db, "ada@globex.example", title="IT Director")  # no company
    reach_mql(db, lead_id)
    assert score(db, lead_id, MONDAY + timedelta(minutes=2)) == pytest.approx(58, abs=0.01)
    assert lead(db, lead_id).stage == "inquiry"
    assert rows(db, SalesNotification, lead_id) == stage_items(db, lead_id) == []
    other = add_lead(db, "bob@initech.example", title="Intern", company="Initech")
    respond(db, other, "click", "welcome_finance")  # far from the threshold: not listed
    with db.session() as s:
        short = one_field_short_leads(session=s, now=MONDAY + DAY)
        assert [(n.lead.id, n.fields) for n in short] == [(lead_id, ["company"])]
        assert short[0].score == pytest.approx(15 + 43 * 0.5 ** (1 / 30), abs=0.01)


def test_filling_in_the_missing_field_makes_an_mql_at_once(db, sample_program):
    load(db, sample_program)
    lead_id = add_lead(db, "ada@globex.example", title="IT Director")
    reach_mql(db, lead_id)
    at = MONDAY + timedelta(hours=1)
    with db.session() as s:
        upsert_lead(session=s, fields={"email": "ada@globex.example", "company": "Globex"},
                    now=at, actor="test")
    assert lead(db, lead_id).stage == "mql"
    [change] = rows(db, StageChange, lead_id, to_stage="mql")
    assert change.at == at and "threshold 55" in change.reason
    assert [n.kind for n in rows(db, SalesNotification, lead_id)] == ["mql"]
    assert [i.payload["to"] for i in stage_items(db, lead_id)] == ["mql"]
    with db.session() as s:
        assert one_field_short_leads(session=s, now=at) == []


def test_filling_in_a_fit_field_that_reaches_the_threshold_makes_an_mql(db, sample_program):
    load(db, sample_program)
    lead_id = add_lead(db, "ada@globex.example", title="IT Director", company="Globex")
    respond(db, lead_id, "click", "welcome_it")
    respond(db, lead_id, "click", "guide_it")
    respond(db, lead_id, "page_view", "blog")  # 15 + 23 = 38
    respond(db, lead_id, "page_view", "blog")  # 41
    respond(db, lead_id, "page_view", "blog")  # 44
    respond(db, lead_id, "page_view", "blog")  # 47
    at = MONDAY + timedelta(hours=1)
    with db.session() as s:
        short = one_field_short_leads(session=s, now=at)
        assert [(n.lead.id, n.fields) for n in short] == [(lead_id, ["company_size"])]
        upsert_lead(session=s, fields={"email": "ada@globex.example", "company_size": "200-500"},
                    now=at, actor="test")
    assert lead(db, lead_id).stage == "mql"
    [change] = rows(db, StageChange, lead_id, to_stage="mql")
    assert change.at == at and change.reason.startswith("score 57 ")


@pytest.mark.parametrize("stage", ["sal", "opportunity"])
def test_a_lead_with_sales_is_not_routed_again_but_its_owner_hears_of_a_hand_raise(
        db, sample_program, stage):
    load(db, sample_program)
    lead_id = add_lead(db, "ada@globex.example", **DIRECTOR)
    reach_mql(db, lead_id)
    with db.session() as s:
        accept(session=s, lead=s.get(Lead, lead_id), actor="sam@acme.example",
               now=MONDAY + timedelta(hours=1))
        if stage == "opportunity":
            set_stage(session=s, lead=s.get(Lead, lead_id), stage="opportunity",
                      reason="deal opened", actor="sam@acme.example",
                      now=MONDAY + timedelta(hours=2))
    later = MONDAY + 2 * DAY
    respond(db, lead_id, "click", "welcome_it", later)
    respond(db, lead_id, "page_view", "pricing", later)
    respond(db, lead_id, "form_submitted", "demo", later)
    assert lead(db, lead_id).stage == stage
    assert score(db, lead_id, later) > 55
    assert len(rows(db, StageChange, lead_id, to_stage="mql")) == 1
    notes = rows(db, SalesNotification, lead_id)
    assert [n.kind for n in notes] == ["mql", "trigger"]  # the demo request, for the owner
    assert notes[1].owner == "sam@acme.example" and "page demo" in notes[1].reason
    items = rows(db, CrmOutboxItem, lead_id)
    moves = ["mql", "sal"] + (["opportunity"] if stage == "opportunity" else [])
    assert [i.payload["to"] for i in items if i.kind == "stage_change"] == moves
    [signal] = [i for i in items if i.kind == "buying_signal"]  # the CRM hears it too
    assert (signal.payload["stage"], signal.payload["expansion"]) == (stage, False)
    assert signal.payload["owner"] == "sam@acme.example" and "page demo" in signal.payload["reason"]


def test_a_demo_request_routes_to_sales_whatever_the_score(db, sample_program):
    load(db, sample_program)
    lead_id = add_lead(db, "ada@globex.example", title="Intern", company="Globex")
    at = MONDAY + timedelta(hours=1)
    respond(db, lead_id, "form_submitted", "demo", at)
    assert score(db, lead_id, at) == pytest.approx(20)  # far below 55
    assert lead(db, lead_id).stage == "mql"
    [change] = rows(db, StageChange, lead_id, to_stage="mql")
    assert change.at == at and "demo" in change.reason
    [notification] = rows(db, SalesNotification, lead_id)
    assert notification.kind == "trigger" and "route to sales" in notification.reason
    assert [i.payload["to"] for i in stage_items(db, lead_id)] == ["mql"]
    other = add_lead(db, "bob@globex.example", title="Intern", company="Globex")
    respond(db, other, "form_submitted", "pricing", at)  # a form on another page: no trigger
    assert lead(db, other).stage == "inquiry"


def test_an_enroll_trigger_enrolls_the_lead_in_another_program(db, sample_program, tmp_path):
    path = sample_program / "program.yaml"
    text = path.read_text()
    demo = "    - {on: form_submitted, page: demo_request, route: sales}"
    assert demo in text
    path.write_text(text.replace(
        demo, demo + "\n    - {on: page_view, page: pricing, enroll: webinar-series}"))
    load(db, sample_program)
    load(db, program_copy(sample_program, tmp_path, "webinar-series", scoring=False))
    lead_id = add_lead(db, "ada@globex.example", title="Intern", company="Globex")
    respond(db, lead_id, "page_view", "blog")
    at = MONDAY + timedelta(hours=1)
    with db.session() as s:
        webinar = s.scalar(select(ProgramRecord.id).where(ProgramRecord.name == "webinar-series"))
        assert s.scalar(select(Enrollment).where(Enrollment.lead_id == lead_id,
                                                 Enrollment.program_id == webinar)) is None
    respond(db, lead_id, "page_view", "pricing", at)
    with db.session() as s:
        enrolled = s.scalar(select(Enrollment).where(Enrollment.lead_id == lead_id,
                                                     Enrollment.program_id == webinar))
        assert enrolled is not None and enrolled.created_at == at
        assert enrolled.status == "active" and enrolled.track == "finance/inquiry"
        assert get_lead(session=s, email="ada@globex.example").stage == "inquiry"
    respond(db, lead_id, "page_view", "pricing", at + timedelta(minutes=5))  # idempotent
    assert len(rows(db, Enrollment, lead_id)) == 2


def test_an_enroll_trigger_naming_a_program_not_loaded_still_scores(db, sample_program):
    path = sample_program / "program.yaml"
    demo = "    - {on: form_submitted, page: demo_request, route: sales}"
    path.write_text(path.read_text().replace(
        demo, demo + "\n    - {on: page_view, page: pricing, enroll: webinar-series}"))
    load(db, sample_program)
    lead_id = add_lead(db, "ada@globex.example", title="Intern", company="Globex")
    assert [points for _, points, _ in respond(db, lead_id, "page_view", "pricing")] == [3, 20]
    assert score(db, lead_id, MONDAY) == pytest.approx(23)
    assert len(rows(db, Enrollment, lead_id)) == 1
