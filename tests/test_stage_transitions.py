"""The lifecycle stage transition table as the README documents it (section "Programs as
code", bullet "Stages"), checked pair by pair: every move it lists is allowed, every other move
is refused, through `check_transition` and through the doors people use (`nurture leads
set-stage` and `POST /api/v1/leads/<id>/stage`). The expected table is written here from the
README's words, not read from engine/leads/stages.py: a move the code allows by mistake (say
disqualified -> customer) fails this test."""

from __future__ import annotations

from itertools import product

import pytest
from sqlalchemy import select

from engine.auth.service import create_key
from engine.db import utcnow
from engine.errors import IllegalTransition
from engine.flows.leads import upsert_lead
from engine.leads.models import Lead, StageChange
from engine.leads.stages import check_transition
from engine.web.app import create_app

# README: "Stages: inquiry, engaged, mql, sal, opportunity, customer, recycled, disqualified."
STAGES = ("inquiry", "engaged", "mql", "sal", "opportunity", "customer", "recycled",
          "disqualified")

# README: each stage and the stages it may move to; any other move is refused.
ALLOWED = {
    "inquiry": {"engaged", "mql", "sal", "recycled", "disqualified"},
    "engaged": {"mql", "sal", "recycled", "disqualified"},
    "mql": {"sal", "recycled", "engaged", "disqualified"},
    "sal": {"opportunity", "recycled", "disqualified"},
    "opportunity": {"customer", "recycled", "disqualified"},
    "customer": {"opportunity", "recycled"},
    "recycled": {"engaged", "mql", "sal", "disqualified"},
    "disqualified": {"recycled"},
}
PAIRS = list(product(STAGES, STAGES))


def allowed(current: str, target: str) -> bool:
    return target in ALLOWED[current]


def test_the_expected_table_covers_every_stage():
    assert set(ALLOWED) == set(STAGES)
    assert all(targets <= set(STAGES) and current not in targets
               for current, targets in ALLOWED.items())
    # The README's own examples, as written there.
    assert allowed("sal", "recycled") and allowed("opportunity", "customer")
    assert allowed("opportunity", "recycled")
    # Sales' answers (README, "Tracking, scoring and the sales handoff").
    assert allowed("mql", "sal") and allowed("mql", "recycled")
    assert not allowed("disqualified", "customer")


@pytest.mark.parametrize("current, target", PAIRS)
def test_check_transition_agrees_with_the_readme(current, target):
    if allowed(current, target):
        check_transition(current, target)
        return
    with pytest.raises(IllegalTransition) as refused:
        check_transition(current, target)
    if current == target:
        assert refused.value.detail == f"lead is already in stage {current}"
    else:
        assert f"illegal stage change {current} -> {target}" in refused.value.detail
        allowed_now = ", ".join(sorted(ALLOWED[current]))
        assert f"(from {current}: {allowed_now})" in refused.value.detail  # names the way out


def add_lead_per_pair(db) -> dict[tuple[str, str], int]:
    """One lead for each (current, target) pair, created in stage `current`."""
    ids = {}
    with db.session() as s:
        for current, target in PAIRS:
            lead, _ = upsert_lead(session=s, now=utcnow(), actor="test", fields={
                "email": f"{current}-to-{target}@stages.example", "stage": current})
            ids[current, target] = lead.id
    return ids


def stored(db, lead_id: int) -> tuple[str, list[tuple]]:
    with db.session() as s:
        history = s.execute(select(StageChange.from_stage, StageChange.to_stage,
                                   StageChange.reason, StageChange.actor)
                            .where(StageChange.lead_id == lead_id)
                            .order_by(StageChange.id)).all()
        return s.get(Lead, lead_id).stage, [tuple(row) for row in history]


def assert_door_outcome(db, lead_id: int, current: str, target: str, succeeded: bool,
                        actor: str) -> None:
    stage, history = stored(db, lead_id)
    if allowed(current, target):
        assert succeeded, (current, target)
        assert stage == target
        assert history[-1] == (current, target, "table test", actor)
    else:
        assert not succeeded, (current, target)
        assert stage == current
        assert len(history) == 1  # only the creation: the refused move left no trace


def test_every_pair_through_nurture_leads_set_stage(cli, db):
    ids = add_lead_per_pair(db)
    for (current, target), lead_id in ids.items():
        result = cli("leads", "set-stage", f"{current}-to-{target}@stages.example", target,
                     "--reason", "table test", "--actor", "table")
        succeeded = result.exit_code == 0
        if succeeded:
            assert f"stage {current} -> {target}" in result.stdout
        else:
            assert result.exit_code == 1, result.output
            expected = ("already in stage" if current == target
                        else f"illegal stage change {current} -> {target}")
            assert expected in result.output
        assert_door_outcome(db, lead_id, current, target, succeeded, actor="table")


