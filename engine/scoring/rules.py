"""Scoring and SLA rules as plain data, and the pure functions that apply them.

No I/O and no clock: callers pass `now`. The program loader builds these values from the
`scoring:` and `sla:` sections of program.yaml; engine/scoring/service.py stores what they award.

A lead's score is fit points plus behaviour points decayed since they were awarded. Decay is
exponential, so stored behaviour can be kept as one number and a time: decaying the stored sum
and adding a new award gives the same result as decaying every award separately.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from engine.patterns import PatternError, compile_pattern

EVENT_KINDS: tuple[str, ...] = ("open", "click", "page_view", "form_submitted", "consumed")
PAGE_KINDS = frozenset({"page_view", "form_submitted"})  # detail: the page slug
EMAIL_KINDS = frozenset({"open", "click", "consumed"})  # detail: the email key
ROUTES = ("sales",)
MAX_PATTERN = 200  # characters of a fit regex (RE2 syntax: engine/patterns.py)
MAX_VALUE = 1000  # characters of a field value a regex reads (the longest a lead field holds)
_UTC = ZoneInfo("UTC")
log = logging.getLogger(__name__)
_NUMBER = re.compile(r"\s*(-?)(\d{1,3}(?:,\d{3})+(?!\d)|\d+)(\.\d+)?")


@dataclass(frozen=True)
class Award:
    """Points for one reason: `kind` is the event kind (behaviour) or the field (fit)."""

    kind: str
    points: float
    rule: str  # in words, e.g. "click: +3", "page pricing: +10"


@dataclass(frozen=True)
class FitRule:
    """Points when a lead field holds: every condition given must hold (at least one is)."""

    field: str
    points: float
    matches: str | None = None  # a regex searched in the value
    any_of: tuple[str, ...] | None = None  # `in:` in the file, compared case-insensitively
    at_least: float | None = None  # numeric comparisons read the value's leading number
    at_most: float | None = None

    def holds(self, value: object) -> bool:
        if _empty(value):
            return False
        if self.matches is not None:
            regex = _regex(self.matches)
            if regex is None or not regex.search(str(value)[:MAX_VALUE]):
                return False
        if self.any_of is not None and _norm(value) not in {_norm(v) for v in self.any_of}:
            return False
        if self.at_least is not None or self.at_most is not None:
            number = leading_number(value)
            if number is None:
                return False
            if self.at_least is not None and number < self.at_least:
                return False
            if self.at_most is not None and number > self.at_most:
                return False
        return True

    def describe(self) -> str:
        parts = []
        if self.matches is not None:
            parts.append(f"matches {_readable(self.matches)}")
        if self.any_of is not None:
            parts.append(f"in {', '.join(self.any_of)}")
        if self.at_least is not None:
            parts.append(f">= {_num(self.at_least)}")
        if self.at_most is not None:
            parts.append(f"<= {_num(self.at_most)}")
        return f"{self.field} {' and '.join(parts)}"


@dataclass(frozen=True)
class Trigger:
    """Route a lead at once, whatever its score, when an event of kind `on` happens (on one
    page or email when given). Exactly one of `route` and `enroll` is set."""

    on: str
    page: str | None = None  # a page slug, for page_view and form_submitted
    email: str | None = None  # an email key, for open, click and consumed
    route: str | None = None  # "sales"
    enroll: str | None = None  # another program's name

    def matches(self, kind: str, detail: str | None) -> bool:
        if kind != self.on:
            return False
        target = self.page if self.page is not None else self.email
        return target is None or target == detail

    def describe(self) -> str:
        where = f" page {self.page}" if self.page else f" email {self.email}" if self.email else ""
        action = f"route to {self.route}" if self.route else f"enroll in {self.enroll}"
        return f"{self.on}{where}: {action}"


@dataclass(frozen=True)
class ScoringRules:
    """A program's scoring. The default scores nothing and has no MQL threshold."""

    behaviour: Mapping[str, float] = field(default_factory=dict)  # event kind -> points
    pages: Mapping[str, float] = field(default_factory=dict)  # page slug -> extra points
    daily_caps: Mapping[str, float] = field(default_factory=dict)  # event kind -> points a day
    half_life: timedelta | None = None  # behaviour decay; None: no decay
    fit: tuple[FitRule, ...] = ()
    threshold: float | None = None  # MQL at this score; None: never by score
    requires: tuple[str, ...] = ()  # fields an MQL must have
    triggers: tuple[Trigger, ...] = ()

    @property
    def active(self) -> bool:
        """Whether there is anything to score or route at all."""
        return bool(self.behaviour or self.pages or self.fit or self.triggers)


