"""Benchmark decide(): decisions per second over realistic event mixes, against baselines.

    .venv/bin/python bench/decide.py
    .venv/bin/python bench/decide.py --leads 200 --repeat 1     # quick run

For each mix, leads of the sample program (assets/acme-nurture) with random personas, stages and
time zones are followed for --days days: random events arrive at the mix's rates and the
scheduler delivers DUE events when steps are due. Every decide() call is recorded as its input
(program, state, event, now); the timed part replays those inputs, so only decide() is measured.

Mixes:
- due-heavy: what the scheduler sees; DUE events dominate, few responses.
- response-heavy: engaged leads; opens, clicks and page views dominate.
- churn: stage and persona changes, consumed content, program updates.

Baselines, over the same recorded states, in the same run:
- call: a no-op function with decide()'s signature (the floor of any per-event call);
- round trip: EnrollmentState.to_dict() then from_dict(), which the service pays on every event
  anyway (it reads the state from the enrollment row and writes it back).
The ratio column is decide()'s time per decision over the round trip's.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.journeys.decide import (
    EnrollmentState,
    Event,
    EventKind,
    Status,
    decide,
    new_state,
)
from engine.programs.loader import load_program_dir
from engine.programs.spec import Step, Wait

ZONES = [None, "Europe/Paris", "Europe/London", "America/New_York", "America/Los_Angeles",
         "Asia/Tokyo", "Asia/Kolkata"]
STAGES = ["inquiry"] * 6 + ["engaged"] * 3 + ["recycled", "mql"]
RESPONSES = [EventKind.OPENED, EventKind.CLICKED, EventKind.PAGE_VIEWED, EventKind.FORM_SUBMITTED]

# events per lead per day, by kind (DUE events come on top, from the scheduler)
MIXES = {
    "due-heavy": {EventKind.OPENED: 0.008, EventKind.CLICKED: 0.002, EventKind.CONSUMED: 0.001,
                  EventKind.STAGE: 0.002, EventKind.UNSUBSCRIBED: 0.0005},
    "response-heavy": {EventKind.OPENED: 1.5, EventKind.CLICKED: 0.8, EventKind.PAGE_VIEWED: 1.2,
                       EventKind.FORM_SUBMITTED: 0.05, EventKind.CONSUMED: 0.1,
                       EventKind.STAGE: 0.01, EventKind.TALK_TO_SALES: 0.002},
    "churn": {EventKind.STAGE: 0.3, EventKind.PERSONA: 0.1, EventKind.CONSUMED: 0.4,
              EventKind.PROGRAM_UPDATED: 0.05, EventKind.OPENED: 0.2,
              EventKind.UNSUBSCRIBED: 0.005, EventKind.BOUNCED: 0.005},
}


def versions(program, count: int) -> list:
    """Program versions that each append a step to one track (a perpetual program growing)."""
    out, current = [program], program
    emails = sorted(program.emails)
    for number in range(1, count + 1):
        name = sorted(current.tracks)[number % len(current.tracks)]
        steps = current.tracks[name]
        unused = [e for e in emails if e not in {s.email for s in steps}]
        if unused:
            steps = (*steps, Step(wait=Wait.parse("1w")), Step(email=unused[0]))
        current = replace(current, tracks={**current.tracks, name: steps},
                          version=program.version + number)
        out.append(current)
    return out


def record(program, mix: dict, *, leads: int, days: int, seed: int) -> list[tuple]:
    """Follow `leads` leads for `days` days; return every decide() input, in order."""
    rng = random.Random(seed)
    programs = versions(program, 20)
    start = datetime(2024, 3, 4, 8, tzinfo=UTC)
    end = start + timedelta(days=days)
    kinds, rates = list(mix), list(mix.values())
    total_rate = sum(rates)
    stages = ["inquiry", "engaged", "mql", "recycled", "sal", "disqualified"]
    trace = []
    for _ in range(leads):
        current = programs[0]
        state = new_state(current, persona=rng.choice(sorted(current.personas)),
                          stage=rng.choice(STAGES), timezone=rng.choice(ZONES))
        now = start + timedelta(minutes=rng.randrange(days * 24 * 60 // 4))
        trace.append((current, state, Event(EventKind.ENROLLED), now))
        state = decide(*trace[-1]).state
        while True:
            now += timedelta(days=rng.expovariate(total_rate))
            while state.status is Status.ACTIVE and state.due_at <= min(now, end):
                trace.append((current, state, Event(EventKind.DUE), state.due_at))
                state = decide(*trace[-1]).state
            if now >= end:
                break
            kind = rng.choices(kinds, rates)[0]
            detail = None
            if kind is EventKind.STAGE:
                detail = rng.choice(stages)
            elif kind is EventKind.PERSONA:
                detail = rng.choice(sorted(current.personas))
            elif kind is EventKind.CONSUMED:
                detail = rng.choice(sorted(current.emails))
            elif kind is EventKind.BOUNCED:
                detail = rng.choice(["soft", "hard"])
            elif kind is EventKind.PROGRAM_UPDATED:
                later = [p for p in programs if p.version > current.version]
                if not later:
                    continue
                current = later[0]
                detail = f"version {current.version}"
            trace.append((current, state, Event(kind, detail), now))
            state = decide(*trace[-1]).state
    return trace


def noop(program, state, event, now):
    return state


def round_trip(program, state, event, now):
    return EnrollmentState.from_dict(state.to_dict())


def best_time(function, trace: list[tuple], repeat: int) -> float:
    """Best wall time of `repeat` passes of function over the trace, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        for program, state, event, now in trace:
            function(program, state, event, now)
        best = min(best, time.perf_counter() - began)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    program = load_program_dir(ROOT / "assets" / "acme-nurture").program
    print(f"decide() on {program.slug}: {args.leads} leads over {args.days} days per mix, "
          f"best of {args.repeat}, Python {sys.version.split()[0]}")
    header = (f"{'mix':<15} {'decisions':>9} {'due %':>6} {'sends':>6} {'decide/s':>10} "
              f"{'us/dec':>7} {'call/s':>11} {'round trip/s':>13} {'decide/round trip':>18}")
    print(header)
    print("-" * len(header))
    for name, mix in MIXES.items():
        trace = record(program, mix, leads=args.leads, days=args.days, seed=args.seed)
        count = len(trace)
        due = sum(1 for _, _, event, _ in trace if event.kind is EventKind.DUE)
        sends = sum(1 for inputs in trace for a in decide(*inputs).actions if a.kind == "send")
        seconds = best_time(decide, trace, args.repeat)
        call = best_time(noop, trace, args.repeat)
        trip = best_time(round_trip, trace, args.repeat)
        print(f"{name:<15} {count:>9} {100 * due / count:>5.0f}% {sends:>6} "
              f"{count / seconds:>10,.0f} {1e6 * seconds / count:>7.1f} {count / call:>11,.0f} "
              f"{count / trip:>13,.0f} {seconds / trip:>17.2f}x")


if __name__ == "__main__":
    main()
