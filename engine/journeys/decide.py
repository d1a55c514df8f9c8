"""The nurture decision logic: a pure function of enrollment state, an event and `now`.

No I/O. Callers persist the returned state and actions (enrollments, due times, the event log),
or, in simulation and QA, just fold events over it on a simulated clock.

Rules, in one place:
- A lead follows the track of its persona x stage cell, unless a rule moved it to a side track.
- The next step is the first email of the track, from the current position, that the lead has not
  received or consumed anywhere. A wait is the gap after the step before it; when an email is
  skipped, the wait that follows it is skipped too, so the next email takes its slot.
- Waits count days and weeks as calendar days in the lead's time zone (the same wall time N days
  later, across DST changes), hours and minutes as exact durations. The waits before an email
  add up: their days first, then their hours and minutes (spec.Wait.after).
- Sends land inside the program's send window in the lead's time zone; a step processed after the
  window closed (a late scheduler) waits for the next opening.
- Exits: a stage listed in rules.exit_on_stages, unsubscribe, hard bounce, talk to sales. A stage
  exit (and talk to sales) ends when a stage event brings the lead back to a nurture stage (e.g.
  recycled); unsubscribe and hard bounce are final. Talk to sales always notifies sales.
- Non-responders: after N sends without a response (an open, click, visit, form or content
  consumed anywhere; counted across tracks), the next due step moves the lead to the rule's
  track, where a new count starts, or pauses it. A response resumes a paused lead in its cell's
  track.
- A finished track waits; a new program version migrates by step identity (the last email sent)
  and continues with steps appended since, never resending.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from engine.programs.spec import Program, Wait


class Status(StrEnum):
    ACTIVE = "active"  # a send is due at due_at
    COMPLETED = "completed"  # track finished; waits for steps to be appended
    IDLE = "idle"  # the lead's persona x stage cell has no track
    PAUSED = "paused"  # non-responder without a move_to track
    EXITED = "exited"


class EventKind(StrEnum):
    ENROLLED = "enrolled"
    DUE = "due"
    OPENED = "opened"
    CLICKED = "clicked"
    PAGE_VIEWED = "page_viewed"
    FORM_SUBMITTED = "form_submitted"
    CONSUMED = "consumed"
    STAGE = "stage"
    PERSONA = "persona"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    TALK_TO_SALES = "talk_to_sales"
    PROGRAM_UPDATED = "program_updated"
    ASSIST = "assist"  # marketing supports a stalled deal: detail names the track


RESPONSES = frozenset({EventKind.OPENED, EventKind.CLICKED, EventKind.PAGE_VIEWED,
                       EventKind.FORM_SUBMITTED, EventKind.CONSUMED})
FINAL_EXITS = frozenset({"unsubscribed", "hard_bounce"})
_UTC = ZoneInfo("UTC")


class ActionKind(StrEnum):
    SEND = "send"
    MOVE = "move"
    EXIT = "exit"
    NOTIFY = "notify"
    PAUSE = "pause"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    detail: str | None = None


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    at: datetime
    cause: EventKind  # the event that explains this action
    asset: str | None = None
    track: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class EnrollmentState:
    persona: str
    stage: str
    timezone: str
    status: Status = Status.IDLE
    track: str | None = None
    position: int = 0  # index of the first step not yet passed in `track`
    last_email: str | None = None  # identity of the last step sent in `track`
    anchor_at: datetime | None = None  # waits count from here: last send, or entering the track
    due_at: datetime | None = None
    next_email: str | None = None
    received: frozenset[str] = frozenset()
    sends_without_response: int = 0
    exit_reason: str | None = None
    version: int = 0

    def to_dict(self) -> dict:
        return {
            "persona": self.persona, "stage": self.stage, "timezone": self.timezone,
            "status": self.status.value, "track": self.track, "position": self.position,
            "last_email": self.last_email,
            "anchor_at": self.anchor_at.isoformat() if self.anchor_at else None,
            "due_at": self.due_at.isoformat() if self.due_at else None,
            "next_email": self.next_email, "received": sorted(self.received),
            "sends_without_response": self.sends_without_response,
            "exit_reason": self.exit_reason, "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: dict) -> EnrollmentState:
        def when(value):
            return datetime.fromisoformat(value) if value else None

        return cls(
            persona=data["persona"], stage=data["stage"], timezone=data["timezone"],
            status=Status(data["status"]), track=data["track"], position=data["position"],
            last_email=data["last_email"], anchor_at=when(data["anchor_at"]),
            due_at=when(data["due_at"]), next_email=data["next_email"],
            received=frozenset(data["received"]),
            sends_without_response=data["sends_without_response"],
            exit_reason=data["exit_reason"], version=data["version"],
        )


@dataclass(frozen=True)
class Decision:
    state: EnrollmentState
    actions: tuple[Action, ...] = field(default_factory=tuple)


def new_state(program: Program, *, persona: str, stage: str, timezone: str | None) -> EnrollmentState:
    """A lead not yet placed in any track; decide() with an ENROLLED event places it."""
    return EnrollmentState(persona=persona, stage=stage, timezone=timezone or program.timezone,
                           version=program.version)


def decide(program: Program, state: EnrollmentState, event: Event, now: datetime) -> Decision:
    handler = _HANDLERS[EventKind(event.kind)]
    # Times are kept in UTC: an aware datetime in a DST zone adds waits in wall-clock time, and
    # loses its zone when stored, so the same lead would be scheduled differently once stored.
    return handler(_Run(program, state, event, now.astimezone(_UTC)))


class _Run:
    """Accumulates the state and actions of one decision."""

    def __init__(self, program: Program, state: EnrollmentState, event: Event, now: datetime):
        self.program, self.state, self.event, self.now = program, state, event, now
        self.actions: list[Action] = []

    def act(self, kind: ActionKind, *, asset=None, track=None, reason="") -> None:
        self.actions.append(Action(kind, self.now, self.event.kind, asset, track, reason))

    def done(self) -> Decision:
        return Decision(self.state, tuple(self.actions))

    def update(self, **changes) -> None:
        self.state = replace(self.state, **changes)

    # -- moving between tracks ------------------------------------------------------------

    def cell(self) -> str | None:
        return self.program.cell_track(self.state.persona, self.state.stage)

    def enter(self, track: str | None, reason: str) -> None:
        """Place the lead at the start of `track` (or idle when its cell has none)."""
        if track is None:
            cell = f"{self.state.persona}/{self.state.stage}"
            self.update(status=Status.IDLE, track=None, position=0, last_email=None,
                        due_at=None, next_email=None)
            self.act(ActionKind.PAUSE, track=cell, reason=f"{reason}; no track for {cell}, waiting")
            return
        self.update(status=Status.ACTIVE, track=track, position=0, last_email=None,
                    anchor_at=self.now)
        self.act(ActionKind.MOVE, track=track, reason=reason)
        self.schedule()

    def follow_cell(self, reason: str) -> None:
        """Move to the track of the lead's current persona x stage cell, if not already there."""
        cell = self.cell()
        if cell is None and self.state.status is Status.IDLE:
            return  # already waiting on an empty cell
        if cell is None or cell != self.state.track:
            self.enter(cell, reason)

    def exit(self, reason: str) -> None:
        self.update(status=Status.EXITED, exit_reason=reason, due_at=None, next_email=None)
        self.act(ActionKind.EXIT, track=self.state.track, reason=reason)

    # -- scheduling -----------------------------------------------------------------------

    def schedule(self) -> None:
        """Find the next email to send from the current position, and when.

        The position stays just after the last email sent (or at the start of the track): the
        waits between it and the next email count from anchor_at, so a skipped email's slot
        goes to the email after it, even when it is skipped after being scheduled.
        """
        steps = self.program.tracks.get(self.state.track or "", ())
        wait: Wait | None = None
        skipping = False
        for index in range(self.state.position, len(steps)):
            step = steps[index]
            if step.wait is not None:
                if not skipping:
                    wait = step.wait if wait is None else wait + step.wait
                continue
            if step.email in self.state.received:
                skipping = True
                continue
            zone = ZoneInfo(self.state.timezone)
            anchor = self.state.anchor_at or self.now
            ends = anchor if wait is None else wait.after(anchor, zone)
            due = self.program.send_window.next_open(max(ends, self.now), zone)
            self.update(status=Status.ACTIVE, due_at=due, next_email=step.email)
            return
        self.update(status=Status.COMPLETED, due_at=None, next_email=None, position=len(steps))

    def send_due(self) -> None:
        steps = self.program.tracks.get(self.state.track or "", ())
        rule = self.program.rules.non_responders
        for _ in range(2 * len(steps) + 2):  # bounded: each pass sends or moves
            s = self.state
            if s.status is not Status.ACTIVE or s.due_at is None or s.due_at > self.now:
                return
            if rule and s.sends_without_response >= rule.after_sends:
                reason = f"non-responder: {s.sends_without_response} sends without response"
                target = rule.target(s.persona)
                if target in self.program.tracks and target != s.track:
                    self.enter(target, reason)
                    self.update(sends_without_response=0)  # the side track gets its own N sends
                    continue
                self.update(status=Status.PAUSED, due_at=None, next_email=None)
                self.act(ActionKind.PAUSE, track=s.track, reason=reason)
                return
            opens = self.program.send_window.next_open(self.now, ZoneInfo(s.timezone))
            if opens > self.now:  # due inside the window, but processed after it closed
                self.update(due_at=opens)
                return
            steps = self.program.tracks[s.track]
            index = next(i for i in range(s.position, len(steps)) if steps[i].email == s.next_email)
            self.act(ActionKind.SEND, asset=s.next_email, track=s.track,
                     reason=f"step {index + 1} of {s.track}")
            self.update(received=s.received | {s.next_email}, last_email=s.next_email,
                        position=index + 1, anchor_at=self.now,
                        sends_without_response=s.sends_without_response + 1)
            self.schedule()


