"""Stage advancement: which of a program's `advance:` rules moves a lead to another stage now.

Pure: no I/O and no clock. The live engine, `nurture simulate` and the QA scenario tables all
call `advancement`; the caller applies the returned change through the transition table
(engine/leads/stages.py) and records it with `Advance.reason`.

- A response (`event_kind` one of RESPONSE_KINDS) is checked against the `on` rules: the first
  rule, in file order, whose `from` holds the lead's stage, whose `on` holds the kind and whose
  page or email (when given) is the response's `detail`.
- A time check (`event_kind=None`) is checked against the `idle` rules: the first rule whose
  `from` holds the stage and whose `idle` has passed since the lead's last response, or since it
  entered its stage when that is later (a lead moved into a stage gets the full idle time there).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from engine.programs.spec import AdvanceRule, format_duration, target_text
from engine.scoring.rules import EVENT_KINDS

RESPONSE_KINDS = EVENT_KINDS  # open, click, page_view, form_submitted, consumed: as scoring


@dataclass(frozen=True)
class Advance:
    rule: AdvanceRule
    from_stage: str
    to: str
    reason: str  # the rule in words, as it applied: "advance inquiry -> engaged on click"


def advancement(rules: Iterable[AdvanceRule], *, stage: str, event_kind: str | None,
                detail: str | None = None, last_response_at: datetime | None = None,
                now: datetime, stage_since: datetime | None = None) -> Advance | None:
    """The stage change the rules make for a lead in `stage`, or None.

    `event_kind`: the kind of the response just recorded (its `detail`: the page slug of a
    page_view or form_submitted, the email key of an open, click or consumed), or None for a
    time check of the idle rules at `now`. `last_response_at`: the lead's latest response before
    `now`; `stage_since`: when it entered its current stage (either may be None).
    """
    if event_kind is not None and event_kind not in RESPONSE_KINDS:
        raise ValueError(f"unknown response kind {event_kind!r} "
                         f"(expected one of {', '.join(RESPONSE_KINDS)})")
    since = _idle_since(last_response_at, stage_since)
    for rule in rules:
        if stage not in rule.from_stages:
            continue
        if event_kind is not None and event_kind in rule.on and _target_matches(rule, detail):
            return Advance(rule, stage, rule.to, f"advance {stage} -> {rule.to} on {event_kind}"
                                                 f"{target_text(rule.page, rule.email)}")
        if (event_kind is None and rule.idle is not None and since is not None
                and now - since >= rule.idle):
            return Advance(rule, stage, rule.to, f"advance {stage} -> {rule.to} after "
                                                 f"{format_duration(rule.idle)} without a response")
    return None


def next_idle_check(rules: Iterable[AdvanceRule], *, stage: str,
                    last_response_at: datetime | None,
                    stage_since: datetime | None) -> datetime | None:
    """When the first idle rule for a lead in `stage` falls due, if no response comes first;
    None when no idle rule applies to the stage (or nothing tells when the lead went idle)."""
    since = _idle_since(last_response_at, stage_since)
    if since is None:
        return None
    due = [since + rule.idle for rule in rules if rule.idle is not None and stage in rule.from_stages]
    return min(due, default=None)


def _idle_since(last_response_at: datetime | None, stage_since: datetime | None) -> datetime | None:
    known = [at for at in (last_response_at, stage_since) if at is not None]
    return max(known, default=None)


def _target_matches(rule: AdvanceRule, detail: str | None) -> bool:
    target = rule.page if rule.page is not None else rule.email
    return target is None or target == detail
