"""Static checks of a program's logic, path coverage of its scenario table, and the two
together as one review (what `nurture qa scenarios` prints and the launch gate reads).

Static checks (`check_program`), each finding located by track and step (1-based, as the
program loader counts them):
- program.empty-cell (warning): a persona x stage cell of a nurture stage without a track; a
  lead there is parked with nothing to receive. program.exit-cell (info): a cell whose stage
  exits the program (rules.exit_on_stages) needs no track.
- program.unreachable-track (warning): no nurture cell, rules.non_responders.move_to or
  sla.stalled_track leads to it (for instance the track of a stage that exits).
- program.dead-end-track (blocker): a track a lead can reach that holds no email: the lead is
  placed there, is never sent anything, and stays until its stage or persona changes. A track
  that ends after sending is not a dead end: the program is perpetual, a lead that finished a
  track waits there for steps appended later or for its stage to change.
- program.wait-over-year (warning): the waits of a track add up to more than a year.
- program.move-loop (warning): rules.non_responders.move_to resolves to a persona x stage
  track, so the rule and the stage cells pass leads back and forth: non-responders of other
  cells are moved into it, its own non-responders are "moved" to the track they are on (the
  engine pauses them), and a paused lead that responds goes back to its cell, to be moved
  again. Longer cycles cannot arise: the rule has one target per persona, and decide() never
  moves a lead to the track it is on.
- program.move-target-missing (warning): a persona has no track of the name move_to gives,
  so its non-responders are paused instead of moved; program.stalled-track-missing (warning):
  the same for sla.stalled_track (its stalled opportunities get no marketing support).
- program.move-cross-persona (warning): a full track name in move_to or sla.stalled_track sends
  leads of every persona to a track written for one.
- program.unused-email (warning): an email no track sends.
- program.advance-no-track (warning): an advance rule moves leads to a nurture stage where a
  persona has no track: they are parked there.
- program.advance-idle-short (warning): an idle rule moves a lead sooner than the longest wait
  between two emails of a track of its `from` stage: a lead following that track without a
  response is moved before it is sent the next email.
- program.advance-shadowed (warning): an advance rule that never applies, because earlier
  rules (or, for idle rules, shorter ones) take every stage and response it names first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from engine.leads.stages import STAGES, TRANSITIONS
from engine.programs.loader import PROGRAM_FILE, ProgramError
from engine.programs.service import matrix
from engine.programs.spec import AdvanceRule, Program, Step, format_duration
from qa.findings import Finding, Severity
from qa.scenarios import (
    ScenarioInvalid,
    ScenarioResult,
    find_scenario_file,
    invalid_findings,
    load_scenarios,
    run_scenarios,
    scenario_findings,
)

YEAR = timedelta(days=365)
NON_RESPONDER = "non-responder"  # how decide() starts the reason of a non-responder move/pause


def check_program(program: Program) -> list[Finding]:
    """Every static finding about the program's tracks and rules."""
    return [*empty_cells(program), *unreachable_tracks(program), *dead_end_tracks(program),
            *long_waits(program), *move_loops(program), *move_targets(program),
            *unused_emails(program), *advance_without_track(program), *short_idle_rules(program),
            *shadowed_advance_rules(program)]


def _finding(severity: Severity, code: str, location: str, message: str) -> Finding:
    return Finding(severity, code, PROGRAM_FILE, location, message)


def _step_name(track: str, index: int) -> str:
    return f"track {track} step {index + 1}"


def empty_cells(program: Program) -> list[Finding]:
    findings = []
    for row in matrix(program):
        cell = f"{row['persona']}/{row['stage']}"
        if row["empty"]:
            findings.append(_finding(
                Severity.WARNING, "program.empty-cell", f"cell {cell}",
                f"no track for {cell}: a lead of persona {row['persona']} in stage "
                f"{row['stage']} is parked with nothing to receive"))
        elif row["exit"] and row["track"] is None:
            findings.append(_finding(
                Severity.INFO, "program.exit-cell", f"cell {cell}",
                f"stage {row['stage']} exits the program (rules.exit_on_stages): {cell} needs "
                "no track"))
    return findings


