"""The pure scoring core: behaviour and fit points, daily caps, decay, MQL qualification,
triggers and SLA rules, on hand-built rules and on the sample program's."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.programs.loader import load_program_dir
from engine.scoring.rules import (
    Award,
    FitRule,
    ScoringRules,
    SlaRules,
    Trigger,
    apply_caps,
    behaviour_awards,
    cap_day,
    capped,
    decayed,
    fit_awards,
    fit_gap,
    is_mql,
    leading_number,
    matching_triggers,
    missing_requirements,
    one_field_short,
    score_at,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = load_program_dir(ROOT / "assets" / "acme-nurture").program.scoring
MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MONTH = timedelta(days=30)
RULES = ScoringRules(
    behaviour={"open": 1, "click": 3, "page_view": 2, "form_submitted": 15, "consumed": 0},
    pages={"pricing": 10},
    daily_caps={"open": 3, "page_view": 12},
    half_life=MONTH,
    fit=(
        FitRule("title", 15, matches=r"(?i)\b(director|head|vp|chief)\b"),
        FitRule("company_size", 10, at_least=200),
        FitRule("industry", 5, any_of=("software", "financial services")),
    ),
    threshold=60,
    requires=("company", "company_size"),
    triggers=(Trigger("page_view", page="pricing", route="sales"),
              Trigger("click", enroll="webinar-series")),
)

finite = st.floats(min_value=0, max_value=1e6, allow_nan=False)
instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1),
                        timezones=st.just(UTC))
half_lives = st.integers(min_value=60, max_value=365 * 86400).map(lambda s: timedelta(seconds=s))


# -- behaviour ------------------------------------------------------------------------------

def test_an_event_earns_its_kinds_points_with_the_rule_in_words():
    assert behaviour_awards(RULES, "click", "welcome_it") == [Award("click", 3, "click: +3")]
    assert behaviour_awards(RULES, "form_submitted", "demo") == [
        Award("form_submitted", 15, "form_submitted: +15")]


def test_a_pricing_visit_earns_the_page_view_and_the_page_extra():
    assert behaviour_awards(RULES, "page_view", "pricing") == [
        Award("page_view", 2, "page_view: +2"), Award("page_view", 10, "page pricing: +10")]
    assert behaviour_awards(RULES, "page_view", "blog") == [Award("page_view", 2, "page_view: +2")]


def test_page_extras_are_for_visits_only_and_unknown_or_zero_kinds_earn_nothing():
    assert behaviour_awards(RULES, "form_submitted", "pricing") == [
        Award("form_submitted", 15, "form_submitted: +15")]
    assert behaviour_awards(RULES, "consumed", "guide_it") == []  # 0 points: no award
    assert behaviour_awards(RULES, "view", None) == []
    assert behaviour_awards(ScoringRules(), "click", "x") == []  # a program without scoring


def test_capped_keeps_cuts_or_drops_an_award():
    award = Award("click", 3, "click: +3")
    assert capped(award, 100, None) is award
    assert capped(award, 5, 9) is award
    cut = capped(award, 7, 9)
    assert (cut.kind, cut.points) == ("click", 2)
    assert cut.rule == "click: +3 (capped to +2: daily cap 9 for click)"
    assert capped(award, 9, 9) is None
    assert capped(award, 12, 9) is None


def test_apply_caps_counts_one_events_awards_against_each_other():
    awards = behaviour_awards(RULES, "page_view", "pricing")  # 2 + 10 under a cap of 12
    assert [a.points for a in apply_caps(RULES, awards, {"page_view": 0})] == [2, 10]
    kept = apply_caps(RULES, awards, {"page_view": 4})
    assert [a.points for a in kept] == [2, 6] and "capped to +6" in kept[1].rule
    assert apply_caps(RULES, awards, {"page_view": 12}) == []
    assert apply_caps(RULES, behaviour_awards(RULES, "click", None), {"click": 1e9})[0].points == 3


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(["open", "click", "page_view"]),
                          st.integers(min_value=1, max_value=40)), max_size=40),
       st.dictionaries(st.sampled_from(["open", "click", "page_view"]),
                       st.integers(min_value=1, max_value=60)))
def test_caps_never_exceed_the_cap_in_a_day_and_fill_it_when_earned(events, caps):
    rules = ScoringRules(daily_caps=caps)
    totals: dict[str, float] = {}
    earned: dict[str, float] = {}
    for kind, points in events:
        for award in apply_caps(rules, [Award(kind, points, f"{kind}: +{points}")], totals):
            assert award.points > 0
            totals[kind] = totals.get(kind, 0) + award.points
        earned[kind] = earned.get(kind, 0) + points
    for kind, total in totals.items():
        cap = caps.get(kind)
        assert total <= cap if cap is not None else total == earned[kind]
    for kind, points in earned.items():
        assert totals.get(kind, 0) == min(points, caps.get(kind, math.inf))


@given(st.floats(min_value=0.01, max_value=1e4), finite, st.floats(min_value=0, max_value=1e4))
def test_float_caps_stay_within_the_cap(cap, already, points):
    award = capped(Award("click", points, "click"), already, cap)
    given_points = 0 if award is None else award.points
    assert already + given_points <= max(cap, already) * (1 + 1e-12)


def test_cap_day_is_the_programs_local_day_and_follows_dst():
    start, end = cap_day(datetime(2026, 3, 28, 23, 30, tzinfo=UTC), "Europe/Paris")
    assert start == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # midnight in Paris (UTC+1)
    assert end - start == timedelta(hours=23)  # the clocks go forward that night
    assert start <= datetime(2026, 3, 28, 23, 30, tzinfo=UTC) < end


# -- decay ----------------------------------------------------------------------------------

@given(finite, instants, st.integers(0, 10**8), st.integers(0, 10**8), half_lives)
def test_decay_never_grows_with_time(points, since, a, b, half_life):
    early, late = sorted((a, b))
    first = decayed(points, since, since + timedelta(seconds=early), half_life)
    later = decayed(points, since, since + timedelta(seconds=late), half_life)
    assert 0 <= later <= first <= points


@given(finite, instants, half_lives, st.integers(1, 6))
def test_decay_halves_exactly_each_half_life(points, since, half_life, n):
    assert decayed(points, since, since + half_life, half_life) == points / 2
    assert decayed(points, since, since + n * half_life, half_life) == pytest.approx(
        points / 2**n, rel=1e-12)


@given(finite, finite, instants, st.integers(0, 10**8), half_lives)
def test_decay_is_additive(a, b, since, seconds, half_life):
    now = since + timedelta(seconds=seconds)
    together = decayed(a + b, since, now, half_life)
    assert decayed(a, since, now, half_life) + decayed(b, since, now, half_life) == pytest.approx(
        together, rel=1e-12, abs=1e-12)


@given(finite, finite, instants, st.integers(0, 10**7), st.integers(0, 10**7), half_lives)
def test_a_stored_sum_decayed_and_added_to_equals_decaying_each_award(a, b, since, gap, later,
                                                                      half_life):
    """How a service keeps behaviour as one number: decay the stored sum, add the new award."""
    second = since + timedelta(seconds=gap)
    now = second + timedelta(seconds=later)
    stored = decayed(a, since, second, half_life) + b
    each = decayed(a, since, now, half_life) + decayed(b, second, now, half_life)
    assert decayed(stored, second, now, half_life) == pytest.approx(each, rel=1e-9, abs=1e-9)


def test_no_decay_without_a_half_life_and_none_backwards_in_time():
    assert decayed(40, MONDAY, MONDAY + 10 * MONTH, None) == 40
    assert decayed(40, MONDAY, MONDAY - timedelta(days=3), MONTH) == 40
    assert decayed(40, MONDAY, MONDAY + timedelta(days=15), MONTH) == pytest.approx(40 / 2**0.5)


def test_score_at_adds_fit_to_decayed_behaviour():
    assert score_at(RULES, fit=15, behaviour=20, behaviour_at=MONDAY, now=MONDAY + MONTH) == 25
    assert score_at(RULES, fit=15, behaviour=0, behaviour_at=None, now=MONDAY) == 15


# -- fit ------------------------------------------------------------------------------------

def test_fit_awards_explain_each_rule():
    fields = {"title": "VP Engineering", "company_size": "1,200", "industry": " Software "}
    assert fit_awards(RULES, fields) == [
        Award("title", 15, "title matches director|head|vp|chief: +15"),
        Award("company_size", 10, "company_size >= 200: +10"),
        Award("industry", 5, "industry in software, financial services: +5"),
    ]


@pytest.mark.parametrize(("title", "fits"), [
    ("IT Director", True), ("Head of Infrastructure", True), ("Directory admin", False),
    ("Vice-VP", True), ("Engineer", False), ("", False), (None, False),
])
def test_a_regex_rule_searches_the_value(title, fits):
    assert bool(fit_awards(RULES, {"title": title})) is fits


@pytest.mark.parametrize(("size", "fits"), [
    (200, True), (199, False), ("200", True), ("1,200", True), ("200-500", True),
    ("150-500", False), ("500+", True), (" 250 employees", True), ("about 300", False),
    ("n/a", False), ("", False), (None, False), (True, False), (float("nan"), False),
])
def test_numeric_rules_read_a_leading_number(size, fits):
    assert bool(fit_awards(RULES, {"company_size": size})) is fits


def test_at_most_and_combined_conditions_must_all_hold():
    rules = ScoringRules(fit=(FitRule("company_size", 7, at_least=50, at_most=500),
                              FitRule("country", 3, any_of=("FR", "de"), matches="^[A-Z]+$")))
    assert [a.points for a in fit_awards(rules, {"company_size": "50"})] == [7]
    assert fit_awards(rules, {"company_size": "501"}) == []
    assert fit_awards(rules, {"country": "DE"})[0].rule == "country matches ^[A-Z]+$ and in FR, de: +3"
    assert fit_awards(rules, {"country": "de"}) == []  # in the set, but not upper-case


def test_leading_number():
    assert leading_number("1,200,000 staff") == 1_200_000
    assert leading_number("1,20") == 1  # not a thousands separator
    assert leading_number("-3.5") == -3.5
    assert leading_number(12.5) == 12.5
    assert leading_number("$100") is None


# -- qualification --------------------------------------------------------------------------

def test_missing_requirements_are_the_empty_required_fields():
    assert missing_requirements(RULES, {"company": "Globex", "company_size": " "}) == ["company_size"]
    assert missing_requirements(RULES, {}) == ["company", "company_size"]
    assert missing_requirements(RULES, {"company": "Globex", "company_size": 0}) == []


def test_is_mql_needs_the_threshold_and_every_required_field():
    fields = {"company": "Globex", "company_size": "300"}
    assert is_mql(RULES, 60, fields)
    assert not is_mql(RULES, 59.99, fields)
    assert not is_mql(RULES, 90, {"company": "Globex"})
    assert not is_mql(ScoringRules(), 10**9, fields)  # no threshold: never by score


def test_fit_gap_lists_rules_whose_field_is_empty():
    assert fit_gap(RULES, {"title": "CFO", "industry": ""}) == [
        Award("company_size", 10, "company_size >= 200: +10"),
        Award("industry", 5, "industry in software, financial services: +5"),
    ]


def test_one_field_short_names_the_single_field_that_would_qualify():
    # score high enough, a required field missing
    assert one_field_short(RULES, 70, {"company": "Globex"}) == ["company_size"]
    # the missing required field's own fit points would bridge the gap
    assert one_field_short(RULES, 52, {"company": "Globex"}) == ["company_size"]
    assert one_field_short(RULES, 49, {"company": "Globex"}) == []
    # nothing required is missing: any empty fit field worth enough
    fields = {"company": "Globex", "company_size": "20"}
    assert one_field_short(RULES, 55, fields) == ["industry", "title"]
    assert one_field_short(RULES, 50, fields) == ["title"]  # industry's 5 are not enough
    assert one_field_short(RULES, 55, {**fields, "title": "Intern"}) == ["industry"]
    assert one_field_short(RULES, 54, {**fields, "title": "Intern"}) == []
    assert one_field_short(RULES, 30, fields) == []
    # two fields missing, already an MQL, or no threshold
    assert one_field_short(RULES, 99, {}) == []
    assert one_field_short(RULES, 60, {"company": "Globex", "company_size": "300"}) == []
    assert one_field_short(ScoringRules(), 99, {}) == []


def test_triggers_match_on_kind_and_page_or_email():
    pricing, webinar = RULES.triggers
    assert matching_triggers(RULES, "page_view", "pricing") == [pricing]
    assert matching_triggers(RULES, "page_view", "blog") == []
    assert matching_triggers(RULES, "form_submitted", "pricing") == []
    assert matching_triggers(RULES, "click", "any_email") == [webinar]
    assert Trigger("open", email="welcome_it", route="sales").matches("open", "welcome_it")
    assert not Trigger("open", email="welcome_it", route="sales").matches("open", "guide_it")
    assert pricing.describe() == "page_view page pricing: route to sales"
    assert webinar.describe() == "click: enroll in webinar-series"


# -- SLAs -----------------------------------------------------------------------------------

def test_sla_defaults_and_targets():
    sla = SlaRules()
    assert (sla.mql_response, sla.opportunity_stalled) == (timedelta(days=14), timedelta(days=14))
    assert sla.mql_due(MONDAY) == MONDAY + timedelta(days=14)
    assert sla.stalled_due(MONDAY) == MONDAY + timedelta(days=14)
    assert sla.stalled_target("finance") is None
    assert SlaRules(stalled_track="reengage").stalled_target("finance") == "finance/reengage"
    assert SlaRules(stalled_track="it/support").stalled_target("finance") == "it/support"


# -- regex safety ---------------------------------------------------------------------------

# Patterns a backtracking engine (Python's re) takes seconds to centuries on, each with the
# 1,000-character value (the longest a field holds) that makes it backtrack, and whether the
# pattern is found in it ((a|a?)+$ is: a? matches nothing just before the end). RE2 needs well
# under 10 ms; the test's bound is 50 ms so that a loaded machine does not fail it, while
# backtracking would miss it by orders of magnitude.
HOSTILE = [
    (r"(.|\s)*director", " " * 1000, False),
    (r"(a|a?)+$", "a" * 999 + "!", True),
    (r"\w*\w*x", "a" * 1000, False),
]


@pytest.mark.parametrize(("pattern", "hostile", "holds"), HOSTILE)
def test_a_fit_regex_takes_linear_time_on_a_hostile_value(pattern, hostile, holds):
    rules = ScoringRules(fit=(FitRule("title", 15, matches=pattern),))
    started = time.thread_time()
    awards = fit_awards(rules, {"title": hostile})
    assert time.thread_time() - started < 0.05
    assert bool(awards) is holds


def test_fit_regexes_keep_their_meaning_on_re2():
    cases = [(r"(.|\s)*director", "Sales\n director"), (r"(a|a?)+$", "aaa"), (r"\w*\w*x", "box"),
             (r"(?i)\b(director|head|vp|chief)\b", "Head of IT"), (r"^[A-Z]{2}$", "FR")]
    for pattern, value in cases:
        assert FitRule("title", 1, matches=pattern).holds(value), pattern
    assert not FitRule("title", 1, matches=r"^[A-Z]{2}$").holds("fr")
    assert not FitRule("title", 1, matches=r"(?i)\bvp\b").holds("VPN admin")


def test_a_stored_pattern_re2_refuses_never_holds_instead_of_failing_the_lead():
    """Only a program stored before patterns ran on RE2 can hold one (validation refuses it)."""
    rules = ScoringRules(fit=(FitRule("title", 15, matches=r"(?i)director(?!ate)"),
                              FitRule("title", 5, matches=r"(?i)director")))
    assert [a.points for a in fit_awards(rules, {"title": "IT Director"})] == [5]


# -- the sample program's numbers -------------------------------------------------------------

def _replay(rules: ScoringRules, events, fields: dict, start: datetime) -> list[float]:
    """The score after each (day, kind, detail) event, kept as a service would: behaviour as
    one decayed sum, caps per local day."""
    behaviour, behaviour_at, today, day = 0.0, None, {}, None
    fit = sum(a.points for a in fit_awards(rules, fields))
    scores = []
    for offset, kind, detail in events:
        now = start + timedelta(days=offset)
        if day != now.date():
            day, today = now.date(), {}
        awards = apply_caps(rules, behaviour_awards(rules, kind, detail), today)
        for award in awards:
            today[award.kind] = today.get(award.kind, 0) + award.points
        if behaviour_at is not None:
            behaviour = decayed(behaviour, behaviour_at, now, rules.half_life)
        behaviour, behaviour_at = behaviour + sum(a.points for a in awards), now
        scores.append(score_at(rules, fit=fit, behaviour=behaviour, behaviour_at=behaviour_at,
                               now=now))
    return scores


def test_sample_a_director_who_opens_clicks_twice_and_visits_pricing_becomes_an_mql():
    fields = {"title": "IT Director", "company": "Globex", "industry": "retail"}
    events = [(0, "open", "welcome_it"), (3, "open", "guide_it"), (7, "open", "checklist_it"),
              (7, "click", "checklist_it"), (14, "open", "benchmark_it"),
              (15, "click", "benchmark_it"), (18, "page_view", "pricing")]
    scores = _replay(SAMPLE, events, fields, MONDAY)
    assert not any(is_mql(SAMPLE, s, fields) for s in scores[:-1])
    assert is_mql(SAMPLE, scores[-1], fields), scores
    assert not is_mql(SAMPLE, scores[-1], {**fields, "company": ""})  # company is required


def test_sample_a_lead_who_only_opens_never_becomes_an_mql_even_with_the_best_fit():
    fields = {"title": "CIO", "company": "Globex", "company_size": "5000", "industry": "software"}
    assert sum(a.points for a in fit_awards(SAMPLE, fields)) == 30
    # every email it could be sent for half a year (3 a week, the default frequency cap),
    # each opened three times the day it arrives
    events = [(week * 7 + day, "open", f"email_{week}_{day}")
              for week in range(26) for day in (0, 2, 4) for _ in range(3)]
    scores = _replay(SAMPLE, events, fields, MONDAY)
    assert max(scores) < SAMPLE.threshold, max(scores)


def test_sample_a_demo_request_routes_to_sales_at_once():
    assert [t.route for t in matching_triggers(SAMPLE, "form_submitted", "demo")] == ["sales"]
    assert matching_triggers(SAMPLE, "page_view", "pricing") == []
