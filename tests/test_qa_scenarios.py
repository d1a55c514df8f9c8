"""Scenario tables: parsing with file:line errors, the walk through the real decision logic,
the first difference in words, findings, and `nurture qa scenarios`."""

from __future__ import annotations

import json
import textwrap
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from defects import planted

from engine.programs.loader import load_program_dir
from engine.programs.spec import Step, Wait
from qa.findings import Severity
from qa.scenarios import (
    DEFAULT_START,
    ScenarioInvalid,
    find_scenario_file,
    load_scenarios,
    run_scenarios,
    scenario_findings,
)
from qa.scenarios_cli import scenarios as scenarios_command

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "assets" / "acme-nurture"
PROGRAM = load_program_dir(SAMPLE).program


def table(tmp_path: Path, text: str, name: str = "scenarios.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def run_one(tmp_path: Path, row: str, program=PROGRAM):
    """Run a one-row table (the row indented as a list item under `scenarios:`)."""
    row = textwrap.dedent(row).lstrip("\n")
    path = table(tmp_path, "scenarios:\n" + textwrap.indent(row, "  "))
    loaded = load_scenarios(path, program)
    return run_scenarios(program, loaded.scenarios, start=loaded.start)[0]


def errors_of(tmp_path: Path, text: str, name: str = "scenarios.yaml") -> list[str]:
    with pytest.raises(ScenarioInvalid) as caught:
        load_scenarios(table(tmp_path, text, name), PROGRAM)
    return [str(error) for error in caught.value.errors]


def with_track(track: str, steps: list[Step]):
    return replace(PROGRAM, tracks={**PROGRAM.tracks, track: tuple(steps)})


# -- the sample ---------------------------------------------------------------------------------

def test_the_program_loader_keeps_the_scenario_table_with_the_files():
    assert find_scenario_file(SAMPLE) == SAMPLE / "scenarios.yaml"
    files = load_program_dir(SAMPLE).files  # stored with each version: the gate runs it
    assert files["scenarios.yaml"] == (SAMPLE / "scenarios.yaml").read_text()


def test_every_scenario_of_the_sample_passes():
    loaded = load_scenarios(SAMPLE / "scenarios.yaml", PROGRAM)
    results = run_scenarios(PROGRAM, loaded.scenarios, start=loaded.start)
    assert len(results) == 17
    assert [(r.scenario.name, r.differences) for r in results if not r.passed] == []
    assert scenario_findings(results, "scenarios.yaml") == []


def test_runs_are_deterministic():
    loaded = load_scenarios(SAMPLE / "scenarios.yaml", PROGRAM)
    first = [r.to_dict() for r in run_scenarios(PROGRAM, loaded.scenarios)]
    again = [r.to_dict() for r in run_scenarios(PROGRAM, loaded.scenarios)]
    assert first == again


def test_a_scenario_walks_the_real_decision_logic(tmp_path):
    result = run_one(tmp_path, """
        - name: silent
          lead: {title: CIO}
          expect: {track: it_manager/reengage}
    """)
    assert result.passed
    assert result.sent == {"welcome_it": 0, "guide_it": 3, "checklist_it": 7,
                           "still_interested_it": 14, "breakup_it": 18}
    assert result.final["status"] == "completed"
    moves = [e.reason for e in result.path if e.action == "move"]
    assert moves[-1].startswith("non-responder")


# -- first difference, in words -----------------------------------------------------------------

def test_an_email_sent_late_is_named_with_both_days(tmp_path):
    late = with_track("it_manager/inquiry", [Step(email="welcome_it"),
                                             Step(wait=Wait(days=4)), Step(email="guide_it")])
    result = run_one(tmp_path, """
        - name: late guide
          lead: {title: CIO}
          expect: {emails: {welcome_it: 0, guide_it: 3}}
    """, program=late)
    assert not result.passed
    assert result.first_difference == "expected guide_it on day 3, it was sent on day 4"


def test_on_a_day_means_that_day_and_by_a_day_means_on_or_before(tmp_path):
    result = run_one(tmp_path, """
        - name: windows
          lead: {title: CIO}
          expect:
            emails: {guide_it: "by 3", checklist_it: "by 9", still_interested_it: "14..15",
                     welcome_it: 1}
    """)
    assert result.differences == ["expected welcome_it on day 1, it was sent on day 0"]
    result = run_one(tmp_path, """
        - name: too early
          lead: {title: CIO}
          expect: {emails: {checklist_it: "8..9", guide_it: "by 2"}}
    """)
    assert result.differences == ["expected guide_it by day 2, it was sent on day 3",
                                  ("expected checklist_it between day 8 and day 9, "
                                  "it was sent on day 7")]


def test_differences_come_earliest_first_then_the_final_state(tmp_path):
    result = run_one(tmp_path, """
        - name: everything wrong
          lead: {title: CIO}
          expect:
            exit: unsubscribed
            track: it_manager/engaged
            not_sent: [breakup_it]
            emails: {roi_it: 20, guide_it: 3}
    """)
    assert result.differences == [
        "expected breakup_it never to be sent, it was sent on day 18",
        "expected roi_it on day 20, it was never sent (in 30 days)",
        "expected track it_manager/engaged, ended in it_manager/reengage",
        "expected exit unsubscribed, it did not exit (ended completed)",
    ]
    assert result.first_difference == result.differences[0]


def test_exit_stage_and_status_differences(tmp_path):
    result = run_one(tmp_path, """
        - name: went to sales
          lead: {title: CIO}
          events: ["2 stage sal"]
          expect: {exit: none, stage: engaged, status: active}
    """)
    assert result.differences == ["expected stage engaged, ended in sal",
                                  "expected status active, ended exited",
                                  "expected no exit, it exited (stage sal) on day 2"]
    result = run_one(tmp_path, """
        - name: bounced
          lead: {title: CIO}
          events: ["2 bounced"]
          expect: {exit: "stage sal"}
    """)
    assert result.differences == ["expected exit stage sal, it exited (hard_bounce) on day 2"]


def test_events_run_in_day_order_whatever_their_order_in_the_table(tmp_path):
    result = run_one(tmp_path, """
        - name: out of order
          lead: {title: CIO}
          events: ["3 stage sal", "1 stage engaged"]
          expect: {emails: {case_study_it: 1}, exit: no}
    """)
    # `no` is YAML's false: read as no exit
    assert result.differences == ["expected no exit, it exited (stage sal) on day 3"]


def test_failed_scenarios_are_blockers_located_by_name(tmp_path):
    result = run_one(tmp_path, """
        - name: never engaged
          lead: {title: CIO}
          expect: {emails: {roi_it: 5}}
    """)
    [finding] = scenario_findings([result], "scenarios.yaml")
    assert (finding.severity, finding.code, finding.asset, finding.location) == (
        Severity.BLOCKER, "scenario.failed", "scenarios.yaml", "never engaged")
    assert finding.message == "line 2: expected roi_it on day 5, it was never sent (in 30 days)"


def test_a_planted_defect_fails_its_scenario():
    program = load_program_dir(planted("failing-scenario")).program
    loaded = load_scenarios(planted("failing-scenario") / "scenarios.yaml", program)
    failed = [r for r in run_scenarios(program, loaded.scenarios) if not r.passed]
    assert [(r.scenario.name, r.scenario.line, r.first_difference) for r in failed] == [
        ("IT lead handed to sales, rejected, recycled", 49,
         "expected benchmark_it on day 21, it was never sent (in 30 days)")]


# -- advance rules and custom fields, as live ---------------------------------------------------

def test_a_response_in_a_row_advances_the_lead_as_the_live_engine_will(tmp_path):
    result = run_one(tmp_path, """
        - name: clicks
          lead: {title: CIO}
          events: ["3.5 clicked"]
          expect: {stage: engaged, track: it_manager/engaged, emails: {case_study_it: 3}}
    """)
    assert result.passed, result.differences
    [advance] = [e for e in result.path if e.action == "advance"]
    assert advance.reason == "advance inquiry -> engaged on click"


def test_idle_rules_apply_as_the_simulated_clock_passes(tmp_path):
    result = run_one(tmp_path, """
        - name: quiet
          lead: {title: CIO, stage: engaged}
          days: 95
          expect: {stage: recycled, emails: {product_update: "90..91"}}
    """)
    assert result.passed, result.differences
    [advance] = [e for e in result.path if e.action == "advance"]
    assert (advance.event, advance.at - DEFAULT_START) == ("idle", timedelta(days=90))


def test_a_stage_change_an_advance_already_made_is_an_error_at_its_line(tmp_path):
    errors = errors_of(tmp_path, """
        scenarios:
          - name: clicks, then engaged by hand
            lead: {title: CIO}
            events:
              - 3 clicked
              - 5 stage engaged
            expect: {stage: engaged}
    """)
    assert errors == [("scenarios.yaml:6: scenario 'clicks, then engaged by hand': day 5: lead is "
                      "already in stage engaged (advance inquiry -> engaged on click, day 3)")]


def test_a_custom_field_of_a_row_is_read_by_persona_rules(tmp_path):
    by_department = replace(PROGRAM, personas={
        **PROGRAM.personas, "it_manager": replace(PROGRAM.personas["it_manager"],
                                                  match={"department_in": ["engineering"]})})
    result = run_one(tmp_path, """
        - name: engineer
          lead: {title: Analyst, Department: Engineering}
          expect: {emails: {welcome_it: 0}}
    """, program=by_department)
    assert result.passed, result.differences
    assert result.final["persona"] == "it_manager"


def test_a_bad_custom_field_of_a_row_is_refused_as_an_import_would(tmp_path):
    errors = errors_of(tmp_path, """
        scenarios:
          - name: a
            lead:
              title: CIO
              team size!: 4
            expect: {stage: inquiry}
    """)
    assert errors == [("scenarios.yaml:5: scenario 'a': lead.team size!: bad custom field name "
                      "'team size!' (letters, digits and _)")]


# -- malformed tables ---------------------------------------------------------------------------

def test_bad_yaml_names_its_line(tmp_path):
    errors = errors_of(tmp_path, """
        scenarios:
          - name: a
            lead: {title: CIO
            expect: {stage: inquiry}
    """)
    assert len(errors) == 1
    assert errors[0].startswith("scenarios.yaml:4: YAML syntax error")


def test_every_error_is_reported_at_once_with_its_line(tmp_path):
    errors = errors_of(tmp_path, """
        days: 20
        scenarios:
          - name: unknown email
            lead: {title: CIO}
            expect:
              emails: {welcome_it: 0, webinar: 3}
          - name: unknown event
            events:
              - {day: 1, event: replied}
            expect: {stage: inquiry}
          - name: negative day
            events: ["-1 opened"]
            expect: {stage: inquiry}
          - name: missing expect
            lead: {title: CIO}
    """)
    assert errors == [
        ("scenarios.yaml:6: scenario 'unknown email': expect.emails.webinar: "
         "unknown email 'webinar'"),
        ("scenarios.yaml:9: scenario 'unknown event': event 1: unknown event 'replied' (expected "
        "one of assist, bounced, clicked, consumed, form_submitted, opened, page_viewed, "
        "persona, stage, talk_to_sales, unsubscribed)"),
        "scenarios.yaml:12: scenario 'negative day': event 1: day must be 0 or more, got -1.0",
        ("scenarios.yaml:14: scenario 'missing expect': missing 'expect' (emails, not_sent, "
        "track, stage, status or exit)"),
    ]


@pytest.mark.parametrize(("row", "message"), [
    ("- {name: a, lead: {persona: cto}, expect: {stage: inquiry}}",
     "scenario 'a': unknown persona 'cto' (expected one of it_manager, finance)"),
    ("- {name: a, lead: {stage: lead}, expect: {stage: inquiry}}",
     "scenario 'a': unknown stage 'lead'"),
    ("- {name: a, lead: {timezone: Mars/Base}, expect: {stage: inquiry}}",
     "scenario 'a': unknown time zone 'Mars/Base'"),
    ("- {name: a, events: ['3 stage customer'], expect: {stage: inquiry}}",
     "scenario 'a': day 3: illegal stage change inquiry -> customer"),
    ("- {name: a, events: ['3 consumed nothing'], expect: {stage: inquiry}}",
     "scenario 'a': event 1: consumed needs a known email in detail, got 'nothing'"),
    ("- {name: a, events: ['3 bounced maybe'], expect: {stage: inquiry}}",
     "scenario 'a': event 1: bounced takes hard or soft in detail, got 'maybe'"),
    ("- {name: a, events: ['3 assist nowhere'], expect: {stage: inquiry}}",
     "scenario 'a': event 1: assist needs a track in detail, got 'nowhere'"),
    ("- {name: a, events: ['3 persona cto'], expect: {stage: inquiry}}",
     "scenario 'a': event 1: persona needs a persona in detail, got 'cto'"),
    ("- {name: a, events: ['40 opened'], expect: {stage: inquiry}}",
     "scenario 'a': event 1: day 40.0 is after the scenario's last day (30)"),
    ("- {name: a, events: ['soon opened'], expect: {stage: inquiry}}",
     "scenario 'a': event 1: day must be a number of days from the start, got 'soon'"),
    ("- {name: a, expect: {emails: {guide_it: 30}}}",
     "scenario 'a': expect.emails.guide_it: day 30 is after the scenario's last day"),
    ("- {name: a, expect: {emails: {guide_it: soon}}}",
     "scenario 'a': expect.emails.guide_it: 'soon' is not a day"),
    ("- {name: a, expect: {not_sent: [webinar]}}",
     "scenario 'a': expect.not_sent: unknown email 'webinar'"),
    ("- {name: a, expect: {track: it_manager/mql}}",
     "scenario 'a': expect.track: unknown track 'it_manager/mql'"),
    ("- {name: a, expect: {exit: mql}}",
     "scenario 'a': expect.exit: unknown exit 'mql'"),
    ("- {name: a, expect: {status: done}}",
     "scenario 'a': expect.status: unknown status 'done'"),
    ("- {name: a, expect: {stage: inquiry}, expected: {}}",
     "scenario 'a': unknown key 'expected'"),
    ("- {lead: {title: CIO}, expect: {stage: inquiry}}", "scenario 1: missing 'name'"),
    ("- {name: a, days: 0, expect: {stage: inquiry}}",
     "days must be a whole number of days from 1 to 3660, got 0"),
])
def test_each_kind_of_bad_row_is_named(tmp_path, row, message):
    errors = errors_of(tmp_path, "scenarios:\n  " + row + "\n")
    assert len(errors) == 1
    assert errors[0].startswith("scenarios.yaml:2: " + message), errors[0]


def test_duplicate_names_and_an_empty_table_are_refused(tmp_path):
    assert errors_of(tmp_path, """
        scenarios:
          - {name: a, expect: {stage: inquiry}}
          - {name: a, expect: {stage: inquiry}}
    """) == ["scenarios.yaml:3: scenario 'a': name already used on line 2"]
    assert errors_of(tmp_path, "start: someday\nscenarios: []\n") == [
        "scenarios.yaml:1: start: an ISO date or date-time, e.g. 2025-01-06",
        ("scenarios.yaml:2: missing 'scenarios': a list of rows, each with name, lead, events "
        "and expect"),
    ]


# -- CSV ---------------------------------------------------------------------------------------

CSV = (
    "name,title,stage,days,events,expect_emails,expect_not_sent,expect_track,expect_exit\n"
    "reads everything,Head of IT,,30,0.5 opened; 3.5 opened; 7.5 opened,"
    "welcome_it=0; guide_it=by 3; benchmark_it=14,breakup_it,it_manager/inquiry,none\n"
    "goes to sales,CFO,,20,2 stage sal,welcome_finance=0,cost_guide_finance,,sal\n"
)


def test_a_csv_table_runs_like_yaml(tmp_path):
    loaded = load_scenarios(table(tmp_path, CSV, "scenarios.csv"), PROGRAM)
    assert [(s.name, s.line, s.days) for s in loaded.scenarios] == [
        ("reads everything", 2, 30), ("goes to sales", 3, 20)]
    assert loaded.scenarios[0].lead == {"title": "Head of IT"}
    results = run_scenarios(PROGRAM, loaded.scenarios)
    assert [r.differences for r in results] == [[], []]


def test_a_csv_table_may_use_semicolons(tmp_path):
    text = CSV.replace(",", "\t").replace(";", ",").replace("\t", ";")
    loaded = load_scenarios(table(tmp_path, text, "scenarios.csv"), PROGRAM)
    assert [len(s.events) for s in loaded.scenarios] == [3, 1]
    assert [r.differences for r in run_scenarios(PROGRAM, loaded.scenarios)] == [[], []]


def test_csv_errors_name_the_row_line(tmp_path):
    bad = CSV.replace("guide_it=by 3", "guide=by 3").replace("2 stage sal", "2 stage won")
    with pytest.raises(ScenarioInvalid) as caught:
        load_scenarios(table(tmp_path, bad, "scenarios.csv"), PROGRAM)
    assert [str(e) for e in caught.value.errors] == [
        "scenarios.csv:2: scenario 'reads everything': expect.emails.guide: unknown email 'guide'",
        ("scenarios.csv:3: scenario 'goes to sales': event 1: stage needs a stage in detail, got "
        "'won' (expected one of inquiry, engaged, mql, sal, opportunity, customer, recycled, "
        "disqualified)"),
    ]
    no_expect = "name,title\nquiet,CIO\n"
    with pytest.raises(ScenarioInvalid) as caught:
        load_scenarios(table(tmp_path, no_expect, "scenarios.csv"), PROGRAM)
    assert [str(e) for e in caught.value.errors] == [
        ("scenarios.csv:2: scenario 'quiet': missing 'expect' (emails, not_sent, track, stage, "
        "status or exit)")]


# -- the command --------------------------------------------------------------------------------

def invoke(*args: str):
    return CliRunner().invoke(scenarios_command, [str(a) for a in args])


def test_command_passes_the_sample_and_prints_coverage():
    result = invoke(SAMPLE)
    assert result.exit_code == 0, result.output
    assert "17 passed, 0 failed" in result.output
    assert "coverage: tracks 8/8, steps 26/26, rules 14/14" in result.output
    assert "program.empty-cell" in result.output


def test_command_fails_on_a_failing_scenario_and_says_why():
    result = invoke(planted("failing-scenario"), "--json")
    assert result.exit_code == 1
    review = json.loads(result.output)
    failed = [s for s in review["scenarios"] if not s["passed"]]
    assert [(s["name"], s["first_difference"]) for s in failed] == [
        ("IT lead handed to sales, rejected, recycled",
         "expected benchmark_it on day 21, it was never sent (in 30 days)")]
    assert review["passed"] is False
    text = CliRunner().invoke(scenarios_command, [str(planted("failing-scenario"))],
                              env={"COLUMNS": "250"}).output
    assert "16 passed, 1 failed" in text
    assert "expected benchmark_it on day 21, it was never sent" in text


def test_command_reports_an_invalid_table_with_file_and_line(tmp_path):
    path = table(tmp_path, "scenarios:\n  - {name: a, expect: {emails: {nope: 1}}}\n")
    result = invoke(SAMPLE, "--file", path)
    assert result.exit_code == 1
    assert "scenarios.yaml:2: scenario 'a': expect.emails.nope: unknown email 'nope'" in (
        result.stderr)


def test_command_exits_1_on_a_static_blocker():
    result = invoke(planted("dead-end-track"), "--json")
    assert result.exit_code == 1
    review = json.loads(result.output)
    assert all(s["passed"] for s in review["scenarios"])
    assert [f["location"] for f in review["findings"] if f["severity"] == "blocker"] == [
        "track it_manager/mql"]


def test_command_start_moves_the_clock(tmp_path):
    result = invoke(SAMPLE, "--start", "2025-01-07", "--json")  # a Tuesday: days shift
    assert result.exit_code == 1
    assert json.loads(result.output)["start"] == "2025-01-07T00:00:00+00:00"


def test_command_needs_a_table_for_a_program_name():
    result = invoke("acme-nurture")
    assert result.exit_code == 2
    assert "not a program directory" in result.output


def test_default_start_is_a_fixed_monday():
    assert DEFAULT_START.weekday() == 0 and DEFAULT_START.utcoffset() == timedelta(0)


def test_command_runs_a_loaded_program_with_its_table(loaded_program, env):
    result = invoke(loaded_program, "--file", SAMPLE / "scenarios.yaml", "--json")
    assert result.exit_code == 0, result.output
    review = json.loads(result.output)
    assert len(review["scenarios"]) == 17 and review["passed"]
    missing = invoke("no-such-program", "--file", SAMPLE / "scenarios.yaml")
    assert missing.exit_code == 1
    assert "no program named 'no-such-program'" in missing.output


def test_a_loaded_program_is_found_by_name_beside_a_subdirectory_of_that_name(
        loaded_program, env, tmp_path, monkeypatch):
    (tmp_path / "work" / loaded_program).mkdir(parents=True)  # no program.yaml: not a program
    monkeypatch.chdir(tmp_path / "work")
    result = invoke(loaded_program, "--file", SAMPLE / "scenarios.yaml", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)["scenarios"]) == 17
