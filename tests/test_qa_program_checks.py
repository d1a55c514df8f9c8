"""Static checks of a program's logic and the path coverage of its scenarios, on the sample,
on planted-defect copies of it (tests/defects.py), and on a tiny program."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from defects import planted

from engine.programs.loader import load_program_dir
from engine.programs.spec import AdvanceRule, NonResponders, Rules, Step, Wait
from qa.findings import Severity
from qa.program_checks import check_program, coverage, coverage_findings, review_program
from qa.scenarios import load_scenarios, run_scenarios

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "assets" / "acme-nurture"
PROGRAM = load_program_dir(SAMPLE).program


def located(findings) -> set[tuple[str, str, str]]:
    return {(f.severity.value, f.code, f.location) for f in findings}


def test_the_sample_has_no_blocker_and_names_its_empty_mql_cells():
    assert located(check_program(PROGRAM)) == {
        ("warning", "program.empty-cell", "cell it_manager/mql"),
        ("warning", "program.empty-cell", "cell finance/mql"),
        *(("info", "program.exit-cell", f"cell {persona}/{stage}")
          for persona in ("it_manager", "finance")
          for stage in ("sal", "opportunity", "customer", "disqualified")),
    }


@pytest.mark.parametrize(("defect", "severity", "code", "location", "words"), [
    ("dead-end-track", "blocker", "program.dead-end-track", "track it_manager/mql",
     "holds only waits"),
    ("unreachable-track", "warning", "program.unreachable-track", "track it_manager/sal",
     "stage sal exits the program"),
    ("empty-cell", "warning", "program.empty-cell", "cell finance/recycled",
     "no track for finance/recycled"),
    ("move-loop", "warning", "program.move-loop",
     "rules.non_responders.move_to (it_manager/engaged)", "the track of stage engaged"),
    ("wait-over-year", "warning", "program.wait-over-year", "track it_manager/reengage step 2",
     "add up to 400 days by step 2"),
    ("unused-email", "warning", "program.unused-email", "emails.webinar_it",
     "no track sends it"),
])
def test_each_planted_defect_is_named_with_its_location(defect, severity, code, location, words):
    findings = check_program(load_program_dir(planted(defect)).program)
    [finding] = [f for f in findings if (f.code, f.location) == (code, location)]
    assert finding.severity.value == severity
    assert finding.asset == "program.yaml"
    assert words in finding.message
    assert (code, location) not in {(f.code, f.location) for f in check_program(PROGRAM)}


def test_a_side_track_reached_only_through_sla_stalled_track_is_reachable():
    findings = check_program(load_program_dir(planted("move-loop")).program)
    assert not [f for f in findings if f.code == "program.unreachable-track"]


def test_a_track_without_steps_is_a_dead_end_but_an_unreachable_one_is_only_unreachable():
    program = replace(PROGRAM, tracks={**PROGRAM.tracks, "finance/mql": (),
                                       "finance/customer": ()})
    found = located(check_program(program))
    assert ("blocker", "program.dead-end-track", "track finance/mql") in found
    assert ("warning", "program.unreachable-track", "track finance/customer") in found
    assert not any(code == "program.dead-end-track" and where == "track finance/customer"
                   for _, code, where in found)


def test_waits_of_exactly_a_year_pass_and_one_hour_more_is_flagged_where_it_crosses():
    def waits(*texts: str):
        steps = [Step(email="product_update")]
        for text in texts:
            steps += [Step(wait=Wait.parse(text)), Step(email="budget_planning_finance")]
        return replace(PROGRAM, tracks={**PROGRAM.tracks, "finance/recycled": tuple(steps[:4])})

    assert not [f for f in check_program(waits("200d", "165d"))
                if f.code == "program.wait-over-year"]
    [finding] = [f for f in check_program(waits("200d", "165d1h"))
                 if f.code == "program.wait-over-year"]
    assert finding.location == "track finance/recycled step 4"


def test_move_targets_a_persona_lacks_are_named():
    tracks = {k: v for k, v in PROGRAM.tracks.items() if k not in ("finance/reengage",
                                                                   "finance/engaged")}
    found = located(check_program(replace(PROGRAM, tracks=tracks)))
    assert ("warning", "program.move-target-missing",
            "rules.non_responders.move_to (finance)") in found
    assert ("warning", "program.stalled-track-missing", "sla.stalled_track (finance)") in found
    assert not any(where.endswith("(it_manager)") for _, _, where in found)


def test_a_full_track_name_in_move_to_sends_other_personas_across():
    rules = Rules(PROGRAM.rules.exit_on_stages, NonResponders(3, "it_manager/reengage"))
    [finding] = [f for f in check_program(replace(PROGRAM, rules=rules))
                 if f.code == "program.move-cross-persona"]
    assert finding.location == "rules.non_responders.move_to"
    assert "finance leads are sent to a track written for it_manager" in finding.message


def test_a_failing_scenario_is_a_blocker_of_the_review():
    review = review_program(load_program_dir(planted("failing-scenario")).program,
                            planted("failing-scenario"))
    assert [(f.code, f.asset, f.location) for f in review.blockers] == [
        ("scenario.failed", "scenarios.yaml", "IT lead handed to sales, rejected, recycled")]
    assert not review.passed


def test_the_sample_review_passes_with_full_coverage():
    review = review_program(PROGRAM, SAMPLE)
    assert review.passed
    assert review.coverage.counts() == {"tracks": {"covered": 8, "total": 8},
                                        "steps": {"covered": 26, "total": 26},
                                        "rules": {"covered": 14, "total": 14}}
    assert not [f for f in review.findings if f.code.startswith("coverage.")]


def test_a_program_without_a_table_is_untested(tmp_path):
    review = review_program(PROGRAM, tmp_path)
    assert not review.passed
    assert ("warning", "scenario.missing", "program directory") in located(review.findings)


def test_an_invalid_table_blocks_with_its_line(tmp_path):
    (tmp_path / "scenarios.yaml").write_text("scenarios:\n  - {name: a}\n")
    review = review_program(PROGRAM, tmp_path)
    assert [(f.code, f.location) for f in review.blockers] == [("scenario.invalid", "line 2")]
    assert review.coverage is None


# -- coverage on a tiny program -----------------------------------------------------------------

TINY = """
program: tiny
send_window: {days: [mon, tue, wed, thu, fri, sat, sun], from: "00:00", to: "23:59"}
personas:
  dev: {name: Developer}