def test_every_pair_through_the_api(env, db):
    ids = add_lead_per_pair(db)
    with db.session() as s:
        key = create_key(session=s, role="sales", name="table test", now=utcnow())[1]
    app = create_app()
    try:
        client = app.test_client()
        for (current, target), lead_id in ids.items():
            response = client.post(f"/api/v1/leads/{lead_id}/stage",
                                   headers={"Authorization": f"Bearer {key}"},
                                   json={"stage": target, "reason": "table test"})
            succeeded = response.status_code == 200
            if succeeded:
                assert response.get_json()["stage"] == target
            else:
                assert response.status_code == 409, response.get_data(as_text=True)
                assert response.get_json()["field"] == "stage"
            assert_door_outcome(db, lead_id, current, target, succeeded,
                                actor="api:table test")
    finally:
        app.extensions["nurture.db"].dispose()


def test_each_change_records_the_leads_level_on_the_success_path(cli, db):
    """The funnel reads "in order" from the level stored on each change: the furthest
    success-path stage reached one stage after the other (detours allowed, skips not)."""
    with db.session() as s:
        upsert_lead(session=s, fields={"email": "ann@globex.example"}, actor="test",
                    now=utcnow())
        upsert_lead(session=s, fields={"email": "bob@globex.example", "stage": "mql"},
                    actor="test", now=utcnow())
    moves = {"ann": ["engaged", "mql", "recycled", "mql", "sal"], "bob": ["sal", "opportunity"]}
    for name, stages in moves.items():
        for stage in stages:
            result = cli("leads", "set-stage", f"{name}@globex.example", stage,
                         "--reason", "test")
            assert result.exit_code == 0, result.output
    with db.session() as s:
        levels = {email.split("@")[0]: [level for _, level in rows] for email, rows in [
            (email, s.execute(select(StageChange.to_stage, StageChange.path_level)
                              .join(Lead, Lead.id == StageChange.lead_id)
                              .where(Lead.email == email).order_by(StageChange.id)).all())
            for email in ("ann@globex.example", "bob@globex.example")]}
    # ann: inquiry 0, engaged 1, mql 2, recycled 2, mql 2, sal 3; bob, created as an MQL: off
    # the path whatever comes after
    assert levels == {"ann": [0, 1, 2, 2, 2, 3], "bob": [-1, -1, -1]}


def test_each_change_is_left_when_the_next_is_recorded(cli, db):
    """The funnel counts the leads in a stage at an instant from left_at: the time of the
    lead's next change, None for its latest."""
    with db.session() as s:
        upsert_lead(session=s, fields={"email": "cy@globex.example"}, actor="test",
                    now=utcnow())
    for stage in ("engaged", "mql"):
        result = cli("leads", "set-stage", "cy@globex.example", stage, "--reason", "t")
        assert result.exit_code == 0, result.output
    with db.session() as s:
        rows = s.execute(select(StageChange.at, StageChange.left_at)
                         .order_by(StageChange.id)).all()
    assert [left for _, left in rows] == [rows[1].at, rows[2].at, None]


def test_leads_created_by_an_import_start_on_the_path_as_the_others_do(cli, db, tmp_path,
                                                                      loaded_program):
    """The import writes its new leads' first changes in bulk, not through set_stage."""
    path = tmp_path / "leads.csv"
    path.write_text("email,stage\ncy@globex.example,inquiry\ndee@globex.example,mql\n",
                    encoding="utf-8")
    result = cli("leads", "import", str(path), "--program", loaded_program)
    assert result.exit_code == 0, result.output
    with db.session() as s:
        rows = dict(s.execute(select(Lead.email, StageChange.path_level)
                              .join(Lead, Lead.id == StageChange.lead_id)).all())
    assert rows == {"cy@globex.example": 0, "dee@globex.example": -1}
    assert cli("leads", "set-stage", "cy@globex.example", "engaged", "--reason", "t").exit_code == 0
    with db.session() as s:
        levels = s.scalars(select(StageChange.path_level).join(Lead, Lead.id == StageChange.lead_id)
                           .where(Lead.email == "cy@globex.example")
                           .order_by(StageChange.id)).all()
    assert levels == [0, 1]
