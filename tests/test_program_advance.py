"""The `kind:`, `goal:` and `advance:` keys of program.yaml: what loads, every error as
`program.yaml:LINE: message`, stored versions, and the one advancement function."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from test_program_scoring_validation import errors_of, line_of, write_program

from engine.programs.advance import advancement, next_idle_check
from engine.programs.loader import load_program_dir
from engine.programs.spec import AdvanceRule, Goal, Program

T = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)
ADVANCE = """\
kind: cross-sell
goal: {event: form_submitted, page: demo_request, within: 30d}
advance:
  - {from: [inquiry, recycled], to: engaged, on: [click, form_submitted]}
  - from: inquiry
    to: engaged
    on: page_view
    page: pricing
  - {from: inquiry, to: mql, on: [open], email: guide}
  - {from: engaged, to: recycled, idle: 90d}
"""


# -- what loads -----------------------------------------------------------------------------

def test_kind_goal_and_advance_rules_load(tmp_path):
    program = load_program_dir(write_program(tmp_path / "p", ADVANCE)).program
    assert program.kind == "cross-sell"
    assert program.goal == Goal(event="form_submitted", page="demo", within=timedelta(days=30))
    assert program.goal.describe() == "form_submitted on page demo within 30d of enrolling"
    assert program.advance == (
        AdvanceRule(("inquiry", "recycled"), "engaged", on=("click", "form_submitted")),
        AdvanceRule(("inquiry",), "engaged", on=("page_view",), page="pricing"),  # a bare `on`
        AdvanceRule(("inquiry",), "mql", on=("open",), email="guide"),
        AdvanceRule(("engaged",), "recycled", idle=timedelta(days=90)),
    )
    assert [rule.describe() for rule in program.advance] == [
        "advance inquiry, recycled -> engaged on click, form_submitted",
        "advance inquiry -> engaged on page_view page pricing",
        "advance inquiry -> mql on open email guide",
        "advance engaged -> recycled after 90d without a response",
    ]


def test_a_stage_goal_and_a_custom_kind(tmp_path):
    program = load_program_dir(write_program(
        tmp_path / "p", "kind: partner-webinars\ngoal: {stage: opportunity}\n")).program
    assert (program.kind, program.goal) == ("partner-webinars", Goal(stage="opportunity"))
    assert program.goal.describe() == "reach stage opportunity"


def test_stored_versions_keep_kind_goal_and_rules_and_old_ones_load_without(tmp_path):
    program = load_program_dir(write_program(tmp_path / "p", ADVANCE)).program
    again = Program.from_dict(program.to_dict())
    assert (again.kind, again.goal, again.advance) == (program.kind, program.goal, program.advance)
    old = program.to_dict()
    del old["kind"], old["goal"], old["advance"]  # a version stored before these existed
    before = Program.from_dict(old)
    assert (before.kind, before.goal, before.advance) == (None, None, ())


# -- every error, with its line -------------------------------------------------------------

@pytest.mark.parametrize(("section", "needle", "message"), [
    ("kind: Inbound!\n", "kind:",
     ("kind must be inbound, outbound, cold, cross-sell, sales-support or a name of your own "
     "(lower-case letters, digits and '-'), got 'Inbound!'")),
    ("kind: [inbound]\n", "kind:", "kind must be inbound"),
    ("goal: opportunity\n", "goal:", "'goal' must be a mapping"),
    ("goal: {within: 3d}\n", "goal:",
     "goal: give either 'stage' (a stage to reach) or 'event' (a response"),
    ("goal: {stage: mql, event: click}\n", "goal:", "goal: give either 'stage'"),
    ("goal: {stage: won}\n", "goal:", "goal.stage: unknown stage 'won' (expected one of inquiry,"),
    ("goal: {event: replied}\n", "goal:",
     ("goal.event: unknown event kind 'replied' (expected one of open, click, page_view, "
     "form_submitted, consumed)")),
    ("goal: {stage: mql, page: pricing}\n", "goal:",
     "goal: 'page' and 'email' apply to an event goal"),
    ("goal: {event: click, page: pricing}\n", "goal:",
     "goal: 'page' applies to page_view and form_submitted"),
    ("goal: {event: form_submitted, page: nowhere}\n", "goal:", "goal: unknown page 'nowhere'"),
    ("goal: {event: open, email: webinar}\n", "goal:", "goal: unknown email 'webinar'"),
    ("goal: {event: open, email: [guide]}\n", "goal:", "goal: 'email' must be a name, got ['guide']"),
    ("goal:\n  stage: sal\n  within: soon\n", "within:",
     "goal.within: bad duration 'soon' (use a number and m, h, d or w, e.g. 3d or 1w)"),
    ("goal:\n  stage: sal\n  by: 3d\n", "by:",
     "goal: unknown key 'by' (expected one of stage, event, page, email, within)"),
    ("advance: {from: inquiry}\n", "advance:", "advance must be a list"),
    ("advance:\n  - engaged\n", "- engaged",
     "advance 1: must be a mapping like {from: inquiry, to: engaged, on: [click, form_submitted]}"),
    ("advance:\n  - {from: inquiry, to: engaged, on: click, when: soon}\n", "when:",
     "advance 1: unknown key 'when' (expected one of from, to, on, idle, page, email)"),
    ("advance:\n  - {to: engaged, on: click}\n", "to: engaged",
     "advance 1: missing 'from' (a stage, or a list of stages)"),
    ("advance:\n  - {from: lead, to: engaged, on: click}\n", "from: lead",
     "advance 1: unknown stage 'lead' in 'from' (expected one of inquiry,"),
    ("advance:\n  - from:\n      - inquiry\n      - lead\n    to: engaged\n    on: click\n",
     "- lead", "advance 1: unknown stage 'lead' in 'from'"),
    ("advance:\n  - {from: [], to: engaged, on: click}\n", "from: []",
     "advance 1: 'from' must name at least one stage"),
    ("advance:\n  - {from: inquiry, on: click}\n", "from: inquiry",
     "advance 1: missing 'to' (the stage to move to)"),
    ("advance:\n  - {from: inquiry, to: won, on: click}\n", "to: won",
     "advance 1: unknown stage 'won' (expected one of inquiry,"),
    ("advance:\n  - from: engaged\n    to: inquiry\n    idle: 90d\n", "to: inquiry",
     ("advance 1: illegal stage change engaged -> inquiry (from engaged: disqualified, mql, "
     "recycled, sal)")),
    ("advance:\n  - from: [inquiry, disqualified]\n    to: engaged\n    on: click\n", "to: engaged",
     "advance 1: illegal stage change disqualified -> engaged (from disqualified: recycled)"),
    ("advance:\n  - from: [inquiry, engaged]\n    to: engaged\n    on: click\n", "to: engaged",
     "advance 1: 'to' is engaged, a stage it moves from"),
    ("advance:\n  - {from: inquiry, to: engaged}\n", "- {from",
     ("advance 1: give either 'on' (response kinds, e.g. [click, form_submitted]) or 'idle' (a "
     "time without response, e.g. 90d)")),
    ("advance:\n  - {from: inquiry, to: engaged, on: click, idle: 3d}\n", "- {from",
     "advance 1: give either 'on'"),
    ("advance:\n  - {from: inquiry, to: engaged, on: [click, opened]}\n", "opened",
     ("advance 1: unknown response kind 'opened' in 'on' (expected one of open, click, page_view, "
     "form_submitted, consumed)")),
    ("advance:\n  - {from: inquiry, to: engaged, on: []}\n", "on: []",
     "advance 1: 'on' must name at least one response kind"),
    ("advance:\n  - from: engaged\n    to: recycled\n    idle: 0d\n", "idle:",
     "advance 1.idle must be longer than 0"),
    ("advance:\n  - from: engaged\n    to: recycled\n    idle: a while\n", "idle:",
     "advance 1.idle: bad duration 'a while'"),
    ("advance:\n  - from: engaged\n    to: recycled\n    idle: 9d\n    page: pricing\n", "page:",
     "advance 1: 'page' and 'email' apply to an 'on' rule"),
    ("advance:\n  - from: inquiry\n    to: engaged\n    on: [click, page_view]\n    page: pricing\n",
     "page:", "advance 1: 'page' applies to page_view and form_submitted"),
    ("advance:\n  - from: inquiry\n    to: engaged\n    on: [page_view]\n    page: nowhere\n",
     "page:", "advance 1: unknown page 'nowhere'"),
    ("advance:\n  - from: inquiry\n    to: engaged\n    on: [click]\n    email: webinar\n",
     "email: webinar", "advance 1: unknown email 'webinar'"),
    ("advance:\n  - from: inquiry\n    to: engaged\n    on: [click]\n    email: {a: 1}\n",
     "email: {a", "advance 1: 'email' must be a name, got {'a': 1}"),
])
def test_each_error_names_its_line(tmp_path, section, needle, message):
    directory = write_program(tmp_path / "p", section)
    errors = errors_of(directory)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"program.yaml:{line_of(directory, needle)}: {message}"), errors[0]


def test_every_error_of_several_rules_comes_at_once(tmp_path):
    directory = write_program(tmp_path / "p", """\
        advance:
          - {from: inquiry, to: engaged, on: [click]}
          - {from: sal, to: inquiry, idle: 90d}
          - {from: mql, to: won, on: [open]}
    """)
    assert errors_of(directory) == [
        (f"program.yaml:{line_of(directory, 'to: inquiry')}: advance 2: illegal stage change "
        "sal -> inquiry (from sal: disqualified, opportunity, recycled)"),
        (f"program.yaml:{line_of(directory, 'to: won')}: advance 3: unknown stage 'won' (expected "
        "one of inquiry, engaged, mql, sal, opportunity, customer, recycled, disqualified)"),
    ]


# -- advancement: one pure function -----------------------------------------------------------

CLICKS = AdvanceRule(("inquiry", "recycled"), "engaged", on=("click", "form_submitted"))
DEMO = AdvanceRule(("inquiry",), "mql", on=("form_submitted",), page="demo")
GUIDE = AdvanceRule(("inquiry",), "engaged", on=("consumed",), email="guide")
QUIET = AdvanceRule(("engaged",), "recycled", idle=timedelta(days=90))
LONG_QUIET = AdvanceRule(("engaged", "recycled"), "disqualified", idle=timedelta(days=365))


def advance(rules, **given):
    return advancement(rules, **{"event_kind": None, "now": T, **given})


def test_a_response_named_by_a_rule_moves_the_lead_with_the_rule_in_words():
    moved = advance([QUIET, CLICKS], stage="recycled", event_kind="click", detail="guide")
    assert (moved.from_stage, moved.to, moved.rule) == ("recycled", "engaged", CLICKS)
    assert moved.reason == "advance recycled -> engaged on click"


def test_other_stages_and_responses_move_nothing():
    assert advance([CLICKS], stage="mql", event_kind="click") is None
    assert advance([CLICKS], stage="inquiry", event_kind="open") is None


def test_a_page_or_email_rule_needs_that_page_or_email():
    assert advance([DEMO], stage="inquiry", event_kind="form_submitted", detail="pricing") is None
    moved = advance([DEMO], stage="inquiry", event_kind="form_submitted", detail="demo")
    assert moved.reason == "advance inquiry -> mql on form_submitted page demo"
    assert advance([GUIDE], stage="inquiry", event_kind="consumed", detail="welcome") is None
    assert advance([GUIDE], stage="inquiry", event_kind="consumed",
                   detail="guide").reason == "advance inquiry -> engaged on consumed email guide"


def test_the_first_rule_in_file_order_wins():
    assert advance([DEMO, CLICKS], stage="inquiry", event_kind="form_submitted",
                   detail="demo").to == "mql"
    assert advance([CLICKS, DEMO], stage="inquiry", event_kind="form_submitted",
                   detail="demo").to == "engaged"


def test_idle_rules_count_from_the_last_response():
    assert advance([QUIET], stage="engaged", last_response_at=T - 90 * DAY + timedelta(seconds=1)) is None
    moved = advance([QUIET], stage="engaged", last_response_at=T - 90 * DAY)
    assert (moved.to, moved.reason) == ("recycled",
                                        "advance engaged -> recycled after 90d without a response")


def test_idle_rules_count_from_entering_the_stage_when_that_is_later():
    assert advance([QUIET], stage="engaged", last_response_at=T - 200 * DAY,
                   stage_since=T - 10 * DAY) is None
    assert advance([QUIET], stage="engaged", stage_since=T - 90 * DAY).to == "recycled"
    assert advance([QUIET], stage="engaged") is None  # nothing says since when


def test_idle_rules_are_time_checks_and_responses_are_not():
    assert advance([QUIET], stage="engaged", event_kind="open",
                   last_response_at=T - 400 * DAY) is None
    assert advance([CLICKS], stage="inquiry", last_response_at=T - 400 * DAY) is None


def test_the_shortest_idle_time_that_passed_applies():
    assert advance([LONG_QUIET, QUIET], stage="engaged",
                   last_response_at=T - 100 * DAY).to == "recycled"
    assert advance([LONG_QUIET, QUIET], stage="recycled",
                   last_response_at=T - 400 * DAY).to == "disqualified"


def test_a_response_kind_outside_the_vocabulary_is_a_bug_that_fails_loudly():
    with pytest.raises(ValueError, match="unknown response kind 'opened'"):
        advance([CLICKS], stage="inquiry", event_kind="opened")


def test_the_next_idle_check_is_the_earliest_idle_rule_of_the_stage():
    rules = [CLICKS, LONG_QUIET, QUIET]
    assert next_idle_check(rules, stage="engaged", last_response_at=T,
                           stage_since=T - DAY) == T + 90 * DAY
    assert next_idle_check(rules, stage="recycled", last_response_at=None,
                           stage_since=T) == T + 365 * DAY
    assert next_idle_check(rules, stage="inquiry", last_response_at=T, stage_since=T) is None
    assert next_idle_check(rules, stage="engaged", last_response_at=None, stage_since=None) is None
