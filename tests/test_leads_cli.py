"""`nurture leads set-stage` and `nurture leads show` as a marketer or sales rep uses them."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select

from engine.leads.models import Lead, StageChange

LEADS = ("email,first_name,title,timezone,score\n"
         "ada@globex.example,Ada,IT Director,America/New_York,91\n")


@pytest.fixture
def imported(cli, loaded_program, tmp_path) -> str:
    path = tmp_path / "leads.csv"
    path.write_text(LEADS)
    result = cli("leads", "import", path, "--program", loaded_program)
    assert result.exit_code == 0, result.output
    return "ada@globex.example"


pytestmark = pytest.mark.usefixtures("leads_cli_clock")


def test_set_stage_records_the_change_and_moves_the_enrollment(cli, db, imported):
    result = cli("leads", "set-stage", "ADA@globex.example", "engaged",
                 "--reason", "replied to the webinar", "--actor", "sam")
    assert result.exit_code == 0, result.output
    assert "ada@globex.example: stage inquiry -> engaged" in result.stdout
    assert "acme-nurture: active in it_manager/engaged" in result.stdout
    with db.session() as s:
        assert s.scalar(select(Lead.stage)) == "engaged"
        last = s.scalars(select(StageChange).order_by(StageChange.id.desc())).first()
        assert (last.from_stage, last.to_stage, last.reason, last.actor) == (
            "inquiry", "engaged", "replied to the webinar", "sam")


def test_set_stage_illegal_change_is_refused(cli, db, imported):
    result = cli("leads", "set-stage", imported, "customer", "--reason", "signed")
    assert result.exit_code == 1
    assert "illegal stage change inquiry -> customer" in result.stderr
    assert "from inquiry: disqualified, engaged, mql, recycled, sal" in result.stderr
    with db.session() as s:
        assert s.scalar(select(Lead.stage)) == "inquiry"
        assert len(s.scalars(select(StageChange)).all()) == 1


@pytest.mark.parametrize("args, message", [
    (("nobody@globex.example", "engaged", "--reason", "x"), "no lead with email"),
    (("ada@globex.example", "hot", "--reason", "x"), "unknown stage 'hot'"),
    (("ada@globex.example", "engaged", "--reason", "  "), "a reason is required"),
])
def test_set_stage_errors_exit_1(cli, imported, args, message):
    result = cli("leads", "set-stage", *args)
    assert result.exit_code == 1
    assert message in result.stderr


def test_show_prints_fields_history_enrollment_and_events(cli, imported):
    cli("leads", "set-stage", imported, "engaged", "--reason", "replied")
    result = cli("leads", "show", imported)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert re.search(r"title\s+IT Director", out)
    assert re.search(r"score \(custom\)\s+91", out)
    assert re.search(r"\(new\) -> inquiry\s+imported\s+by import", out)
    assert re.search(r"inquiry -> engaged\s+replied\s+by cli", out)
    enrollment = next(line for line in out.splitlines() if "acme-nurture v1" in line)
    assert enrollment.strip() == (
        "acme-nurture v1: active, track it_manager/engaged, next case_study_it due "
        "Mon 2026-03-02 09:00 EST (America/New_York), Mon 2026-03-02 14:00 UTC")
    assert re.search(r"event\s+enrolled\s+by import", out)
    assert re.search(r"event\s+stage\s+engaged, by cli", out)
    assert re.search(r"action\s+move\s+track it_manager/engaged", out)


def test_show_json(cli, imported):
    result = cli("leads", "show", imported, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["lead"]["email"] == imported and data["lead"]["custom"] == {"score": "91"}
    assert data["stage_history"][0]["to"] == "inquiry"
    [enrollment] = data["enrollments"]
    assert enrollment["program"] == "acme-nurture" and enrollment["next_email"] == "welcome_it"
    assert enrollment["due_at"] == "2026-03-02T14:00:00+00:00"
    assert enrollment["due_local"] == "2026-03-02T09:00:00-05:00"
    assert [e["kind"] for e in data["events"]][:2] == ["enrolled", "move"]


def test_show_unknown_lead_exits_1(cli, loaded_program):
    result = cli("leads", "show", "nobody@globex.example")
    assert result.exit_code == 1
    assert "no lead with email 'nobody@globex.example'" in result.stderr