def move_target(name: str | None, persona: str) -> str | None:
    """A move_to or stalled_track name as decide() resolves it for a persona."""
    if not name:
        return None
    return name if "/" in name else f"{persona}/{name}"


def reachable_tracks(program: Program) -> dict[str, str]:
    """Each track a lead can be placed in, with how it gets there."""
    reach: dict[str, str] = {}
    for persona in program.personas:
        for stage in STAGES:
            track = program.cell_track(persona, stage)
            if track and stage not in program.rules.exit_on_stages:
                reach.setdefault(track, f"the {persona} x {stage} cell")
        rule = program.rules.non_responders
        target = move_target(rule.move_to if rule else None, persona)
        if target in program.tracks:
            reach.setdefault(target, f"rules.non_responders.move_to for {persona}")
        stalled = move_target(program.sla.stalled_track, persona)
        if stalled in program.tracks:
            reach.setdefault(stalled, f"sla.stalled_track for {persona}")
    return reach


def unreachable_tracks(program: Program) -> list[Finding]:
    reach, findings = reachable_tracks(program), []
    for track in program.tracks:
        if track in reach:
            continue
        stage = track.partition("/")[2]
        why = (f"stage {stage} exits the program (rules.exit_on_stages), so no lead follows it"
               if stage in program.rules.exit_on_stages else
               "no persona x stage cell, rules.non_responders.move_to or sla.stalled_track "
               "leads to it")
        findings.append(_finding(Severity.WARNING, "program.unreachable-track", f"track {track}",
                                 f"track {track} is unreachable: {why}"))
    return findings


def dead_end_tracks(program: Program) -> list[Finding]:
    reach, findings = reachable_tracks(program), []
    for track, steps in program.tracks.items():
        if track not in reach or any(step.email for step in steps):
            continue
        holds = "only waits" if steps else "no steps"
        findings.append(_finding(
            Severity.BLOCKER, "program.dead-end-track", f"track {track}",
            f"track {track} holds {holds}: a lead placed there by {reach[track]} is never sent "
            "anything and stays until its stage or persona changes"))
    return findings


def long_waits(program: Program) -> list[Finding]:
    findings = []
    for track, steps in program.tracks.items():
        total = timedelta(0)
        for index, step in enumerate(steps):
            if step.wait is not None:
                total += step.wait.nominal
            if total > YEAR:
                findings.append(_finding(
                    Severity.WARNING, "program.wait-over-year", _step_name(track, index),
                    f"the waits of {track} add up to {total.days} days by step {index + 1} "
                    f"(more than a year): a lead would wait that long for the rest of the track"))
                break
    return findings


def move_loops(program: Program) -> list[Finding]:
    rule = program.rules.non_responders
    if rule is None:
        return []
    targets = {move_target(rule.move_to, persona) for persona in program.personas}
    findings = []
    for target in sorted(t for t in targets if t in program.tracks):
        stage = target.partition("/")[2]
        if stage not in STAGES:
            continue  # a side track: its own non-responders are paused there, by design
        findings.append(_finding(
            Severity.WARNING, "program.move-loop", f"rules.non_responders.move_to ({target})",
            f"non-responders are moved to {target}, the track of stage {stage}: leads of other "
            f"cells are moved into it, its own non-responders are moved to the track they are "
            f"on (the engine pauses them), and one that responds goes back to its cell, to be "
            f"moved again; point move_to at a side track such as reengage"))
    return findings


def move_targets(program: Program) -> list[Finding]:
    rule = program.rules.non_responders
    findings = []
    for where, name, code, effect in (
        ("rules.non_responders.move_to", rule.move_to if rule else None,
         "program.move-target-missing", "its non-responders are paused, not moved"),
        ("sla.stalled_track", program.sla.stalled_track, "program.stalled-track-missing",
         "its stalled opportunities get no marketing support"),
    ):
        if not name:
            continue
        if "/" in name:
            owner = name.partition("/")[0]
            others = [p for p in program.personas if p != owner]
            if others:
                bare = name.partition("/")[2]
                findings.append(_finding(
                    Severity.WARNING, "program.move-cross-persona", where,
                    f"{where} names {name}: {', '.join(others)} leads are sent to a track "
                    f"written for {owner}; give a track name without persona ({bare}) to keep "
                    "each persona on its own"))
            continue
        for persona in program.personas:
            if f"{persona}/{name}" not in program.tracks:
                findings.append(_finding(
                    Severity.WARNING, code, f"{where} ({persona})",
                    f"persona {persona} has no {persona}/{name} track: {effect}"))
    return findings


