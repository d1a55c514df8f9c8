"""Properties of decide() over random event sequences, on the sample program and on small
generated programs.

A scenario is a lead, a start time and a list of (gap, event). A scheduler delivers DUE events
whenever a step is due, possibly late (a lagging worker), and every state is stored and read back
through JSON between decisions, as the service does. A model of what the lead did (what it was
sent or consumed, whether it left nurture) is kept beside it, independent of decide().
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from engine.journeys.decide import (
    RESPONSES,
    ActionKind,
    EnrollmentState,
    Event,
    EventKind,
    Status,
    decide,
    new_state,
)
from engine.leads.stages import STAGES
from engine.programs.loader import load_program_dir
from engine.programs.spec import (
    Email,
    NonResponders,
    Persona,
    Program,
    Rules,
    SendWindow,
    Step,
    Wait,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = load_program_dir(ROOT / "assets" / "acme-nurture").program
PINNED = load_program_dir(ROOT / "tests" / "programs" / "pinned-nurture").program
UTC = ZoneInfo("UTC")
JANUARY = datetime(2024, 1, 1, tzinfo=UTC)
ZONES = ["Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"]
WAITS = [Wait.parse(w) for w in ("30m", "12h", "24h", "1d", "1d12h", "3d", "1w")]
DST_DAYS = [datetime(2024, 3, 10, tzinfo=UTC), datetime(2024, 3, 31, tzinfo=UTC),
            datetime(2024, 10, 27, tzinfo=UTC), datetime(2024, 11, 3, tzinfo=UTC)]
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NURTURE_STAGES = [s for s in STAGES if s not in SAMPLE.rules.exit_on_stages]
# mostly nurture stages and events that keep the lead going; exits now and then
STAGE_WEIGHTS = NURTURE_STAGES * 3 + list(STAGES)
KIND_WEIGHTS = [
    EventKind.OPENED, EventKind.CLICKED, EventKind.PAGE_VIEWED, EventKind.FORM_SUBMITTED,
    *[EventKind.CONSUMED] * 3, *[EventKind.STAGE] * 3, *[EventKind.PERSONA] * 2,
    *[EventKind.PROGRAM_UPDATED] * 3, EventKind.ENROLLED, EventKind.TALK_TO_SALES,
    EventKind.BOUNCED, EventKind.UNSUBSCRIBED,
]
# kinds of action each event may cause
ALLOWED = {
    EventKind.ENROLLED: {ActionKind.MOVE, ActionKind.PAUSE, ActionKind.SEND, ActionKind.EXIT},
    EventKind.DUE: {ActionKind.SEND, ActionKind.MOVE, ActionKind.PAUSE},
    EventKind.STAGE: {ActionKind.MOVE, ActionKind.PAUSE, ActionKind.SEND, ActionKind.EXIT},
    EventKind.PERSONA: {ActionKind.MOVE, ActionKind.PAUSE, ActionKind.SEND},
    EventKind.UNSUBSCRIBED: {ActionKind.EXIT},
    EventKind.BOUNCED: {ActionKind.EXIT},
    EventKind.TALK_TO_SALES: {ActionKind.NOTIFY, ActionKind.EXIT},
    EventKind.PROGRAM_UPDATED: {ActionKind.MOVE, ActionKind.PAUSE, ActionKind.SEND},
    **{kind: {ActionKind.MOVE, ActionKind.PAUSE, ActionKind.SEND} for kind in RESPONSES},
}


# -- programs ---------------------------------------------------------------------------------

@st.composite
def small_programs(draw) -> Program:
    """Two personas, a few cells with short tracks over a shared pool of emails, maybe a side
    track for non-responders, any send window and time zone."""
    pool = [f"mail_{i}" for i in range(8)]
    cells = [f"{p}/{s}" for p in ("alpha", "beta") for s in ("inquiry", "engaged", "recycled")]

    def track():
        emails = draw(st.lists(st.sampled_from(pool), unique=True, max_size=4))
        steps = []
        for email in emails:
            steps.append(Step(email=email))
            if draw(st.booleans()):
                steps.append(Step(wait=draw(st.sampled_from(WAITS))))
        return tuple(steps)

    tracks = {cell: track() for cell in cells if draw(st.booleans())}
    side = None
    if draw(st.booleans()):
        side = "alpha/reengage"
        tracks[side] = track()
    rule = draw(st.none() | st.builds(NonResponders, after_sends=st.integers(1, 3),
                                      move_to=st.sampled_from([side, None])))
    days = draw(st.frozensets(st.integers(0, 6), min_size=1))
    start = draw(st.integers(0, 22 * 4)) * 15
    end = draw(st.integers(start // 15 + 1, 24 * 4 - 1)) * 15
    return Program(
        slug="generated", name="generated", timezone=draw(st.sampled_from(ZONES)),
        send_window=SendWindow(days=days, start=time(start // 60, start % 60),
                               end=time(end // 60, end % 60)),
        personas={p: Persona(key=p, name=p) for p in ("alpha", "beta")},
        emails={e: Email(key=e, file=f"emails/{e}.mjml", subject=e) for e in pool},
        pages={}, tracks=tracks,
        rules=Rules(exit_on_stages=draw(st.frozensets(st.sampled_from(STAGES))),
                    non_responders=rule),
        version=1,
    )


def new_version(program: Program, seed: int) -> Program:
    """The next version: a step appended, steps reordered, a step or a whole track removed."""
    rnd = random.Random(seed)
    tracks = dict(program.tracks)
    name = rnd.choice(sorted(tracks)) if tracks else None
    change = rnd.choice(["append", "append", "reorder", "remove", "drop_track"])
    if name is not None:
        steps = list(tracks[name])
        if change == "append":
            unused = sorted(set(program.emails) - {s.email for s in steps})
            if unused:
                steps += [Step(wait=rnd.choice(WAITS)), Step(email=rnd.choice(unused))]
        elif change == "reorder":
            rnd.shuffle(steps)
        elif change == "remove" and steps:
            del steps[rnd.randrange(len(steps))]
        rule = program.rules.non_responders
        if change == "drop_track" and not (rule and rule.move_to == name):
            del tracks[name]
        else:
            tracks[name] = tuple(steps)
    return replace(program, tracks=tracks, version=program.version + 1)


# -- scenarios --------------------------------------------------------------------------------

@dataclass
class Scenario:
    program: Program
    persona: str
    stage: str
    timezone: str | None
    start: datetime
    clock_zone: str  # the zone `now` is expressed in: decisions must not depend on it
    lag: timedelta  # how late the scheduler delivers DUE events
    events: list[tuple[timedelta, Event | int]] = field(default_factory=list)  # int: update seed


@st.composite
def scenarios(draw, programs) -> Scenario:
    program = draw(programs)
    personas = sorted(program.personas)
    emails = sorted(program.emails) + sorted(program.pages)
    details = {
        EventKind.STAGE: st.sampled_from(STAGE_WEIGHTS),
        EventKind.PERSONA: st.sampled_from(personas),
        EventKind.CONSUMED: st.sampled_from(emails),
        EventKind.BOUNCED: st.sampled_from([None, "hard", "soft"]),
    }
    event = st.sampled_from(KIND_WEIGHTS).flatmap(
        lambda kind: st.integers(0, 2**32) if kind is EventKind.PROGRAM_UPDATED  # update seed
        else st.builds(Event, st.just(kind), details.get(kind, st.none())))
    gap = st.one_of(st.integers(0, 3600), st.integers(0, 3 * 86400), st.integers(0, 12 * 86400))
    start = draw(st.one_of(
        st.integers(0, 366 * 86400).map(lambda s: JANUARY + timedelta(seconds=s)),
        st.builds(lambda day, s: day - timedelta(seconds=s), st.sampled_from(DST_DAYS),
                  st.integers(0, 10 * 86400)),
    ))
    return Scenario(
        program=program, persona=draw(st.sampled_from(personas)),
        stage=draw(st.sampled_from(STAGE_WEIGHTS)),
        timezone=draw(st.none() | st.sampled_from(ZONES)),
        start=start, clock_zone=draw(st.sampled_from(["UTC", "Europe/Paris", "America/New_York"])),
        lag=timedelta(seconds=draw(st.sampled_from([0, 0, 0, 59, 3 * 3600, 20 * 3600]))),
        events=draw(st.lists(st.tuples(gap.map(lambda s: timedelta(seconds=s)), event),
                             min_size=3, max_size=30)),
    )


# -- the run and the model -------------------------------------------------------------------

def stored(state: EnrollmentState) -> EnrollmentState:
    """The state as the service stores it and reads it back."""
    return EnrollmentState.from_dict(json.loads(json.dumps(state.to_dict())))


def in_window(window: SendWindow, at: datetime, tz: ZoneInfo) -> bool:
    wall = at.astimezone(UTC).astimezone(tz)
    return wall.weekday() in window.days and window.start <= wall.time() < window.end


class Run:
    """Folds a scenario through decide(), checking every decision against the model."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.program = scenario.program
        self.clock = ZoneInfo(scenario.clock_zone)
        self.state = new_state(self.program, persona=scenario.persona, stage=scenario.stage,
                               timezone=scenario.timezone)
        self.memory = self.state  # the same lead folded in memory, never stored (as in QA runs)
        self.seen: set[str] = set()  # sent or consumed
        self.final_exit = False  # unsubscribed or hard bounce
        self.exited = False  # exit stage or talk to sales, until a stage event back to nurture
        self.last_send: datetime | None = None
        self.sends = 0

    def run(self) -> None:
        now = self.scenario.start
        self.deliver(Event(EventKind.ENROLLED), now)
        for gap, item in self.scenario.events:
            now += gap
            self.catch_up(now)
            if isinstance(item, int):
                self.program = new_version(self.program, item)
                item = Event(EventKind.PROGRAM_UPDATED, f"version {self.program.version}")
            self.deliver(item, now)
        self.catch_up(now + timedelta(days=30))

    def catch_up(self, until: datetime) -> None:
        """The scheduler: deliver DUE for every step due (lag late) up to `until`."""
        for _ in range(200):
            state = self.state
            if state.status is not Status.ACTIVE or state.due_at + self.scenario.lag > until:
                return
            self.deliver(Event(EventKind.DUE), state.due_at + self.scenario.lag)
            assert self.state != state, "a DUE event that was due changed nothing"
        raise AssertionError("the scheduler never caught up")

    def deliver(self, event: Event, now: datetime) -> None:
        clock = now.astimezone(self.clock)  # what the caller's clock reads
        now = now.astimezone(UTC)  # checks compare in UTC (PEP 495: a repeated wall time never
        before = self.state        # compares equal across zones)
        decision = decide(self.program, before, event, clock)
        # (f) state round-trips through JSON exactly, and storing it changes no decision
        in_memory = decide(self.program, self.memory, event, clock)
        assert in_memory == decision
        self.memory = in_memory.state
        self.update_model(event)
        self.check(before, event, now, decision)
        self.state = stored(decision.state)
        assert self.state == decision.state
        assert self.state.to_dict() == decision.state.to_dict()

    def update_model(self, event: Event) -> None:
        kind, detail = event.kind, event.detail
        exits = self.program.rules.exit_on_stages
        if kind is EventKind.UNSUBSCRIBED or (kind is EventKind.BOUNCED and detail != "soft"):
            self.final_exit = True
        elif kind is EventKind.TALK_TO_SALES:
            self.exited = True
        elif kind is EventKind.STAGE:
            self.exited = detail in exits
        elif kind is EventKind.ENROLLED and self.state.track is None and self.state.stage in exits:
            self.exited = True  # placed for the first time, in an exit stage

    def check(self, before: EnrollmentState, event: Event, now: datetime, decision) -> None:
        state, program = decision.state, self.program
        tz = ZoneInfo(state.timezone)
        for action in decision.actions:
            # (d) every action is explained by the event of this decision
            assert action.cause == event.kind
            assert action.kind in ALLOWED[event.kind], (action, event)
            assert action.at == now
            if action.kind is not ActionKind.SEND:
                continue
            # (d) a send happens only when one may: a due step, or a lead (re)placed in a track
            if event.kind is EventKind.DUE:
                assert before.status is Status.ACTIVE and before.due_at <= now
            if event.kind in RESPONSES:
                assert before.status is Status.PAUSED
            # (a) no asset twice, nothing the lead already consumed
            assert action.asset not in self.seen, f"{action.asset} sent again"
            self.seen.add(action.asset)
            assert action.asset in {s.email for s in program.tracks[action.track]}
            # (b) nothing after unsubscribe or hard bounce, nor during an exit
            assert not self.final_exit, "sent after unsubscribe or hard bounce"
            assert not self.exited, "sent after an exit"
            # (c) send times never go back
            assert self.last_send is None or action.at >= self.last_send
            self.last_send = action.at
            # (e) inside the send window, in the lead's zone
            assert in_window(program.send_window, action.at, tz), action.at.astimezone(tz)
            self.sends += 1
        if event.kind is EventKind.CONSUMED and event.detail:
            self.seen.add(event.detail)
        # (b) the state says so too
        if self.final_exit or self.exited:
            assert state.status is Status.EXITED
        if self.final_exit:
            assert state.exit_reason in ("unsubscribed", "hard_bounce")
        # (c) a due time set by this decision is not in the past
        if state.due_at is not None and state.due_at != before.due_at:
            assert state.due_at >= now
            # (e) and the due time shown to users is one at which the email can go out
            assert in_window(program.send_window, state.due_at, tz), state.due_at.astimezone(tz)
        if state.status is Status.ACTIVE:
            assert state.due_at is not None and state.next_email not in self.seen
        # a stage or persona change puts the lead in its cell's track (or the non-responder one)
        if event.kind in (EventKind.STAGE, EventKind.PERSONA) and state.status is not Status.EXITED:
            cell = program.cell_track(state.persona, state.stage)
            rule = program.rules.non_responders
            assert state.track in {cell, rule and rule.target(state.persona)} or (
                cell is None and state.status is Status.IDLE)


