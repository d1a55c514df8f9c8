"""Lifecycle stages and the one transition table every stage change goes through."""

from __future__ import annotations

from enum import StrEnum

from engine.errors import IllegalTransition, Invalid


class Stage(StrEnum):
    INQUIRY = "inquiry"
    ENGAGED = "engaged"
    MQL = "mql"
    SAL = "sal"
    OPPORTUNITY = "opportunity"
    CUSTOMER = "customer"
    RECYCLED = "recycled"
    DISQUALIFIED = "disqualified"


STAGES: tuple[str, ...] = tuple(stage.value for stage in Stage)
# The way forward, in order; recycled and disqualified are detours off it.
SUCCESS_PATH: tuple[str, ...] = ("inquiry", "engaged", "mql", "sal", "opportunity", "customer")
NOT_ON_PATH = -1  # the path level of a lead that has not entered inquiry yet


def path_level_after(level: int, to_stage: str) -> int:
    """A lead's path level after entering `to_stage`, given its level before: the index in
    SUCCESS_PATH of the furthest stage it reached in order, one stage after the other (detours
    in between allowed), or NOT_ON_PATH. Stored on each stage change, so reports read where a
    lead stood on the path without replaying its history."""
    if to_stage in SUCCESS_PATH and SUCCESS_PATH.index(to_stage) == level + 1:
        return level + 1
    return level

TRANSITIONS: dict[str, frozenset[str]] = {
    "inquiry": frozenset({"engaged", "mql", "sal", "recycled", "disqualified"}),
    "engaged": frozenset({"mql", "sal", "recycled", "disqualified"}),
    "mql": frozenset({"sal", "engaged", "recycled", "disqualified"}),
    "sal": frozenset({"opportunity", "recycled", "disqualified"}),  # rejected by sales: recycled
    "opportunity": frozenset({"customer", "recycled", "disqualified"}),  # closed won / lost
    "customer": frozenset({"opportunity", "recycled"}),  # upsell / churn
    "recycled": frozenset({"engaged", "mql", "sal", "disqualified"}),
    "disqualified": frozenset({"recycled"}),
}


def parse_stage(value: str, *, field: str = "stage") -> str:
    stage = (value or "").strip().lower()
    if stage not in TRANSITIONS:
        raise Invalid(f"unknown stage {value!r} (expected one of {', '.join(STAGES)})", field=field)
    return stage


def check_transition(current: str, target: str) -> None:
    """Raise IllegalTransition unless the table allows current -> target."""
    if current == target:
        raise IllegalTransition(f"lead is already in stage {current}", field="stage")
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current]))
        raise IllegalTransition(
            f"illegal stage change {current} -> {target} (from {current}: {allowed})", field="stage"
        )