def unused_emails(program: Program) -> list[Finding]:
    used = {step.email for steps in program.tracks.values() for step in steps if step.email}
    return [_finding(Severity.WARNING, "program.unused-email", f"emails.{key}",
                     f"email {key} is defined but no track sends it")
            for key in program.emails if key not in used]


def _advance_location(index: int) -> str:
    return f"advance {index + 1}"


def advance_without_track(program: Program) -> list[Finding]:
    findings = []
    for index, rule in enumerate(program.advance):
        if rule.to in program.rules.exit_on_stages:
            continue
        for persona in program.personas:
            if program.cell_track(persona, rule.to) is None:
                findings.append(_finding(
                    Severity.WARNING, "program.advance-no-track", _advance_location(index),
                    f"{rule.describe()}: persona {persona} has no {persona}/{rule.to} track, so "
                    f"its leads are parked there with nothing to receive"))
    return findings


def longest_gap(steps: tuple[Step, ...]) -> timedelta:
    """The longest a lead following the steps waits between two emails."""
    longest = gap = timedelta(0)
    for step in steps:
        gap = timedelta(0) if step.email else gap + step.wait.nominal
        longest = max(longest, gap)
    return longest


def short_idle_rules(program: Program) -> list[Finding]:
    findings = []
    for index, rule in enumerate(program.advance):
        if rule.idle is None:
            continue
        for stage in rule.from_stages:
            for persona in program.personas:
                track = program.cell_track(persona, stage)
                gap = longest_gap(program.tracks[track]) if track else timedelta(0)
                if gap > rule.idle:
                    findings.append(_finding(
                        Severity.WARNING, "program.advance-idle-short", _advance_location(index),
                        f"{rule.describe()}: {track} waits {format_duration(gap)} between two "
                        f"emails, so a lead following it without a response is moved to "
                        f"{rule.to} before it is sent the next one"))
    return findings


def shadowed_advance_rules(program: Program) -> list[Finding]:
    rules = program.advance
    findings = []
    for index, rule in enumerate(rules):
        if all(_taken_first(rules, index, stage, kind)
               for stage in rule.from_stages for kind in (rule.on or (None,))):
            findings.append(_finding(
                Severity.WARNING, "program.advance-shadowed", _advance_location(index),
                f"{rule.describe()} never applies: "
                + ("earlier rules take every stage and response it names"
                   if rule.on else "shorter idle rules move the lead from its stages first")))
    return findings


def _taken_first(rules: tuple[AdvanceRule, ...], index: int, stage: str, kind: str | None) -> bool:
    """Another rule applies before rules[index] to a lead in `stage` (on a response of `kind`,
    or, for an idle rule, when kind is None)."""
    rule = rules[index]
    for other_index, other in enumerate(rules):
        if other_index == index or stage not in other.from_stages:
            continue
        if kind is not None and other_index < index and kind in other.on and (
                (other.page, other.email) in ((None, None), (rule.page, rule.email))):
            return True
        if kind is None and other.idle is not None and (
                other.idle < rule.idle or (other.idle == rule.idle and other_index < index)):
            return True
    return False


# -- path coverage -----------------------------------------------------------------------------

@dataclass(frozen=True)
class CoverageItem:
    kind: str  # track, step or rule
    name: str  # it_manager/inquiry, it_manager/inquiry step 3, rules.exit_on_stages: sal
    detail: str  # what it is: "email guide_it", "wait 3d", what the rule does
    scenarios: tuple[str, ...] = ()  # the scenarios that exercised it

    @property
    def covered(self) -> bool:
        return bool(self.scenarios)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "detail": self.detail,
                "covered": self.covered, "scenarios": list(self.scenarios)}