@SETTINGS
@given(scenarios(st.just(SAMPLE)))
def test_sample_program_properties(scenario):
    run = Run(scenario)
    run.run()
    target(run.sends)  # steer the search toward long journeys


@SETTINGS
@given(scenarios(small_programs()))
def test_generated_program_properties(scenario):
    run = Run(scenario)
    run.run()
    target(run.sends)


def test_decisions_do_not_depend_on_the_zone_the_clock_reads_in():
    """A 3d wait across the spring-forward weekend, rescheduled after the state was stored."""
    run = Run(Scenario(program=PINNED, persona="it_manager", stage="inquiry", timezone=None,
                       start=datetime(2024, 3, 29, 9, tzinfo=UTC), clock_zone="Europe/Paris",
                       lag=timedelta(0),
                       events=[(timedelta(days=1), Event(EventKind.CONSUMED, "guide_it"))]))
    run.run()
    assert run.seen == {"welcome_it", "guide_it", "checklist_it"}


def test_the_run_does_see_sends_and_exits():
    """Guard against properties that hold vacuously: a plain scenario sends, then stops."""
    day = timedelta(days=1)
    run = Run(Scenario(program=PINNED, persona="it_manager", stage="inquiry", timezone=None,
                       start=datetime(2024, 6, 3, 8, tzinfo=UTC), clock_zone="UTC",
                       lag=timedelta(0),
                       events=[(4 * day, Event(EventKind.UNSUBSCRIBED)),
                               (day, Event(EventKind.STAGE, "recycled"))]))
    run.run()
    assert run.seen == {"welcome_it", "guide_it"}
    assert run.final_exit and run.state.exit_reason == "unsubscribed"