# -- event handlers -------------------------------------------------------------------------

def _on_enrolled(run: _Run) -> Decision:
    if run.state.status is Status.IDLE and run.state.track is None:
        if run.state.stage in run.program.rules.exit_on_stages:
            run.exit(f"stage {run.state.stage}")
        else:
            run.enter(run.cell(), "enrolled")
    run.send_due()
    return run.done()


def _on_due(run: _Run) -> Decision:
    run.send_due()
    return run.done()


def _on_response(run: _Run) -> Decision:
    state = run.state
    if state.status is Status.EXITED:
        return run.done()
    run.update(sends_without_response=0)
    if state.status is Status.PAUSED:
        run.enter(run.cell(), f"responded ({run.event.kind})")
        run.send_due()
    return run.done()


def _on_consumed(run: _Run) -> Decision:
    asset = run.event.detail
    if asset and asset not in run.state.received:
        run.update(received=run.state.received | {asset})
        if run.state.status is Status.ACTIVE and run.state.next_email == asset:
            run.schedule()
    return _on_response(run)


def _on_cell_change(run: _Run, **change) -> Decision:
    state = run.state
    run.update(**change)
    final = state.exit_reason in FINAL_EXITS
    if state.status is Status.EXITED and (final or "stage" not in change):
        return run.done()  # only a stage event back to nurture ends a (non-final) exit
    label = ", ".join(f"{k} {v}" for k, v in change.items())
    if run.state.stage in run.program.rules.exit_on_stages:
        if state.status is not Status.EXITED:
            run.exit(f"stage {run.state.stage}")
        return run.done()
    if state.status is Status.EXITED:
        run.update(exit_reason=None)
        run.enter(run.cell(), f"re-entered nurture: {label}")
    else:
        run.follow_cell(label)
    run.send_due()
    return run.done()


