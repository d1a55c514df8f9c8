"""`nurture simulate` as a marketer uses it to check a program's paths before launch."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

LEADS = """email,first_name,title,timezone,stage
ada@globex.example,Ada,IT Director,Europe/Paris,inquiry
bob@initech.example,Bob,CFO,America/New_York,inquiry
"""


@pytest.fixture
def leads_csv(tmp_path):
    path = tmp_path / "leads.csv"
    path.write_text(LEADS)
    return path


def run(cli, program, leads, *extra):
    result = cli("simulate", program, "--leads", leads, "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def of(entries, lead, action=None):
    return [e for e in entries if e["lead"] == lead and (action is None or e["action"] == action)]


def test_sends_follow_the_track_inside_the_send_window(cli, sample_program, leads_csv):
    entries = run(cli, sample_program, leads_csv, "--days", "21", "--start", "2026-11-02T00:00:00")
    ada = of(entries, "ada@globex.example", "send")[:3]
    assert [e["asset"] for e in ada] == ["welcome_it", "guide_it", "checklist_it"]
    assert all(e["track"] == "it_manager/inquiry" for e in ada)
    bob = of(entries, "bob@initech.example", "send")
    assert bob[0]["asset"] == "welcome_finance" and bob[0]["track"] == "finance/inquiry"
    for entry, zone in [(e, "Europe/Paris") for e in ada] + [(e, "America/New_York") for e in bob]:
        local = datetime.fromisoformat(entry["at"]).astimezone(ZoneInfo(zone))
        assert local.weekday() < 5 and 9 <= local.hour < 17, entry
    times = [datetime.fromisoformat(e["at"]) for e in ada]
    assert (times[1] - times[0]).days >= 3 and (times[2] - times[1]).days >= 4


def test_non_responders_move_to_their_reengage_track(cli, sample_program, leads_csv, tmp_path):
    leads = tmp_path / "it.csv"
    leads.write_text("email,title\nada@globex.example,CIO\ncy@globex.example,CIO\n")
    events = tmp_path / "events.csv"
    events.write_text("day,email,event\n3,cy@globex.example,opened\n")
    entries = run(cli, sample_program, leads, "--events", events, "--days", "21",
                  "--start", "2026-11-02")
    ada = of(entries, "ada@globex.example")
    assert [e["asset"] for e in ada if e["action"] == "send"] == [
        "welcome_it", "guide_it", "checklist_it", "still_interested_it", "breakup_it"]
    move = next(e for e in ada if e["action"] == "move" and e["track"] == "it_manager/reengage")
    assert move["reason"] == "non-responder: 3 sends without response"
    cy = of(entries, "cy@globex.example", "send")
    assert [e["asset"] for e in cy] == ["welcome_it", "guide_it", "checklist_it", "benchmark_it"]


def test_stage_change_moves_to_the_new_cell_and_exit_stops_sends(cli, sample_program, leads_csv, tmp_path):
    events = tmp_path / "events.csv"
    events.write_text("day,email,event,detail\n"
                      "1,ada@globex.example,stage,engaged\n"
                      "2,bob@initech.example,talk_to_sales,\n"
                      "3,ada@globex.example,unsubscribed,\n")
    entries = run(cli, sample_program, leads_csv, "--events", events, "--days", "30",
                  "--start", "2026-11-02")
    ada = of(entries, "ada@globex.example")
    move = next(e for e in ada if e["action"] == "move" and e["track"] == "it_manager/engaged")
    assert "stage engaged" in move["reason"]
    sends = [e["asset"] for e in ada if e["action"] == "send"]
    assert sends[:2] == ["welcome_it", "case_study_it"]
    exit_at = next(e["at"] for e in ada if e["action"] == "exit")
    assert not [e for e in ada if e["action"] == "send" and e["at"] > exit_at]
    bob = of(entries, "bob@initech.example")
    assert [e["action"] for e in bob if e["event"] == "talk_to_sales"] == ["notify", "exit"]
    assert not [e for e in bob if e["action"] == "send" and e["at"] > bob[-1]["at"]]


def test_sends_stay_at_local_office_hours_across_dst(cli, sample_program, tmp_path):
    leads = tmp_path / "leads.csv"
    leads.write_text("email,title,timezone\nada@globex.example,CIO,Europe/Paris\n")
    # Paris moves to summer time on 2026-03-29: the first send is before, the second after.
    entries = run(cli, sample_program, leads, "--days", "10", "--start", "2026-03-27T12:00:00")
    sends = of(entries, "ada@globex.example", "send")
    local = [datetime.fromisoformat(e["at"]).astimezone(ZoneInfo("Europe/Paris")) for e in sends]
    assert local[0].utcoffset().total_seconds() == 3600 and local[1].utcoffset().total_seconds() == 7200
    assert all(9 <= t.hour < 17 and t.weekday() < 5 for t in local)


def test_bad_events_file_lists_every_bad_line(cli, sample_program, leads_csv, tmp_path):
    events = tmp_path / "events.csv"
    events.write_text("day,email,event,detail\n"
                      "x,ada@globex.example,opened,\n"
                      "1,nobody@example.com,opened,\n"
                      "1,ada@globex.example,danced,\n"
                      "1,ada@globex.example,stage,hot\n")
    result = cli("simulate", sample_program, "--leads", leads_csv, "--events", events, "--days", "5")
    assert result.exit_code == 1
    for line, words in [(2, "day must be a number"), (3, "unknown lead 'nobody@example.com'"),
                        (4, "unknown event 'danced'"), (5, "unknown stage 'hot'")]:
        assert f"events.csv:{line}: " in result.stderr and words in result.stderr


def test_text_output_shows_each_lead_path(cli, sample_program, leads_csv):
    result = cli("simulate", sample_program, "--leads", leads_csv, "--days", "7", "--start", "2026-11-02")
    assert result.exit_code == 0, result.output
    assert "ada@globex.example" in result.stdout and "welcome_it" in result.stdout
    assert "Mon 2026-11-02 09:00 CET" in result.stdout


def test_a_custom_column_is_a_field_persona_rules_read(cli, sample_program, tmp_path):
    path = sample_program / "program.yaml"
    text = path.read_text()
    rule = "match: {title_contains: [IT, CIO, infrastructure, sysadmin, DevOps]}"
    assert rule in text
    path.write_text(text.replace(rule, "match: {department_in: [engineering]}"))
    leads = tmp_path / "leads.csv"
    leads.write_text("email,title,department\nana@globex.example,Analyst, Engineering \n"
                     "bo@globex.example,Analyst,Sales\n")
    entries = run(cli, sample_program, leads, "--days", "1", "--start", "2026-11-02")
    [ana] = of(entries, "ana@globex.example", "send")
    assert (ana["asset"], ana["track"]) == ("welcome_it", "it_manager/inquiry")
    [bo] = of(entries, "bo@globex.example", "send")
    assert (bo["asset"], bo["track"]) == ("welcome_finance", "finance/inquiry")


def test_a_click_advances_an_inquiry_to_engaged_with_the_rule_in_words(cli, sample_program,
                                                                       tmp_path):
    leads = tmp_path / "leads.csv"
    leads.write_text("email,title\nada@globex.example,CIO\n")
    events = tmp_path / "events.csv"
    events.write_text("day,email,event\n3.5,ada@globex.example,clicked\n")
    entries = run(cli, sample_program, leads, "--events", events, "--days", "14",
                  "--start", "2026-11-02")
    ada = of(entries, "ada@globex.example")
    at = next(i for i, e in enumerate(ada) if e["action"] == "advance")
    advance, move, send = ada[at:at + 3]
    assert advance["at"] == "2026-11-05T12:00:00+00:00" and advance["event"] == "clicked"
    assert advance["reason"] == "advance inquiry -> engaged on click"
    assert advance["rule"] == "advance inquiry, recycled -> engaged on click, form_submitted, consumed"
    assert (move["action"], move["track"], move["reason"]) == ("move", "it_manager/engaged",
                                                               "stage engaged")
    assert (send["action"], send["asset"]) == ("send", "case_study_it")
    assert "checklist_it" not in [e["asset"] for e in ada if e["action"] == "send"]


def test_an_engaged_lead_silent_for_the_idle_time_is_recycled_as_time_passes(cli, sample_program,
                                                                            tmp_path):
    leads = tmp_path / "leads.csv"
    leads.write_text("email,title,stage\nada@globex.example,CIO,engaged\n"
                     "bea@globex.example,CIO,engaged\n")
    events = tmp_path / "events.csv"
    events.write_text("day,email,event\n50,bea@globex.example,opened\n")
    entries = run(cli, sample_program, leads, "--events", events, "--days", "100",
                  "--start", "2026-11-02")
    ada = of(entries, "ada@globex.example")
    [advance] = of(entries, "ada@globex.example", "advance")
    assert advance["at"] == "2027-01-31T00:00:00+00:00"  # 90 days after entering engaged
    assert advance["event"] == "idle"
    assert advance["reason"] == "advance engaged -> recycled after 90d without a response"
    after = [e for e in ada if e["at"] >= advance["at"] and e["action"] in ("move", "send")]
    assert [(e["action"], e["track"], e["asset"]) for e in after[:2]] == [
        ("move", "it_manager/recycled", None), ("send", "it_manager/recycled", "product_update")]
    assert of(entries, "bea@globex.example", "advance") == []  # her open restarts the 90 days


def test_a_scripted_stage_change_an_advance_made_illegal_is_rejected(cli, sample_program,
                                                                     tmp_path):
    leads = tmp_path / "leads.csv"
    leads.write_text("email,title\nada@globex.example,CIO\n")
    events = tmp_path / "events.csv"
    events.write_text("day,email,event,detail\n1,ada@globex.example,clicked,\n"
                      "2,ada@globex.example,stage,engaged\n")
    entries = run(cli, sample_program, leads, "--events", events, "--days", "5",
                  "--start", "2026-11-02")
    [rejected] = of(entries, "ada@globex.example", "rejected")
    assert rejected["reason"] == "lead is already in stage engaged"