@dataclass(frozen=True)
class SlaRules:
    mql_response: timedelta = timedelta(days=14)  # accept or reject an MQL within this
    opportunity_stalled: timedelta = timedelta(days=14)  # an opportunity without update
    stalled_track: str | None = None  # `persona/track`, or a side-track name per persona
    escalate_to: str | None = None  # who escalations name

    def mql_due(self, since: datetime) -> datetime:
        """When an MQL that became one at `since` breaches the response SLA."""
        return since + self.mql_response

    def stalled_due(self, updated_at: datetime) -> datetime:
        return updated_at + self.opportunity_stalled

    def stalled_target(self, persona: str) -> str | None:
        """The track a stalled opportunity of `persona` is enrolled in, as NonResponders.target."""
        if self.stalled_track is None or "/" in self.stalled_track:
            return self.stalled_track
        return f"{persona}/{self.stalled_track}"


# -- behaviour ----------------------------------------------------------------------------

def behaviour_awards(rules: ScoringRules, kind: str, detail: str | None) -> list[Award]:
    """Points for one event: its kind's points, plus a page's extra points for a page_view."""
    awards = []
    base = rules.behaviour.get(kind, 0)
    if base > 0:
        awards.append(Award(kind, base, f"{kind}: +{_num(base)}"))
    extra = rules.pages.get(detail or "", 0) if kind == "page_view" else 0
    if extra > 0:
        awards.append(Award(kind, extra, f"page {detail}: +{_num(extra)}"))
    return awards


def capped(award: Award, awarded_today: float, cap: float | None) -> Award | None:
    """The award within a daily cap, given the points of its kind already awarded today: whole,
    cut to what is left (the rule says so), or None when the cap is reached."""
    if cap is None:
        return award
    room = cap - max(awarded_today, 0.0)
    if room <= 0:
        return None
    if award.points <= room:
        return award
    return Award(award.kind, room,
                 f"{award.rule} (capped to +{_num(room)}: daily cap {_num(cap)} for {award.kind})")


def apply_caps(rules: ScoringRules, awards: Iterable[Award],
               awarded_today: Mapping[str, float]) -> list[Award]:
    """capped() over the awards of one event, counting each award against the next (a pricing
    visit's two page_view awards share the page_view cap)."""
    totals = dict(awarded_today)
    kept = []
    for award in awards:
        result = capped(award, totals.get(award.kind, 0.0), rules.daily_caps.get(award.kind))
        if result is not None:
            kept.append(result)
            totals[award.kind] = totals.get(award.kind, 0.0) + result.points
    return kept