def _on_stage(run: _Run) -> Decision:
    return _on_cell_change(run, stage=run.event.detail)


def _on_persona(run: _Run) -> Decision:
    return _on_cell_change(run, persona=run.event.detail)


def _exit_handler(reason: str, *, notify: bool = False):
    def handler(run: _Run) -> Decision:
        if notify:  # a hand-raise reaches sales even from a lead that left nurture for good
            run.act(ActionKind.NOTIFY, track=run.state.track, reason="talk to sales requested")
        if run.state.status is Status.EXITED and run.state.exit_reason in FINAL_EXITS:
            return run.done()
        if run.state.status is not Status.EXITED or reason in FINAL_EXITS:
            run.exit(reason)
        return run.done()

    return handler


def _on_bounced(run: _Run) -> Decision:
    if (run.event.detail or "hard").lower() == "soft":
        return run.done()
    return _exit_handler("hard_bounce")(run)


def _on_assist(run: _Run) -> Decision:
    """Enter the named track even from a sales stage's exit (a stalled opportunity gets
    marketing support). A bare track name is the persona's own (`reengage` is
    `<persona>/reengage`), as for non-responders. Final exits stay final."""
    state, name = run.state, run.event.detail or ""
    track = name if "/" in name else f"{state.persona}/{name}"
    if state.exit_reason in FINAL_EXITS or track not in run.program.tracks or track == state.track:
        return run.done()
    run.update(exit_reason=None)
    run.enter(track, "marketing support for a stalled opportunity")
    run.send_due()
    return run.done()


def _on_program_updated(run: _Run) -> Decision:
    state = run.state
    run.update(version=run.program.version)
    if state.status is Status.EXITED:
        return run.done()
    if state.track not in run.program.tracks:
        run.update(track=None)
        run.follow_cell(f"track {state.track} removed in version {run.program.version}")
    elif state.status in (Status.ACTIVE, Status.COMPLETED):
        steps = run.program.tracks[state.track]
        ids = [step.email for step in steps if step.email]
        position = 0
        if state.last_email in ids:
            position = next(i for i, step in enumerate(steps) if step.email == state.last_email) + 1
        run.update(position=position)
        run.schedule()
    run.send_due()
    return run.done()


_HANDLERS = {
    EventKind.ENROLLED: _on_enrolled,
    EventKind.DUE: _on_due,
    EventKind.OPENED: _on_response,
    EventKind.CLICKED: _on_response,
    EventKind.PAGE_VIEWED: _on_response,
    EventKind.FORM_SUBMITTED: _on_response,
    EventKind.CONSUMED: _on_consumed,
    EventKind.STAGE: _on_stage,
    EventKind.PERSONA: _on_persona,
    EventKind.UNSUBSCRIBED: _exit_handler("unsubscribed"),
    EventKind.BOUNCED: _on_bounced,
    EventKind.TALK_TO_SALES: _exit_handler("talk_to_sales", notify=True),
    EventKind.PROGRAM_UPDATED: _on_program_updated,
    EventKind.ASSIST: _on_assist,
}
