"""Sales' answer to an MQL (accept: mql -> sal with an owner; reject: back to nurture as
recycled, behaviour points reset) and the MQL queue, on a simulated clock with the sample
program."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from defects import drop_advance
from responses import response
from sqlalchemy import select

from engine.crm.models import CrmOutboxItem
from engine.errors import IllegalTransition, Invalid
from engine.flows.leads import upsert_lead
from engine.journeys.models import Enrollment
from engine.leads.models import Lead, StageChange
from engine.programs.service import load_program
from engine.sales.models import SalesNotification
from engine.sales.queue import mql_queue
from engine.sales.service import accept, reject
from engine.scoring.models import ScoreEvent
from engine.sending.models import OutboxMessage

MONDAY = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # 11:00 in Paris, inside the send window
DAY = timedelta(days=1)
IT_DIRECTOR = {"title": "IT Director", "company": "Globex"}  # it_manager persona, fit 15


def load(db, directory: Path, now: datetime = MONDAY) -> None:
    """The program without its advance rules: here a click scores and leaves the stage alone."""
    with db.session() as s:
        load_program(session=s, directory=drop_advance(directory), now=now)


def add_lead(db, email: str, now: datetime = MONDAY, **fields) -> int:
    with db.session() as s:
        lead, _ = upsert_lead(session=s, fields={"email": email, **fields}, now=now,
                              actor="test", program="acme-nurture")
        return lead.id


def respond(db, lead_id: int, kind: str, detail: str | None, now: datetime) -> None:
    with db.session() as s:
        response(s, s.get(Lead, lead_id), kind, detail, now)


def reach_mql(db, lead_id: int, now: datetime = MONDAY) -> None:
    """Two clicks (20, the daily cap) and a pricing visit (23): 43 behaviour points."""
    respond(db, lead_id, "click", "welcome_it", now)
    respond(db, lead_id, "click", "guide_it", now + timedelta(minutes=1))
    respond(db, lead_id, "page_view", "pricing", now + timedelta(minutes=2))


def mql(db, email: str, now: datetime = MONDAY, **fields) -> int:
    lead_id = add_lead(db, email, now, **(fields or IT_DIRECTOR))
    reach_mql(db, lead_id, now)
    assert lead(db, lead_id).stage == "mql"
    return lead_id


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


def answer(db, verb, lead_id: int, **kwargs):
    with db.session() as s:
        return verb(session=s, lead=s.get(Lead, lead_id), **kwargs)


def snapshot(db, lead_id: int) -> tuple:
    """Everything sales' answer may change, to show a refused answer changed nothing."""
    stored = lead(db, lead_id)
    return (stored.stage, stored.owner, stored.behaviour_score, stored.fit_score,
            len(rows(db, StageChange, lead_id)), len(rows(db, CrmOutboxItem, lead_id)),
            len(rows(db, ScoreEvent, lead_id)), len(rows(db, SalesNotification, lead_id)))


# -- accept ---------------------------------------------------------------------------------

def test_accept_makes_the_mql_a_sal_owned_by_the_acceptor(db, sample_program):
    load(db, sample_program)
    lead_id = mql(db, "ada@globex.example")
    at = MONDAY + DAY
    change = answer(db, accept, lead_id, actor="sam@acme.example", now=at)
    assert (change.from_stage, change.to_stage, change.actor, change.at) == (
        "mql", "sal", "sam@acme.example", at)
    stored = lead(db, lead_id)
    assert (stored.stage, stored.owner) == ("sal", "sam@acme.example")
    item = stage_items(db, lead_id)[-1]
    assert (item.kind, item.created_at, item.status) == ("stage_change", at, "pending")
    assert item.payload["owner"] == "sam@acme.example" and item.payload["to"] == "sal"
    [enrollment] = rows(db, Enrollment, lead_id)
    assert enrollment.status == "exited"  # sal is an exit stage: nurture stops


def test_accept_for_a_named_owner(db, sample_program):
    load(db, sample_program)
    lead_id = mql(db, "ada@globex.example")
    change = answer(db, accept, lead_id, actor="manager@acme.example", owner="rita@acme.example",
                    now=MONDAY + DAY)
    assert change.actor == "manager@acme.example"
    assert lead(db, lead_id).owner == "rita@acme.example"
    [accepted] = [i for i in stage_items(db, lead_id) if i.payload["to"] == "sal"]
    assert accepted.payload["owner"] == "rita@acme.example"


# -- reject ---------------------------------------------------------------------------------

@pytest.mark.parametrize("reason", ["", "   ", "x" * 1001])
def test_reject_needs_a_reason_of_at_most_1000_characters(db, sample_program, reason):
    load(db, sample_program)
    lead_id = mql(db, "ada@globex.example")
    before = snapshot(db, lead_id)
    with pytest.raises(Invalid) as raised:
        answer(db, reject, lead_id, reason=reason, actor="sam@acme.example", now=MONDAY + DAY)
    assert raised.value.field == "reason"
    assert snapshot(db, lead_id) == before


