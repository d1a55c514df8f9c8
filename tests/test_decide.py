"""decide(), one rule at a time.

Each test enrolls a lead and feeds it events on an explicit clock; `Lead` plays the scheduler and
delivers DUE events exactly when the state says a step is due. PROGRAM is a pinned copy of the
sample program's journeys (tests/programs/pinned-nurture): it sends Monday to Friday, 09:00-17:00
Europe/Paris; it_manager/inquiry is welcome_it, 3d, guide_it, 4d, checklist_it; a non-responder
(3 sends without response) moves to it_manager/reengage.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from engine.journeys.decide import (
    ActionKind,
    Decision,
    EnrollmentState,
    Event,
    EventKind,
    Status,
    decide,
    new_state,
)
from engine.programs.loader import load_program_dir
from engine.programs.spec import NonResponders, Program, Rules, SendWindow, Step, Wait

PROGRAM = load_program_dir(Path(__file__).resolve().parent / "programs" / "pinned-nurture").program
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
UTC = ZoneInfo("UTC")


def paris(*args) -> datetime:
    return datetime(*args, tzinfo=PARIS)


def steps(*items: str) -> tuple[Step, ...]:
    """steps("welcome_it", "3d", "guide_it"): email keys and waits."""
    return tuple(Step(wait=Wait.parse(i)) if i[0].isdigit() else Step(email=i) for i in items)


def with_tracks(program: Program, version: int | None = None, **tracks) -> Program:
    """The program with some tracks replaced; track names use '__' for '/'."""
    changed = {name.replace("__", "/"): value for name, value in tracks.items()}
    return replace(program, tracks={**program.tracks, **changed},
                   version=program.version if version is None else version)


class Lead:
    """One enrollment driven through decide(); plays the scheduler, firing DUE events on time."""

    def __init__(self, program: Program, at: datetime, *, persona: str = "it_manager",
                 stage: str = "inquiry", timezone: str | None = None):
        self.program = program
        self.state = new_state(program, persona=persona, stage=stage, timezone=timezone)
        self.actions = []
        self.deliver(at, Event(EventKind.ENROLLED))

    def deliver(self, at: datetime, event: Event) -> Decision:
        """Feed one event now, without first running what is due (a late scheduler)."""
        decision = decide(self.program, self.state, event, at)
        self.state = decision.state
        self.actions.extend(decision.actions)
        return decision

    def wait_until(self, at: datetime) -> None:
        """Let time pass: every step due up to `at` is delivered at its due time."""
        while self.state.status is Status.ACTIVE and self.state.due_at <= at:
            before = self.state
            self.deliver(self.state.due_at, Event(EventKind.DUE))
            assert self.state != before, "a DUE event changed nothing"

    def on(self, at: datetime, kind: EventKind, detail: str | None = None) -> Decision:
        self.wait_until(at)
        return self.deliver(at, Event(kind, detail))

    def update(self, at: datetime, program: Program) -> Decision:
        self.wait_until(at)
        self.program = program
        return self.deliver(at, Event(EventKind.PROGRAM_UPDATED, f"version {program.version}"))

    def sent(self) -> list[tuple[str, datetime]]:
        return [(a.asset, a.at) for a in self.actions if a.kind is ActionKind.SEND]

    def sent_assets(self) -> list[str]:
        return [asset for asset, _ in self.sent()]

    def of_kind(self, kind: ActionKind) -> list:
        return [a for a in self.actions if a.kind is kind]


MONDAY = paris(2024, 6, 3, 10)  # an ordinary week, inside the send window
LATER = paris(2024, 9, 30, 12)


# -- a track per persona x stage cell -------------------------------------------------------

def test_a_lead_follows_the_track_of_its_persona_and_stage_with_its_waits():
    lead = Lead(PROGRAM, MONDAY)
    lead.wait_until(LATER)
    assert lead.sent() == [
        ("welcome_it", MONDAY),
        ("guide_it", paris(2024, 6, 6, 10)),  # 3d
        ("checklist_it", paris(2024, 6, 10, 10)),  # 4d
    ]
    assert lead.state.status is Status.COMPLETED


def test_another_persona_gets_its_own_track():
    lead = Lead(PROGRAM, MONDAY, persona="finance")
    lead.wait_until(LATER)
    assert lead.sent_assets() == ["welcome_finance", "cost_guide_finance"]


def test_a_cell_without_a_track_waits_idle_and_sends_nothing():
    lead = Lead(PROGRAM, MONDAY, stage="mql")
    lead.wait_until(LATER)
    assert lead.sent() == []
    assert lead.state.status is Status.IDLE


# -- stage or persona change mid-flow -------------------------------------------------------

def test_a_stage_change_moves_the_lead_to_the_new_cells_track_at_once():
    lead = Lead(PROGRAM, MONDAY)
    tuesday = paris(2024, 6, 4, 11)
    decision = lead.on(tuesday, EventKind.STAGE, "engaged")
    assert [(a.kind, a.track) for a in decision.actions if a.kind is ActionKind.MOVE] == [
        (ActionKind.MOVE, "it_manager/engaged")]
    lead.wait_until(LATER)
    assert lead.sent() == [
        ("welcome_it", MONDAY),
        ("case_study_it", tuesday),
        ("roi_it", paris(2024, 6, 11, 11)),  # 1w
    ]


def test_a_persona_change_moves_the_lead_to_its_new_personas_track():
    lead = Lead(PROGRAM, MONDAY)
    lead.on(paris(2024, 6, 4, 11), EventKind.PERSONA, "finance")
    lead.wait_until(LATER)
    assert lead.sent_assets() == ["welcome_it", "welcome_finance", "cost_guide_finance"]
    assert lead.state.track == "finance/inquiry"


def test_after_a_move_the_lead_continues_with_the_first_step_it_has_not_received():
    # product_update opens both recycled tracks: a finance lead who got it as an IT manager
    # goes straight on with budget_planning_finance, in product_update's slot
    lead = Lead(PROGRAM, MONDAY, stage="recycled")
    tuesday = paris(2024, 6, 4, 11)
    lead.on(tuesday, EventKind.PERSONA, "finance")
    lead.wait_until(LATER)
    assert lead.sent() == [("product_update", MONDAY), ("budget_planning_finance", tuesday)]


# -- content consumed anywhere is skipped ---------------------------------------------------

def test_content_consumed_elsewhere_is_never_sent_and_the_next_email_takes_its_slot():
    lead = Lead(PROGRAM, MONDAY)
    lead.on(paris(2024, 6, 4, 15), EventKind.CONSUMED, "guide_it")  # read it on the website
    lead.wait_until(LATER)
    assert lead.sent() == [
        ("welcome_it", MONDAY),
        ("checklist_it", paris(2024, 6, 6, 10)),  # guide_it's slot, 3d after welcome_it
    ]


def test_content_consumed_before_the_first_send_skips_it():
    saturday = paris(2024, 6, 1, 12)  # enrolled on a weekend: welcome_it waits for Monday
    lead = Lead(PROGRAM, saturday)
    lead.on(paris(2024, 6, 2, 12), EventKind.CONSUMED, "welcome_it")
    lead.wait_until(LATER)
    assert lead.sent() == [
        ("guide_it", paris(2024, 6, 3, 9)),  # welcome_it's slot
        ("checklist_it", paris(2024, 6, 7, 9)),
    ]


def test_a_later_email_consumed_early_is_skipped_when_its_turn_comes():
    lead = Lead(PROGRAM, MONDAY)
    lead.on(paris(2024, 6, 4, 15), EventKind.CONSUMED, "checklist_it")
    lead.wait_until(LATER)
    assert lead.sent_assets() == ["welcome_it", "guide_it"]
    assert lead.state.status is Status.COMPLETED


# -- exits ----------------------------------------------------------------------------------

def test_an_exit_stage_stops_the_lead_until_it_is_recycled():
    lead = Lead(PROGRAM, MONDAY)
    decision = lead.on(paris(2024, 6, 4, 11), EventKind.STAGE, "sal")
    assert [a.kind for a in decision.actions] == [ActionKind.EXIT]
    lead.on(paris(2024, 6, 20, 11), EventKind.STAGE, "opportunity")
    lead.wait_until(paris(2024, 7, 31, 12))
    assert lead.sent_assets() == ["welcome_it"]
    assert lead.state.status is Status.EXITED

    monday = paris(2024, 8, 5, 10)
    lead.on(monday, EventKind.STAGE, "recycled")
    lead.wait_until(LATER)
    assert lead.sent() == [("welcome_it", MONDAY), ("product_update", monday),
                           ("benchmark_it", paris(2024, 8, 12, 9))]  # 5d: Saturday -> Monday


def test_a_lead_enrolled_in_an_exit_stage_exits_at_once():
    lead = Lead(PROGRAM, MONDAY, stage="customer")
    lead.wait_until(LATER)
    assert lead.state.status is Status.EXITED
    assert lead.sent() == []


@pytest.mark.parametrize(("kind", "detail"), [
    (EventKind.UNSUBSCRIBED, None),
    (EventKind.BOUNCED, "hard"),
    (EventKind.BOUNCED, None),  # a bounce is hard unless said otherwise
])
def test_unsubscribe_and_hard_bounce_are_final(kind, detail):
    lead = Lead(PROGRAM, MONDAY)
    lead.on(paris(2024, 6, 4, 11), kind, detail)
    assert lead.state.status is Status.EXITED
    for at, event in [(paris(2024, 6, 10, 10), Event(EventKind.STAGE, "recycled")),
                      (paris(2024, 6, 11, 10), Event(EventKind.CLICKED)),
                      (paris(2024, 6, 12, 10), Event(EventKind.PERSONA, "finance")),
                      (paris(2024, 6, 13, 10), Event(EventKind.ENROLLED))]:
        lead.on(at, event.kind, event.detail)
    lead.update(paris(2024, 6, 14, 10), with_tracks(PROGRAM, version=2))
    lead.wait_until(LATER)
    assert lead.sent_assets() == ["welcome_it"]
    assert lead.state.status is Status.EXITED


def test_a_soft_bounce_does_not_exit():
    lead = Lead(PROGRAM, MONDAY)
    lead.on(paris(2024, 6, 4, 11), EventKind.BOUNCED, "soft")
    lead.wait_until(LATER)
    assert lead.sent_assets() == ["welcome_it", "guide_it", "checklist_it"]


def test_talk_to_sales_notifies_sales_and_exits_until_the_lead_is_recycled():
    lead = Lead(PROGRAM, MONDAY)
    decision = lead.on(paris(2024, 6, 4, 11), EventKind.TALK_TO_SALES)
    assert {a.kind for a in decision.actions} == {ActionKind.NOTIFY, ActionKind.EXIT}
    assert lead.state.status is Status.EXITED
    # a persona change is not a way back into nurture
    lead.on(paris(2024, 6, 5, 11), EventKind.PERSONA, "finance")
    lead.wait_until(paris(2024, 7, 31, 12))
    assert lead.sent_assets() == ["welcome_it"]
    assert lead.state.status is Status.EXITED

    monday = paris(2024, 8, 5, 10)
    lead.on(monday, EventKind.STAGE, "recycled")
    assert lead.sent()[-1] == ("product_update", monday)  # finance/recycled


def test_talk_to_sales_is_passed_on_even_when_the_lead_unsubscribed():
    lead = Lead(PROGRAM, MONDAY)
    lead.on(paris(2024, 6, 4, 11), EventKind.UNSUBSCRIBED)
    decision = lead.on(paris(2024, 6, 5, 11), EventKind.TALK_TO_SALES)
    assert [a.kind for a in decision.actions] == [ActionKind.NOTIFY]
    assert lead.state.exit_reason == "unsubscribed"  # still final: no more nurture email


# -- non-responders -------------------------------------------------------------------------

LONG = with_tracks(PROGRAM, it_manager__inquiry=steps(
    "welcome_it", "1d", "guide_it", "1d", "checklist_it", "1d", "case_study_it", "1d", "roi_it"))
LONG_PAUSING = replace(LONG, rules=Rules(exit_on_stages=PROGRAM.rules.exit_on_stages,
                                         non_responders=NonResponders(after_sends=3)))


def test_a_non_responder_moves_to_the_rules_track():
    lead = Lead(LONG, MONDAY)
    lead.wait_until(LATER)
    assert lead.sent() == [
        ("welcome_it", MONDAY),
        ("guide_it", paris(2024, 6, 4, 10)),
        ("checklist_it", paris(2024, 6, 5, 10)),
        ("still_interested_it", paris(2024, 6, 6, 10)),  # instead of case_study_it
        ("breakup_it", paris(2024, 6, 10, 10)),
    ]
    assert [a.track for a in lead.of_kind(ActionKind.MOVE)][-1] == "it_manager/reengage"


@pytest.mark.parametrize("response", [EventKind.OPENED, EventKind.CLICKED, EventKind.PAGE_VIEWED])
def test_a_response_restarts_the_count(response):
    lead = Lead(LONG, MONDAY)
    lead.on(paris(2024, 6, 5, 12), response)  # after the third send
    lead.wait_until(LATER)
    assert lead.sent_assets() == ["welcome_it", "guide_it", "checklist_it", "case_study_it",
                                  "roi_it"]


@pytest.mark.parametrize(("content", "sent"), [
    ("roi_it", ["welcome_it", "guide_it", "checklist_it", "case_study_it"]),  # skipped, too
    ("pricing_webinar", ["welcome_it", "guide_it", "checklist_it", "case_study_it", "roi_it"]),
])
def test_content_consumed_elsewhere_is_a_response_so_the_lead_is_not_moved(content, sent):
    lead = Lead(LONG, MONDAY)
    lead.on(paris(2024, 6, 5, 12), EventKind.CONSUMED, content)  # after the third send
    lead.wait_until(LATER)
    assert lead.sent_assets() == sent
    assert [a.track for a in lead.of_kind(ActionKind.MOVE)] == ["it_manager/inquiry"]
    assert lead.state.status is Status.COMPLETED


def test_content_consumed_elsewhere_resumes_a_paused_non_responder():
    lead = Lead(LONG_PAUSING, MONDAY)
    lead.wait_until(paris(2024, 6, 28, 12))
    assert lead.state.status is Status.PAUSED
    monday = paris(2024, 7, 1, 10)
    lead.on(monday, EventKind.CONSUMED, "case_study_it")  # read the case study on the website
    lead.wait_until(LATER)
    assert lead.sent()[3:] == [("roi_it", monday)]


def test_sends_without_response_count_across_a_stage_change():
    # two sends in inquiry, one in engaged, none opened: roi_it's turn finds a non-responder
    lead = Lead(PROGRAM, MONDAY)
    lead.on(paris(2024, 6, 6, 12), EventKind.STAGE, "engaged")
    lead.wait_until(LATER)
    assert lead.sent_assets() == ["welcome_it", "guide_it", "case_study_it",
                                  "still_interested_it", "breakup_it"]


def test_a_non_responder_without_a_move_to_track_pauses_until_it_responds():
    lead = Lead(LONG_PAUSING, MONDAY)
    lead.wait_until(paris(2024, 6, 28, 12))
    assert lead.sent_assets() == ["welcome_it", "guide_it", "checklist_it"]
    assert lead.state.status is Status.PAUSED
    assert lead.of_kind(ActionKind.PAUSE)[-1].at == paris(2024, 6, 6, 10)

    monday = paris(2024, 7, 1, 10)
    lead.on(monday, EventKind.CLICKED)
    lead.wait_until(LATER)
    assert lead.sent()[3:] == [("case_study_it", monday), ("roi_it", paris(2024, 7, 2, 10))]


PER_PERSONA = replace(
    with_tracks(LONG, finance__inquiry=steps("welcome_finance", "1d", "cost_guide_finance", "1d",
                                             "tco_finance", "1d", "case_study_finance")),
    rules=Rules(exit_on_stages=PROGRAM.rules.exit_on_stages,
                non_responders=NonResponders(after_sends=3, move_to="reengage")))


def test_a_bare_move_to_names_each_personas_own_side_track_or_pauses_without_one():
    it = Lead(PER_PERSONA, MONDAY)
    it.wait_until(LATER)
    assert [a.track for a in it.of_kind(ActionKind.MOVE)][-1] == "it_manager/reengage"
    finance = Lead(PER_PERSONA, MONDAY, persona="finance")  # the pinned program has no finance/reengage
    finance.wait_until(LATER)
    assert finance.sent_assets() == ["welcome_finance", "cost_guide_finance", "tco_finance"]
    assert finance.state.status is Status.PAUSED


# -- perpetual program: a finished track waits for new steps ---------------------------------

FINANCE_V2 = with_tracks(PROGRAM, version=2, finance__inquiry=steps(
    "welcome_finance", "3d", "cost_guide_finance", "1w", "budget_planning_finance"))


def test_a_finished_lead_waits_and_continues_when_a_step_is_appended():
    lead = Lead(PROGRAM, MONDAY, persona="finance")
    lead.wait_until(paris(2024, 6, 10, 12))
    assert lead.state.status is Status.COMPLETED
    lead.update(paris(2024, 6, 10, 12), FINANCE_V2)
    lead.wait_until(LATER)
    assert lead.sent() == [
        ("welcome_finance", MONDAY),
        ("cost_guide_finance", paris(2024, 6, 6, 10)),
        ("budget_planning_finance", paris(2024, 6, 13, 10)),  # 1w after cost_guide_finance
    ]
    assert lead.state.version == 2


def test_a_step_appended_long_after_is_sent_at_the_next_window_opening():
    lead = Lead(PROGRAM, MONDAY, persona="finance")
    lead.update(paris(2024, 7, 6, 12), FINANCE_V2)  # a Saturday
    lead.wait_until(LATER)
    assert lead.sent()[2:] == [("budget_planning_finance", paris(2024, 7, 8, 9))]


# -- a new program version migrates by step identity ----------------------------------------

def _after_guide_it() -> Lead:
    lead = Lead(PROGRAM, MONDAY)
    lead.on(paris(2024, 6, 6, 12), EventKind.OPENED)  # a responder: no non-responder move below
    lead.wait_until(paris(2024, 6, 7, 12))  # welcome_it Mon, guide_it Thu; checklist_it is next
    assert lead.sent_assets() == ["welcome_it", "guide_it"]
    return lead


def test_a_step_inserted_after_the_leads_position_is_next():
    lead = _after_guide_it()
    lead.update(paris(2024, 6, 7, 12), with_tracks(PROGRAM, version=2, it_manager__inquiry=steps(
        "welcome_it", "3d", "guide_it", "2d", "roi_it", "4d", "checklist_it")))
    lead.wait_until(LATER)
    assert lead.sent()[2:] == [
        ("roi_it", paris(2024, 6, 10, 9)),  # 2d after guide_it is Saturday: Monday opening
        ("checklist_it", paris(2024, 6, 14, 9)),
    ]


def test_a_step_inserted_before_the_leads_position_is_not_sent():
    lead = _after_guide_it()
    lead.update(paris(2024, 6, 7, 12), with_tracks(PROGRAM, version=2, it_manager__inquiry=steps(
        "roi_it", "1d", "welcome_it", "3d", "guide_it", "4d", "checklist_it")))
    lead.wait_until(LATER)
    assert lead.sent()[2:] == [("checklist_it", paris(2024, 6, 10, 10))]  # unchanged


def test_reordering_keeps_the_position_of_the_last_email_sent_and_never_resends():
    lead = _after_guide_it()
    lead.update(paris(2024, 6, 7, 12), with_tracks(PROGRAM, version=2, it_manager__inquiry=steps(
        "guide_it", "1d", "welcome_it", "2d", "checklist_it")))
    lead.wait_until(LATER)
    assert lead.sent_assets() == ["welcome_it", "guide_it", "checklist_it"]


def test_removing_the_last_email_sent_continues_without_resending():
    lead = _after_guide_it()
    lead.update(paris(2024, 6, 7, 12), with_tracks(PROGRAM, version=2, it_manager__inquiry=steps(
        "welcome_it", "3d", "checklist_it", "1w", "roi_it")))
    lead.wait_until(LATER)
    assert lead.sent_assets() == ["welcome_it", "guide_it", "checklist_it", "roi_it"]


def test_removing_the_leads_track_moves_it_to_its_cell_or_idles_it():
    lead = _after_guide_it()
    tracks = {k: v for k, v in PROGRAM.tracks.items() if k != "it_manager/inquiry"}
    lead.update(paris(2024, 6, 7, 12), replace(PROGRAM, tracks=tracks, version=2))
    lead.wait_until(LATER)
    assert lead.state.status is Status.IDLE
    assert lead.sent_assets() == ["welcome_it", "guide_it"]


def test_an_idle_lead_starts_when_its_cell_gets_a_track():
    lead = Lead(PROGRAM, MONDAY, stage="mql")
    lead.update(paris(2024, 6, 4, 11), with_tracks(PROGRAM, version=2,
                                                   it_manager__mql=steps("roi_it")))
    assert lead.sent() == [("roi_it", paris(2024, 6, 4, 11))]


# -- send window, time zones and DST --------------------------------------------------------

def test_sends_wait_for_the_window_in_the_programs_zone():
    lead = Lead(PROGRAM, paris(2024, 6, 5, 16))  # Wednesday 16:00: welcome now; guide_it, Saturday
    lead.wait_until(LATER)
    assert lead.sent()[:2] == [("welcome_it", paris(2024, 6, 5, 16)),
                               ("guide_it", paris(2024, 6, 10, 9))]


def test_sends_wait_for_the_window_in_the_leads_zone():
    lead = Lead(PROGRAM, MONDAY, timezone="America/New_York")  # 04:00 in New York
    assert lead.sent() == []
    assert lead.state.due_at == datetime(2024, 6, 3, 9, tzinfo=NEW_YORK)
    lead.wait_until(LATER)
    first = lead.sent()[0][1]
    assert first == datetime(2024, 6, 3, 9, tzinfo=NEW_YORK)


@pytest.mark.parametrize(("timezone", "thursday", "monday_0900_utc"), [
    ("Europe/Paris", (2024, 3, 28), datetime(2024, 4, 1, 7, tzinfo=UTC)),  # CET -> CEST
    ("Europe/Paris", (2024, 10, 24), datetime(2024, 10, 28, 8, tzinfo=UTC)),  # CEST -> CET
    ("America/New_York", (2024, 3, 7), datetime(2024, 3, 11, 13, tzinfo=UTC)),  # EST -> EDT
    ("America/New_York", (2024, 10, 31), datetime(2024, 11, 4, 14, tzinfo=UTC)),  # EDT -> EST
])
def test_a_wait_across_a_dst_weekend_lands_at_the_local_window_opening(
        timezone, thursday, monday_0900_utc):
    tz = ZoneInfo(timezone)
    enrolled = datetime(*thursday, 10, tzinfo=tz)
    lead = Lead(PROGRAM, enrolled, timezone=timezone)
    lead.wait_until(monday_0900_utc + timedelta(days=1))
    assert lead.sent()[:2] == [("welcome_it", enrolled), ("guide_it", monday_0900_utc)]
    assert lead.sent()[1][1].astimezone(tz).time() == time(9)


@pytest.mark.parametrize(("timezone", "friday", "monday"), [
    ("America/New_York", (2026, 3, 6), (2026, 3, 9)),  # EST -> EDT: 72h would be Monday 17:00
    ("America/New_York", (2026, 10, 30), (2026, 11, 2)),  # EDT -> EST: 72h would be 15:00
    ("Europe/Paris", (2026, 3, 27), (2026, 3, 30)),  # CET -> CEST
    ("Europe/Paris", (2026, 10, 23), (2026, 10, 26)),  # CEST -> CET
])
def test_a_3d_wait_from_friday_1600_across_a_dst_change_sends_monday_1600_local(
        timezone, friday, monday):
    tz = ZoneInfo(timezone)
    enrolled = datetime(*friday, 16, tzinfo=tz)
    lead = Lead(PROGRAM, enrolled, timezone=timezone)
    lead.wait_until(enrolled + timedelta(days=5))
    assert lead.sent()[:2] == [("welcome_it", enrolled), ("guide_it", datetime(*monday, 16, tzinfo=tz))]


@pytest.mark.parametrize(("thursday", "week_later"), [((2026, 3, 5), (2026, 3, 12)),
                                                      ((2026, 10, 29), (2026, 11, 5))])
def test_a_week_wait_across_a_dst_change_keeps_the_local_time(thursday, week_later):
    enrolled = datetime(*thursday, 10, tzinfo=NEW_YORK)
    lead = Lead(PROGRAM, enrolled, stage="engaged", timezone="America/New_York")
    lead.wait_until(enrolled + timedelta(days=10))
    assert lead.sent() == [("case_study_it", enrolled),
                           ("roi_it", datetime(*week_later, 10, tzinfo=NEW_YORK))]


BEFORE_SPRING = datetime(2026, 3, 7, 8, tzinfo=NEW_YORK)  # Saturday 08:00 EST; Sunday is EDT
BEFORE_FALL = datetime(2026, 10, 31, 8, tzinfo=NEW_YORK)  # Saturday 08:00 EDT; Sunday is EST


@pytest.mark.parametrize(("enrolled", "wait", "sent"), [
    (BEFORE_SPRING, "1d", datetime(2026, 3, 8, 8, tzinfo=NEW_YORK)),
    (BEFORE_SPRING, "24h", datetime(2026, 3, 8, 9, tzinfo=NEW_YORK)),
    (BEFORE_SPRING, "30h", datetime(2026, 3, 8, 15, tzinfo=NEW_YORK)),
    (BEFORE_SPRING, "1d12h", datetime(2026, 3, 8, 20, tzinfo=NEW_YORK)),  # a day, then 12 hours
    (BEFORE_SPRING, "1w", datetime(2026, 3, 14, 8, tzinfo=NEW_YORK)),
    (BEFORE_FALL, "1d", datetime(2026, 11, 1, 8, tzinfo=NEW_YORK)),
    (BEFORE_FALL, "24h", datetime(2026, 11, 1, 7, tzinfo=NEW_YORK)),
    (BEFORE_FALL, "1d12h", datetime(2026, 11, 1, 20, tzinfo=NEW_YORK)),
    (BEFORE_FALL, "1w", datetime(2026, 11, 7, 8, tzinfo=NEW_YORK)),
])
def test_day_and_week_waits_keep_the_local_time_and_hour_waits_stay_exact(enrolled, wait, sent):
    every_day = replace(with_tracks(PROGRAM, it_manager__inquiry=steps("welcome_it", wait,
                                                                        "guide_it")),
                        send_window=SendWindow(days=frozenset(range(7)), start=time(7),
                                               end=time(22)))
    lead = Lead(every_day, enrolled, timezone="America/New_York")
    lead.wait_until(enrolled + timedelta(days=10))
    assert lead.sent() == [("welcome_it", enrolled), ("guide_it", sent)]


def test_a_window_opening_at_0230_on_the_spring_forward_night_sends_at_0300():
    night_owl = replace(PROGRAM, send_window=SendWindow(days=frozenset(range(7)),
                                                       start=time(2, 30), end=time(17)))
    lead = Lead(night_owl, paris(2024, 3, 30, 20))  # Saturday evening
    lead.wait_until(paris(2024, 3, 31, 12))
    assert lead.sent() == [("welcome_it", datetime(2024, 3, 31, 1, 0, tzinfo=UTC))]  # 03:00 CEST


def test_a_late_scheduler_does_not_send_outside_the_window():
    lead = Lead(PROGRAM, MONDAY)
    evening = paris(2024, 6, 6, 20)  # guide_it was due Thursday 10:00; the worker was down
    decision = lead.deliver(evening, Event(EventKind.DUE))
    assert [a for a in decision.actions if a.kind is ActionKind.SEND] == []
    assert lead.state.due_at == paris(2024, 6, 7, 9)
    lead.wait_until(LATER)
    assert lead.sent()[1] == ("guide_it", paris(2024, 6, 7, 9))


# -- actions and state ----------------------------------------------------------------------

def test_every_action_names_the_event_that_caused_it():
    lead = Lead(PROGRAM, MONDAY)
    decision = lead.on(paris(2024, 6, 4, 11), EventKind.STAGE, "engaged")
    assert {a.cause for a in decision.actions} == {EventKind.STAGE}
    lead.wait_until(LATER)
    assert lead.of_kind(ActionKind.SEND)[-1].cause is EventKind.DUE


@pytest.mark.parametrize("stop", [None, EventKind.TALK_TO_SALES])
def test_state_survives_a_round_trip_through_json(stop):
    lead = Lead(PROGRAM, MONDAY)
    lead.on(paris(2024, 6, 4, 11), EventKind.CONSUMED, "checklist_it")
    if stop:
        lead.on(paris(2024, 6, 4, 12), stop)
    state = lead.state
    again = EnrollmentState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state
    assert again.to_dict() == state.to_dict()
    # and deciding from the stored copy gives the same result
    event, at = Event(EventKind.DUE), paris(2024, 6, 6, 10)
    assert decide(PROGRAM, again, event, at) == decide(PROGRAM, state, event, at)
