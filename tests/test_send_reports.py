"""`nurture send-runs` and `nurture forecast`: what happened, and what will go out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from launching import launch_all

from engine.flows.leads import upsert_lead
from engine.programs.service import load_program
from engine.sending import outbox
from engine.sending.suppression import suppress

MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)  # 09:00 in Paris


@pytest.fixture
def queued(db, sample_program, monkeypatch):
    """Four leads whose welcome email is queued on Monday; one sent, one held, one skipped."""
    with db.session() as s:
        load_program(session=s, directory=sample_program, now=MONDAY)
        launch_all(s)
        for name in ("ann", "bob", "cy", "dee"):
            upsert_lead(session=s, fields={"email": f"{name}@globex.example", "title": "CIO"},
                        now=MONDAY, actor="test", program="acme-nurture")
        suppress(session=s, email="dee@globex.example", reason="unsubscribed", source="test",
                 now=MONDAY)
    with db.session() as s:
        rows = outbox.claim_due(session=s, worker="w", now=MONDAY, limit=3)
        outbox.mark_sent(session=s, row_id=rows[0].id, worker="w", now=MONDAY)
        outbox.mark_held(session=s, row_id=rows[1].id, worker="w", now=MONDAY,
                         until=MONDAY + timedelta(days=1), reason="frequency cap: 3 sends in 7 days")
        outbox.mark_skipped(session=s, row_id=rows[2].id, worker="w", now=MONDAY,
                            reason="consent withdrawn")
    monkeypatch.setattr("engine.db.utcnow", lambda: MONDAY + timedelta(hours=2))


def test_send_runs_count_each_outcome_with_its_reason(cli, queued):
    result = cli("send-runs", "--json")
    assert result.exit_code == 0, result.output
    [run] = json.loads(result.stdout)
    assert run["hour"] == "2026-11-02T08:00:00+00:00"
    assert {k: run[k] for k in ("due", "sent", "held", "skipped", "pending")} == {
        "due": 4, "sent": 1, "held": 1, "skipped": 1, "pending": 1}
    assert run["reasons"] == {"held: frequency cap: 3 sends in 7 days": 1,
                              "skipped: consent withdrawn": 1}
    table = cli("send-runs")
    assert "2026-11-02 08:00" in table.stdout and "consent withdrawn" in table.stdout


def test_forecast_lists_queued_sends_and_coming_steps_without_sending(cli, queued):
    result = cli("forecast", "--hours", "80", "--json")
    assert result.exit_code == 0, result.output
    lines = json.loads(result.stdout)
    # now: the held and the pending welcome (dee's is suppressed); Thursday: every guide_it
    assert {(line["hour"], line["email"], line["sends"], line["suppressed"]) for line in lines} == {
        ("2026-11-02T10:00:00+00:00", "welcome_it", 1, 1),
        ("2026-11-03T08:00:00+00:00", "welcome_it", 1, 0),
        ("2026-11-05T08:00:00+00:00", "guide_it", 4, 1),
    }
    again = cli("forecast", "--hours", "80", "--json")
    assert json.loads(again.stdout) == lines  # nothing was sent or changed


def test_send_runs_show_uncertain_deliveries_and_duplicates_in_the_cli_and_the_api(
        cli, db, queued, keys, monkeypatch):
    from sqlalchemy import update

    monkeypatch.setattr("engine.web.api.utcnow", lambda: MONDAY + timedelta(hours=2))

    from engine.sending.models import OutboxMessage
    from engine.web.app import create_app

    with db.session() as s:
        s.execute(update(OutboxMessage).where(OutboxMessage.status == "sent")
                  .values(delivery_unknown=True, deliveries=2))
    [run] = json.loads(cli("send-runs", "--json").stdout)
    assert (run["unknown"], run["duplicates"]) == (1, 1)
    assert "1 send(s) the server may have had twice" in cli("send-runs").stdout
    app = create_app()
    answer = app.test_client().get("/api/v1/send-runs?hours=24",
                                   headers={"Authorization": f"Bearer {keys['marketer']}"})
    assert answer.status_code == 200
    [item] = answer.get_json()["items"]
    assert (item["sent"], item["unknown"], item["duplicates"]) == (1, 1, 1)
    for bad in ("0", "9999", "x", "-1", "1" * 50):
        refused = app.test_client().get(f"/api/v1/send-runs?hours={bad}",
                                        headers={"Authorization": f"Bearer {keys['marketer']}"})
        assert refused.status_code == 422 and refused.get_json()["field"] == "hours"
    assert app.test_client().get("/api/v1/send-runs", headers={
        "Authorization": f"Bearer {keys['sales']}"}).status_code == 403
    app.extensions["nurture.db"].dispose()