def test_reject_recycles_the_lead_into_nurture_with_its_behaviour_reset(db, sample_program):
    load(db, sample_program)
    lead_id = mql(db, "ada@globex.example")
    at = MONDAY + DAY
    reason = "no budget this year " + "x" * 980  # 1000 characters: the longest allowed
    assert len(reason) == 1000
    change = answer(db, reject, lead_id, reason=reason, actor="sam@acme.example", now=at)
    assert (change.from_stage, change.to_stage, change.at) == ("mql", "recycled", at)
    assert reason in change.reason and change.actor == "sam@acme.example"
    stored = lead(db, lead_id)
    assert stored.stage == "recycled"
    assert (stored.behaviour_score, stored.fit_score) == (0, 15)
    [reset] = rows(db, ScoreEvent, lead_id, kind="reset")
    assert reset.at == at and reset.category == "behaviour" and "rejected" in reset.rule
    item = stage_items(db, lead_id)[-1]
    assert (item.payload["from"], item.payload["to"], item.payload["rejected"]) == (
        "mql", "recycled", True)
    assert item.payload["reason"] == f"rejected by sales: {reason}"
    [enrollment] = rows(db, Enrollment, lead_id)
    assert (enrollment.status, enrollment.track) == ("active", "it_manager/recycled")
    steps = [r.step for r in rows(db, OutboxMessage, lead_id)]
    assert steps == ["welcome_it", "product_update"]


def test_a_rejected_lead_becomes_an_mql_again_by_earning_points(db, sample_program):
    load(db, sample_program)
    lead_id = mql(db, "ada@globex.example")
    answer(db, reject, lead_id, reason="not now", actor="sam@acme.example", now=MONDAY + DAY)
    later = MONDAY + 3 * DAY
    respond(db, lead_id, "click", "product_update", later)
    respond(db, lead_id, "click", "benchmark_it", later)  # 15 + 20: the old 43 no longer count
    assert lead(db, lead_id).stage == "recycled"
    respond(db, lead_id, "page_view", "pricing", later)  # 58
    assert lead(db, lead_id).stage == "mql"
    changes = rows(db, StageChange, lead_id, to_stage="mql")
    assert [(c.from_stage, c.at) for c in changes] == [
        ("inquiry", MONDAY + timedelta(minutes=2)), ("recycled", later)]
    assert [n.kind for n in rows(db, SalesNotification, lead_id)] == ["mql", "mql"]
    assert [i.payload["to"] for i in stage_items(db, lead_id)] == ["mql", "recycled", "mql"]


@pytest.mark.parametrize("verb", [accept, reject])
@pytest.mark.parametrize("stage", ["inquiry", "sal"])
def test_only_an_mql_can_be_accepted_or_rejected(db, sample_program, verb, stage):
    load(db, sample_program)
    if stage == "inquiry":
        lead_id = add_lead(db, "ada@globex.example", **IT_DIRECTOR)
    else:
        lead_id = mql(db, "ada@globex.example")
        answer(db, accept, lead_id, actor="sam@acme.example", now=MONDAY + DAY)
    before = snapshot(db, lead_id)
    kwargs = {"reason": "not a fit"} if verb is reject else {}
    with pytest.raises(IllegalTransition):
        answer(db, verb, lead_id, actor="rita@acme.example", now=MONDAY + 2 * DAY, **kwargs)
    assert snapshot(db, lead_id) == before


# -- the MQL queue --------------------------------------------------------------------------

def test_mql_queue_lists_mqls_by_decayed_score_with_when_they_qualified(db, sample_program):
    load(db, sample_program)
    # By time: Bob (a demo request, 20 points), then Cy (15 + 43), then Ada (30 + 43).
    bob = add_lead(db, "bob@initech.example", title="Intern", company="Initech")
    respond(db, bob, "form_submitted", "demo", MONDAY)
    cy = mql(db, "cy@umbrella.example", MONDAY + DAY, **IT_DIRECTOR)
    ada = mql(db, "ada@globex.example", MONDAY + 2 * DAY, title="CIO", company="Globex",
              company_size="1,200", industry="software")
    waiting = add_lead(db, "dee@hooli.example", **IT_DIRECTOR)  # not an MQL
    respond(db, waiting, "page_view", "pricing", MONDAY)
    accepted = mql(db, "eve@acme.example", MONDAY + DAY)  # with sales already
    answer(db, accept, accepted, actor="sam@acme.example", now=MONDAY + 2 * DAY)

    now = MONDAY + 12 * DAY
    with db.session() as s:
        queue = mql_queue(session=s, now=now)
        got = [(e.lead.id, e.score, e.mql_at) for e in queue]
    two_minutes = timedelta(minutes=2)  # reach_mql's pricing visit
    qualified = [MONDAY, MONDAY + DAY + two_minutes, MONDAY + 2 * DAY + two_minutes]
    assert [lead_id for lead_id, _, _ in got] == [ada, cy, bob]
    assert [mql_at for _, _, mql_at in got] == [qualified[2], qualified[1], qualified[0]]

    def decayed(points: float, since: datetime) -> float:
        return points * 0.5 ** ((now - since) / timedelta(days=30))

    expected = [30 + decayed(43, qualified[2]), 15 + decayed(43, qualified[1]),
                decayed(20, qualified[0])]
    assert [score for _, score, _ in got] == pytest.approx(expected, abs=0.01)
    with db.session() as s:
        assert [e.lead.id for e in mql_queue(session=s, now=now, limit=2)] == [ada, cy]