emails:
  e1: {file: e.mjml, subject: One}
  e2: {file: e.mjml, subject: Two}
  e3: {file: e.mjml, subject: Three}
  e4: {file: e.mjml, subject: Four}
tracks:
  dev/inquiry: [{email: e1}, {wait: 2d}, {email: e2}]
  dev/engaged: [{email: e3}]
  dev/reengage: [{email: e4}]
rules:
  exit_on_stages: [sal]
  non_responders: {after_sends: 2, move_to: reengage}
"""


@pytest.fixture
def tiny(tmp_path):
    (tmp_path / "program.yaml").write_text(TINY)
    (tmp_path / "e.mjml").write_text("<mjml><mj-body></mj-body></mjml>")
    return tmp_path, load_program_dir(tmp_path).program


def tiny_coverage(directory: Path, program, rows: str):
    (directory / "scenarios.yaml").write_text("scenarios:\n" + textwrap.dedent(rows))
    loaded = load_scenarios(directory / "scenarios.yaml", program)
    results = run_scenarios(program, loaded.scenarios)
    assert [r.differences for r in results] == [[]] * len(results)
    return coverage(program, results)


def test_coverage_counts_tracks_steps_and_rules(tiny):
    directory, program = tiny
    cov = tiny_coverage(directory, program, """
      - {name: reads, events: ["0.5 opened"], expect: {emails: {e1: 0, e2: 2}}}
      - {name: to sales, events: ["1 stage sal"], expect: {exit: sal}}
    """)
    assert cov.counts() == {"tracks": {"covered": 1, "total": 3},
                            "steps": {"covered": 3, "total": 5},
                            "rules": {"covered": 1, "total": 3}}
    assert [i.name for i in cov.uncovered()] == [
        "dev/engaged", "dev/engaged step 1", "dev/reengage", "dev/reengage step 1",
        "rules.non_responders: move to dev/reengage", "stage change: dev/engaged"]
    assert [i.scenarios for i in cov.items if i.name == "dev/inquiry"] == [("reads", "to sales")]
    assert [i.scenarios for i in cov.items if i.name == "dev/inquiry step 2"] == [("reads",)]
    assert [(f.severity, f.code, f.location) for f in coverage_findings(cov, "scenarios.yaml")] == [
        (Severity.INFO, "coverage.track", "dev/engaged"),
        (Severity.INFO, "coverage.track", "dev/reengage"),
        (Severity.INFO, "coverage.rule", "rules.non_responders: move to dev/reengage"),
        (Severity.INFO, "coverage.rule", "stage change: dev/engaged"),
    ]


def test_full_coverage_of_the_tiny_program(tiny):
    directory, program = tiny
    cov = tiny_coverage(directory, program, """
      - {name: reads, events: ["0.5 opened"], expect: {emails: {e1: 0, e2: 2}}}
      - {name: engaged reader, events: ["0.5 opened", "1 stage engaged"],
         expect: {emails: {e1: 0, e3: 1}, track: dev/engaged}}
      - {name: silent, events: ["3 stage engaged"],
         expect: {emails: {e4: 3}, not_sent: [e3], track: dev/reengage}}
      - {name: to sales, events: ["1 stage sal"], expect: {exit: sal}}
    """)
    assert cov.uncovered() == []
    [move] = [i for i in cov.items if i.name == "rules.non_responders: move to dev/reengage"]
    assert move.scenarios == ("silent",)


def test_a_wait_after_an_email_received_elsewhere_is_not_exercised(tiny):
    directory, program = tiny
    e1, e2, e4 = Step(email="e1"), Step(email="e2"), Step(email="e4")
    program = replace(program, tracks={**program.tracks, "dev/inquiry": (
        e1, Step(wait=Wait(days=2)), e2, Step(wait=Wait(days=1)), e4)})
    cov = tiny_coverage(directory, program, """
      - {name: read e2 on the site, events: ["0.5 consumed e2", "0.6 opened"],
         expect: {emails: {e1: 0, e4: 2}, not_sent: [e2]}}
    """)
    # e4 takes e2's slot: the wait before e2 is waited, the one after it is skipped with it
    assert [i.name for i in cov.of("step") if i.name.startswith("dev/inquiry") and i.covered] == [
        "dev/inquiry step 1", "dev/inquiry step 2", "dev/inquiry step 5"]


def test_a_trailing_wait_is_exercised_once_the_email_before_it_is_sent(tiny):
    directory, program = tiny
    program = replace(program, tracks={**program.tracks, "dev/engaged": (
        Step(email="e3"), Step(wait=Wait(days=5)))})
    cov = tiny_coverage(directory, program, """
      - {name: engaged, events: ["0.5 opened", "1 stage engaged"], expect: {emails: {e3: 1}}}
    """)
    assert [i.covered for i in cov.of("step") if i.name.startswith("dev/engaged")] == [True, True]


def test_the_pause_of_non_responders_without_a_target_is_a_rule_to_cover(tiny):
    directory, program = tiny
    program = replace(program, rules=Rules(program.rules.exit_on_stages, NonResponders(2)))
    cov = tiny_coverage(directory, program, """
      - {name: silent, events: ["3 stage engaged"], expect: {not_sent: [e3], status: paused}}
    """)
    assert [(i.name, i.scenarios) for i in cov.of("rule") if "non_responders" in i.name] == [
        ("rules.non_responders: pause", ("silent",))]


# -- advance rules ------------------------------------------------------------------------------

def with_advance(*rules: AdvanceRule):
    return replace(PROGRAM, advance=rules)


CLICK = AdvanceRule(("inquiry",), "engaged", on=("click",))


def test_an_advance_to_a_stage_without_a_track_parks_leads():
    found = [f for f in check_program(with_advance(CLICK, AdvanceRule(("inquiry",), "mql",
                                                                      on=("form_submitted",))))
             if f.code.startswith("program.advance")]
    assert [(f.severity, f.location) for f in found] == [(Severity.WARNING, "advance 2")] * 2
    assert found[0].message == ("advance inquiry -> mql on form_submitted: persona it_manager has "
                                "no it_manager/mql track, so its leads are parked there with "
                                "nothing to receive")
    exits = AdvanceRule(("inquiry",), "sal", on=("form_submitted",), page="demo")
    assert not [f for f in check_program(with_advance(exits)) if f.code.startswith("program.advance")]


def test_an_idle_rule_shorter_than_a_wait_of_its_stage_moves_leads_before_their_next_email():
    quiet = AdvanceRule(("inquiry",), "engaged", idle=timedelta(days=5))
    [finding] = [f for f in check_program(with_advance(quiet))
                 if f.code == "program.advance-idle-short"]
    # it_manager/inquiry waits a week before benchmark_it; finance/inquiry at most 3 days
    assert finding.location == "advance 1"
    assert finding.message == ("advance inquiry -> engaged after 5d without a response: "
                               "it_manager/inquiry waits 1w between two emails, so a lead "
                               "following it without a response is moved to engaged before it "
                               "is sent the next one")
    week = AdvanceRule(("inquiry",), "engaged", idle=timedelta(weeks=1))
    assert not [f for f in check_program(with_advance(week)) if f.code.startswith("program.advance")]


def test_rules_that_never_apply_are_named():
    page = AdvanceRule(("inquiry",), "engaged", on=("page_view",), page="pricing")
    any_page = AdvanceRule(("inquiry",), "engaged", on=("page_view",))
    short = AdvanceRule(("engaged",), "recycled", idle=timedelta(days=60))
    long = AdvanceRule(("engaged",), "disqualified", idle=timedelta(days=90))
    program = with_advance(CLICK, AdvanceRule(("inquiry",), "mql", on=("click",)), page, any_page,
                           page, long, short)
    found = [(f.location, f.message) for f in check_program(program)
             if f.code == "program.advance-shadowed"]
    assert found == [
        ("advance 2", ("advance inquiry -> mql on click never applies: earlier rules take every "
                      "stage and response it names")),
        ("advance 5", ("advance inquiry -> engaged on page_view page pricing never applies: earlier "
                      "rules take every stage and response it names")),
        ("advance 6", ("advance engaged -> disqualified after 90d without a response never "
                      "applies: shorter idle rules move the lead from its stages first")),
    ]
    wider = AdvanceRule(("inquiry", "recycled"), "engaged", on=("click", "consumed"))
    assert not [f for f in check_program(with_advance(CLICK, wider))
                if f.code == "program.advance-shadowed"]


def test_each_advance_rule_is_a_rule_to_cover(tiny):
    directory, program = tiny
    program = replace(program, advance=(
        AdvanceRule(("inquiry",), "engaged", on=("click",)),
        AdvanceRule(("engaged",), "recycled", idle=timedelta(days=30))))
    cov = tiny_coverage(directory, program, """
      - {name: clicks, events: ["0.5 clicked"], expect: {emails: {e1: 0, e3: 0}, stage: engaged}}
    """)
    assert [(i.name, i.detail, i.scenarios) for i in cov.of("rule") if i.name.startswith("advance")] == [
        ("advance inquiry -> engaged on click", "stage advancement rule 1", ("clicks",)),
        ("advance engaged -> recycled after 30d without a response", "stage advancement rule 2",
         ())]
    assert ("coverage.rule", "advance engaged -> recycled after 30d without a response") in [
        (f.code, f.location) for f in coverage_findings(cov, "scenarios.yaml")]