@dataclass(frozen=True)
class Coverage:
    items: tuple[CoverageItem, ...]

    def of(self, kind: str) -> list[CoverageItem]:
        return [item for item in self.items if item.kind == kind]

    def uncovered(self) -> list[CoverageItem]:
        return [item for item in self.items if not item.covered]

    def counts(self) -> dict[str, dict[str, int]]:
        return {f"{kind}s": {"covered": sum(i.covered for i in self.of(kind)),
                             "total": len(self.of(kind))}
                for kind in ("track", "step", "rule")}

    def to_dict(self) -> dict:
        return {"counts": self.counts(), "items": [item.to_dict() for item in self.items]}


def coverage_items(program: Program) -> list[CoverageItem]:
    """Everything a scenario table could exercise: each track, each step, each rule."""
    items = []
    for track, steps in program.tracks.items():
        items.append(CoverageItem("track", track, f"{len(steps)} step(s)"))
        items += [CoverageItem("step", _step_label(track, i), _describe(step))
                  for i, step in enumerate(steps)]
    return items + _rule_items(program)


def _step_label(track: str, index: int) -> str:
    return f"{track} step {index + 1}"


def _describe(step: Step) -> str:
    return f"email {step.email}" if step.email else f"wait {step.wait}"


def _rule_items(program: Program) -> list[CoverageItem]:
    items = [CoverageItem("rule", f"rules.exit_on_stages: {stage}",
                          f"a lead reaching stage {stage} leaves the program")
             for stage in STAGES if stage in program.rules.exit_on_stages]
    rule = program.rules.non_responders
    if rule is not None:
        targets = {move_target(rule.move_to, persona) for persona in program.personas}
        for target in sorted(t for t in targets if t in program.tracks):
            items.append(CoverageItem("rule", f"rules.non_responders: move to {target}",
                                      f"after {rule.after_sends} sends without a response"))
        if any(t not in program.tracks for t in targets):
            items.append(CoverageItem("rule", "rules.non_responders: pause",
                                      f"after {rule.after_sends} sends without a response"))
    entered = {stage for targets in TRANSITIONS.values() for stage in targets}  # not inquiry
    for track in program.tracks:
        persona, _, stage = track.partition("/")
        if stage in entered and stage not in program.rules.exit_on_stages:
            items.append(CoverageItem("rule", f"stage change: {track}",
                                      f"a {persona} lead whose stage becomes {stage} follows it"))
    stalled = {move_target(program.sla.stalled_track, p) for p in program.personas}
    for track in sorted(t for t in stalled if t in program.tracks):
        items.append(CoverageItem("rule", f"sla.stalled_track: {track}",
                                  "marketing support for a stalled opportunity"))
    items += [CoverageItem("rule", rule.describe(), f"stage advancement rule {index + 1}")
              for index, rule in enumerate(program.advance)]
    return items


def path_hits(program: Program, result: ScenarioResult) -> set[str]:
    """The names of the coverage items one scenario's path exercised."""
    hits: set[str] = set()
    sent: dict[str, set[str]] = {}
    for entry in result.path:
        if entry.track and entry.action in ("move", "send"):
            hits.add(entry.track)
        if entry.action == "send" and entry.track:
            sent.setdefault(entry.track, set()).add(entry.asset)
        hits |= _rule_hits(entry)
    for track, emails in sent.items():
        hits |= _step_hits(track, program.tracks.get(track, ()), emails)
    return hits


def _rule_hits(entry) -> set[str]:
    if entry.action == "advance":
        return {entry.rule}
    if entry.action == "exit" and entry.reason.startswith("stage "):
        return {f"rules.exit_on_stages: {entry.reason.removeprefix('stage ')}"}
    if entry.reason.startswith(NON_RESPONDER):
        if entry.action == "move":
            return {f"rules.non_responders: move to {entry.track}"}
        if entry.action == "pause":
            return {"rules.non_responders: pause"}
        return set()
    if entry.action == "move" and entry.event == "stage":
        return {f"stage change: {entry.track}"}
    if entry.action == "move" and entry.event == "assist":
        return {f"sla.stalled_track: {entry.track}"}
    return set()