def cap_day(now: datetime, timezone: str) -> tuple[datetime, datetime]:
    """The day daily caps count in: local midnight to midnight in `timezone`, in UTC (so that
    end - start is the day's real length, 23 or 25 hours on a DST change)."""
    tz = ZoneInfo(timezone)
    day = now.astimezone(tz).date()
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(_UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(_UTC)
    return start, end


def decayed(points: float, since: datetime, now: datetime, half_life: timedelta | None) -> float:
    """Points awarded at `since`, as they count at `now`: halved every half_life (exactly
    exponential); no decay without a half-life; a `now` before `since` counts as no time."""
    if half_life is None or not points:
        return points
    elapsed = max((now - since).total_seconds(), 0.0)
    return points * 0.5 ** (elapsed / half_life.total_seconds())


def score_at(rules: ScoringRules, *, fit: float, behaviour: float,
             behaviour_at: datetime | None, now: datetime) -> float:
    """A lead's score from its stored parts (behaviour as of behaviour_at)."""
    if behaviour_at is None:
        return fit + behaviour
    return fit + decayed(behaviour, behaviour_at, now, rules.half_life)


# -- fit and qualification ------------------------------------------------------------------

def fit_awards(rules: ScoringRules, fields: Mapping[str, object]) -> list[Award]:
    return [Award(r.field, r.points, f"{r.describe()}: +{_num(r.points)}")
            for r in rules.fit if r.points > 0 and r.holds(fields.get(r.field))]


def fit_gap(rules: ScoringRules, fields: Mapping[str, object]) -> list[Award]:
    """Fit rules whose field is empty, with the points each would add if the value fits."""
    return [Award(r.field, r.points, f"{r.describe()}: +{_num(r.points)}")
            for r in rules.fit if r.points > 0 and _empty(fields.get(r.field))]


def missing_requirements(rules: ScoringRules, fields: Mapping[str, object]) -> list[str]:
    return [name for name in rules.requires if _empty(fields.get(name))]


def is_mql(rules: ScoringRules, score: float, fields: Mapping[str, object]) -> bool:
    return (rules.threshold is not None and score >= rules.threshold
            and not missing_requirements(rules, fields))


def one_field_short(rules: ScoringRules, score: float, fields: Mapping[str, object]) -> list[str]:
    """The fields each of which, filled in alone, could make this lead an MQL: a missing
    required field when the score is enough, or an empty fit field whose points (at most the
    sum of its rules) would reach the threshold. Empty for an MQL or a lead further away."""
    if rules.threshold is None or is_mql(rules, score, fields):
        return []
    missing = missing_requirements(rules, fields)
    if len(missing) > 1:
        return []
    gain: dict[str, float] = {}
    for award in fit_gap(rules, fields):
        gain[award.kind] = gain.get(award.kind, 0.0) + award.points
    candidates = missing or sorted(gain)
    return [name for name in candidates if score + gain.get(name, 0.0) >= rules.threshold]


def matching_triggers(rules: ScoringRules, kind: str, detail: str | None) -> list[Trigger]:
    return [t for t in rules.triggers if t.matches(kind, detail)]


# -- values ---------------------------------------------------------------------------------

def leading_number(value: object) -> float | None:
    """The number a field value starts with: 250, "250", "1,200" (1200), "200-500" (200),
    "500+" (500). None for anything else (a regex or set rule handles text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    found = _NUMBER.match(str(value))
    if found is None:
        return None
    sign, whole, fraction = found.groups()
    return float(sign + whole.replace(",", "") + (fraction or ""))


@lru_cache(maxsize=256)
def _regex(pattern: str):
    """The compiled fit pattern, or None for one RE2 refuses (said once): only a program stored
    before patterns ran on RE2 can hold one, and loading it again reports the pattern."""
    try:
        return compile_pattern(pattern)
    except PatternError:
        log.warning("fit pattern %r is not supported by RE2: the rule never holds", pattern)
        return None


def _empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _norm(value: object) -> str:
    return str(value).strip().casefold()


def _num(value: float) -> str:
    """3.0 -> "3", 2.5 -> "2.5", 1/3 -> "0.33"."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _readable(pattern: str) -> str:
    """A fit regex for people: without leading inline flags, word boundaries and one pair of
    parentheses around the whole, e.g. (?i)\\b(director|head)\\b -> director|head."""
    text = re.sub(r"^\(\?[imsU]+\)", "", pattern).replace(r"\b", "")
    if text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1]
    return text or pattern


def _balanced(text: str) -> bool:
    depth = 0
    for i, char in enumerate(text):
        if char in "()" and (i == 0 or text[i - 1] != "\\"):
            depth += 1 if char == "(" else -1
            if depth < 0:
                return False
    return depth == 0