def _step_hits(track: str, steps: tuple[Step, ...], emails: set[str]) -> set[str]:
    """An email step is exercised when it was sent from this track. A wait is, as decide()
    counts waits, when the email before it was sent from this track (the wait after an email
    received elsewhere is skipped with it) and a later email was sent after it; a trailing
    wait, when the email before it was sent."""
    hits = set()
    for index, step in enumerate(steps):
        if step.email:
            if step.email in emails:
                hits.add(_step_label(track, index))
            continue
        before = next((s.email for s in reversed(steps[:index]) if s.email), None)
        later = [s.email for s in steps[index + 1:] if s.email]
        counted = before is None or before in emails
        if counted and (any(e in emails for e in later) or (not later and before)):
            hits.add(_step_label(track, index))
    return hits


def coverage(program: Program, results: Iterable[ScenarioResult]) -> Coverage:
    """Which tracks, steps and rules the scenarios exercised, and which none did."""
    by_item: dict[str, list[str]] = {}
    for result in results:
        for name in path_hits(program, result):
            by_item.setdefault(name, []).append(result.scenario.name)
    return Coverage(tuple(
        CoverageItem(item.kind, item.name, item.detail, tuple(by_item.get(item.name, ())))
        for item in coverage_items(program)))


def coverage_findings(cov: Coverage, file: str) -> list[Finding]:
    """An info finding per item no scenario exercised; a step of a track no scenario followed
    is left to the track's own finding."""
    untouched = {item.name for item in cov.of("track") if not item.covered}
    findings = []
    for item in cov.uncovered():
        if item.kind == "step" and item.name.rsplit(" step ", 1)[0] in untouched:
            continue
        findings.append(Finding(Severity.INFO, f"coverage.{item.kind}", file, item.name,
                                f"no scenario exercises {item.kind} {item.name} ({item.detail})"))
    return findings


# -- the review: static checks, scenarios, coverage ------------------------------------------

@dataclass
class ProgramReview:
    start: datetime | None = None
    file: str | None = None  # the scenario table, when there is one
    results: list[ScenarioResult] = field(default_factory=list)
    coverage: Coverage | None = None
    errors: list[ProgramError] = field(default_factory=list)  # the table's, as file:line
    findings: list[Finding] = field(default_factory=list)

    @property
    def failed(self) -> list[ScenarioResult]:
        return [result for result in self.results if not result.passed]

    @property
    def blockers(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.BLOCKER]

    @property
    def passed(self) -> bool:
        """Every scenario passed and nothing blocks; a missing table does not pass."""
        return self.file is not None and not self.blockers

    def to_dict(self) -> dict:
        return {
            "file": self.file, "start": self.start.isoformat() if self.start else None,
            "passed": self.passed, "errors": [str(error) for error in self.errors],
            "scenarios": [result.to_dict() for result in self.results],
            "coverage": self.coverage.to_dict() if self.coverage else None,
            "findings": [finding.to_dict() for finding in self.findings],
        }


def review_program(program: Program, directory: str | Path | None = None, *,
                   scenario_file: str | Path | None = None,
                   start: datetime | None = None) -> ProgramReview:
    """Static checks, then the program directory's scenario table (or `scenario_file`) run
    from `start` (default: the table's), then coverage; every finding in one list."""
    review = ProgramReview(findings=check_program(program))
    path = Path(scenario_file) if scenario_file else (
        find_scenario_file(directory) if directory else None)
    if path is None:
        review.findings.append(Finding(
            Severity.WARNING, "scenario.missing", "scenarios.yaml", "program directory",
            "no scenario table (scenarios.yaml or scenarios.csv): the program's logic is untested"))
        return review
    review.file = path.name
    try:
        table = load_scenarios(path, program)
    except ScenarioInvalid as exc:
        review.errors = exc.errors
        review.findings += invalid_findings(exc)
        return review
    review.start = start or table.start
    review.results = run_scenarios(program, table.scenarios, start=review.start)
    review.coverage = coverage(program, review.results)
    review.findings += scenario_findings(review.results, path.name)
    review.findings += coverage_findings(review.coverage, path.name)
    return review
