"""A program as plain data: what program.yaml says, after validation. No I/O here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from engine.pages.forms import FormSpec
from engine.scoring.rules import FitRule, ScoringRules, SlaRules, Trigger

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# A program's `kind:` is one of these or a name of the team's own (a slug).
PROGRAM_KINDS = ("inbound", "outbound", "cold", "cross-sell", "sales-support")
_DURATION = re.compile(r"(\d+)([mhdw])")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_UTC = ZoneInfo("UTC")


def parse_duration(text: str) -> timedelta:
    """'30m', '12h', '3d', '1w', or combined as '1d12h', as an exact duration (a day is 24
    hours). Raises ValueError otherwise."""
    return timedelta(seconds=sum(n * _UNITS[u] for n, u in _duration_parts(text)))


def _duration_parts(text: str) -> list[tuple[int, str]]:
    value = str(text).strip().lower()
    parts = _DURATION.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"bad duration {text!r} (use a number and m, h, d or w, e.g. 3d or 1w)")
    return [(int(n), u) for n, u in parts]


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds // 60}m"


@dataclass(frozen=True)
class Wait:
    """A wait in a track: calendar days (a week is 7) in the lead's time zone, then an exact
    duration (hours and minutes). `3d` from Friday 16:00 ends Monday 16:00 on the lead's clock,
    across a DST change; `72h` ends 72 hours later, whatever the clock reads; `1d12h` ends at
    the same wall time a day later, plus 12 hours."""

    days: int = 0
    exact: timedelta = timedelta(0)

    @classmethod
    def parse(cls, text: str) -> Wait:
        """As parse_duration reads it ('3d', '12h', '1d12h'). Raises ValueError otherwise."""
        days, seconds = 0, 0
        for number, unit in _duration_parts(text):
            if unit in "dw":
                days += number * (7 if unit == "w" else 1)
            else:
                seconds += number * _UNITS[unit]
        return cls(days=days, exact=timedelta(seconds=seconds))

    def __add__(self, other: Wait) -> Wait:
        return Wait(self.days + other.days, self.exact + other.exact)

    def __str__(self) -> str:
        """The form parse() reads back: '1w', '3d', '36h', '1d12h', '0m'."""
        hours, minutes = divmod(int(self.exact.total_seconds()) // 60, 60)
        days = (self.days // 7, "w") if self.days % 7 == 0 else (self.days, "d")
        return "".join(f"{n}{u}" for n, u in (days, (hours, "h"), (minutes, "m")) if n) or "0m"

    @property
    def nominal(self) -> timedelta:
        """Its length when no clock change falls inside it (for totals and comparisons)."""
        return timedelta(days=self.days) + self.exact

    def after(self, start: datetime, tz: ZoneInfo) -> datetime:
        """When the wait ends if it starts at `start` (aware), in UTC: the wall time of `start`
        in `tz`, `days` later, then `exact` later. A wall time that a spring-forward jump skips
        ends at the jump (02:30 ends at 03:00); one that a fall-back repeats ends at its first
        occurrence."""
        if self.days:
            local = start.astimezone(tz)
            start = _local_instant(local.date() + timedelta(days=self.days), local.time(), tz,
                                   fold=0)
        return start.astimezone(_UTC) + self.exact


@dataclass(frozen=True)
class SendWindow:
    days: frozenset[int] = frozenset(range(5))  # Monday is 0
    start: time = time(9, 0)
    end: time = time(17, 0)

    def next_open(self, at: datetime, tz: ZoneInfo) -> datetime:
        """The earliest instant >= at whose wall clock in `tz` reads inside the window. DST-safe:
        a start skipped by a spring-forward jump opens at the jump; a start repeated by a
        fall-back opens at its second occurrence (so no send reads earlier than `start`)."""
        local = at.astimezone(tz)
        for offset in range(15):  # a week, and one more when a DST jump swallows a window
            day = local.date() + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            # On a fall-back day a repeated wall time is ambiguous: open at the second `start`
            # and close at the first `end`, so every instant in between reads inside the window.
            opens = _local_instant(day, self.start, tz, fold=1)
            closes = _local_instant(day, self.end, tz, fold=0)
            if opens >= closes:
                continue  # the whole window falls in a DST jump: no open time that day
            if at < opens:
                return opens
            if at < closes:
                return at
        raise ValueError("send window has no open time")  # validation guarantees at least one day

    def to_dict(self) -> dict:
        return {
            "days": [DAYS[d] for d in sorted(self.days)],
            "from": self.start.strftime("%H:%M"),
            "to": self.end.strftime("%H:%M"),
        }


def _local_instant(day, clock: time, tz: ZoneInfo, *, fold: int) -> datetime:
    """Wall-clock time on a day in tz, in UTC. A time repeated by a DST fall-back resolves to its
    occurrence `fold` (0: first, 1: second); a time skipped by a spring-forward jump resolves to
    the jump itself, the first instant whose wall clock reads later than `clock`."""
    naive = datetime.combine(day, clock)
    instant = naive.replace(tzinfo=tz, fold=fold).astimezone(_UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == naive:
        return instant
    # Skipped time. zoneinfo reads it with the offset before the jump (fold=0, an instant after
    # the jump) or after it (fold=1, an instant before): find the jump in between, to the second.
    low = int(naive.replace(tzinfo=tz, fold=1).timestamp())
    high = int(naive.replace(tzinfo=tz, fold=0).timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, _UTC)


@dataclass(frozen=True)
class Persona:
    key: str
    name: str
    match: dict = field(default_factory=dict)  # {"title_contains": [...], "industry_in": [...]}
    default: bool = False


@dataclass(frozen=True)
class Email:
    key: str
    file: str
    subject: str
    preheader: str | None = None


@dataclass(frozen=True)
class Page:
    key: str
    file: str
    slug: str
    title: str | None = None
    form: FormSpec = field(default_factory=FormSpec)  # what its form gives a lead


@dataclass(frozen=True)
class Step:
    """An email to send, or a wait before the next step. Email steps are identified by their email."""

    email: str | None = None
    wait: Wait | None = None

    def to_dict(self) -> dict:
        return {"email": self.email} if self.email else {"wait": str(self.wait)}


@dataclass(frozen=True)
class NonResponders:
    after_sends: int
    move_to: str | None = None  # a track, or a side-track name per persona; None: pause

    def target(self, persona: str) -> str | None:
        """`it_manager/reengage` as written; `reengage` means `<persona>/reengage`."""
        if self.move_to is None or "/" in self.move_to:
            return self.move_to
        return f"{persona}/{self.move_to}"


@dataclass(frozen=True)
class Rules:
    exit_on_stages: frozenset[str] = frozenset({"sal", "opportunity", "customer", "disqualified"})
    non_responders: NonResponders | None = None


def target_text(page: str | None, email: str | None) -> str:
    """' page demo', ' email guide_it' or '': the page or email a rule is limited to."""
    return f" page {page}" if page else f" email {email}" if email else ""


@dataclass(frozen=True)
class AdvanceRule:
    """Move a lead from one of `from_stages` to `to` on a response whose kind is in `on`
    (on one page or email when given), or after `idle` without any response. Exactly one of
    `on` and `idle` is set; engine/programs/advance.py applies the rules."""

    from_stages: tuple[str, ...]
    to: str
    on: tuple[str, ...] = ()  # response kinds: open, click, page_view, form_submitted, consumed
    page: str | None = None  # a page slug, for page_view and form_submitted
    email: str | None = None  # an email key, for open, click and consumed
    idle: timedelta | None = None

    def describe(self) -> str:
        when = (f"after {format_duration(self.idle)} without a response" if self.idle
                else f"on {', '.join(self.on)}{target_text(self.page, self.email)}")
        return f"advance {', '.join(self.from_stages)} -> {self.to} {when}"

    def to_dict(self) -> dict:
        data = {"from": list(self.from_stages), "to": self.to}
        if self.idle:
            return {**data, "idle": format_duration(self.idle)}
        data["on"] = list(self.on)
        return {**data, **{k: v for k, v in (("page", self.page), ("email", self.email)) if v}}

    @classmethod
    def from_dict(cls, data: dict) -> AdvanceRule:
        return cls(from_stages=tuple(data["from"]), to=data["to"], on=tuple(data.get("on") or ()),
                   page=data.get("page"), email=data.get("email"),
                   idle=parse_duration(data["idle"]) if data.get("idle") else None)


@dataclass(frozen=True)
class Goal:
    """What a program is for, and what its reports measure: a lead reaching `stage`, or a
    response of kind `event` (on one page or email when given), within `within` of enrolling
    when given. Exactly one of `stage` and `event` is set."""

    stage: str | None = None
    event: str | None = None
    page: str | None = None  # a page slug
    email: str | None = None  # an email key
    within: timedelta | None = None

    def describe(self) -> str:
        target = target_text(self.page, self.email)
        what = f"reach stage {self.stage}" if self.stage else f"{self.event}{' on' if target else ''}{target}"
        return what + (f" within {format_duration(self.within)} of enrolling" if self.within else "")

    def to_dict(self) -> dict:
        data = {"stage": self.stage, "event": self.event, "page": self.page, "email": self.email,
                "within": format_duration(self.within) if self.within else None}
        return {key: value for key, value in data.items() if value is not None}

    @classmethod
    def from_dict(cls, data: dict) -> Goal:
        within = data.get("within")
        return cls(stage=data.get("stage"), event=data.get("event"), page=data.get("page"),
                   email=data.get("email"), within=parse_duration(within) if within else None)


@dataclass(frozen=True)
class Program:
    slug: str
    name: str
    timezone: str
    send_window: SendWindow
    personas: dict[str, Persona]
    emails: dict[str, Email]
    pages: dict[str, Page]
    tracks: dict[str, tuple[Step, ...]]
    rules: Rules
    sender: dict = field(default_factory=dict)
    version: int = 0
    scoring: ScoringRules = field(default_factory=ScoringRules)
    sla: SlaRules = field(default_factory=SlaRules)
    launch_notify: tuple[str, ...] = ()  # told what the program does when it launches
    kind: str | None = None  # inbound, outbound, cold, cross-sell, sales-support or a custom name
    goal: Goal | None = None
    advance: tuple[AdvanceRule, ...] = ()  # stage advancement rules, in file order

    @property
    def default_persona(self) -> str:
        return next((p.key for p in self.personas.values() if p.default), next(iter(self.personas)))

    @property
    def asset_files(self) -> list[str]:
        """The files of its emails and pages, each once, in program order."""
        return list(dict.fromkeys([e.file for e in self.emails.values()]
                                  + [p.file for p in self.pages.values()]))

    def cell_track(self, persona: str, stage: str) -> str | None:
        key = f"{persona}/{stage}"
        return key if key in self.tracks else None

    def to_dict(self) -> dict:
        return {
            "program": self.slug,
            "name": self.name,
            "timezone": self.timezone,
            "sender": self.sender,
            "send_window": self.send_window.to_dict(),
            "personas": {
                k: {"name": p.name, "match": p.match, "default": p.default}
                for k, p in self.personas.items()
            },
            "emails": {
                k: {"file": e.file, "subject": e.subject, "preheader": e.preheader}
                for k, e in self.emails.items()
            },
            "pages": {
                k: {"file": p.file, "slug": p.slug, "title": p.title, "form": p.form.to_dict()}
                for k, p in self.pages.items()
            },
            "tracks": {k: [s.to_dict() for s in steps] for k, steps in self.tracks.items()},
            "rules": {
                "exit_on_stages": sorted(self.rules.exit_on_stages),
                "non_responders": (
                    {
                        "after_sends": self.rules.non_responders.after_sends,
                        "move_to": self.rules.non_responders.move_to,
                    }
                    if self.rules.non_responders
                    else None
                ),
            },
            "scoring": _scoring_to_dict(self.scoring),
            "sla": _sla_to_dict(self.sla),
            "launch": {"notify": list(self.launch_notify)},
            "kind": self.kind,
            "goal": self.goal.to_dict() if self.goal else None,
            "advance": [rule.to_dict() for rule in self.advance],
        }

    @classmethod
    def from_dict(cls, data: dict, *, version: int = 0) -> Program:
        """Rebuild a program from to_dict() output (already validated when it was stored)."""
        window = data["send_window"]
        nr = data["rules"].get("non_responders")
        return cls(
            slug=data["program"],
            name=data.get("name") or data["program"],
            timezone=data["timezone"],
            sender=data.get("sender") or {},
            send_window=SendWindow(
                days=frozenset(DAYS.index(d) for d in window["days"]),
                start=time.fromisoformat(window["from"]),
                end=time.fromisoformat(window["to"]),
            ),
            personas={k: Persona(key=k, **v) for k, v in data["personas"].items()},
            emails={k: Email(key=k, **v) for k, v in data["emails"].items()},
            pages={k: Page(key=k, **{**v, "form": FormSpec.from_dict(v.get("form"))})
                   for k, v in data["pages"].items()},
            tracks={
                k: tuple(
                    Step(email=s["email"]) if "email" in s else Step(wait=Wait.parse(s["wait"]))
                    for s in steps
                )
                for k, steps in data["tracks"].items()
            },
            rules=Rules(
                exit_on_stages=frozenset(data["rules"]["exit_on_stages"]),
                non_responders=NonResponders(**nr) if nr else None,
            ),
            version=version,
            # versions stored before scoring existed have neither key: no scoring, default SLAs
            scoring=_scoring_from_dict(data.get("scoring") or {}),
            sla=_sla_from_dict(data.get("sla") or {}),
            launch_notify=tuple((data.get("launch") or {}).get("notify") or ()),
            # versions stored before kind, goal and advance existed have none of them
            kind=data.get("kind"),
            goal=Goal.from_dict(data["goal"]) if data.get("goal") else None,
            advance=tuple(AdvanceRule.from_dict(rule) for rule in data.get("advance") or ()),
        )


# The stored form of scoring and SLA rules is the program file's own, normalised (pages by slug).

_FIT_CONDITIONS = {"matches": "matches", "in": "any_of", "at_least": "at_least",
                   "at_most": "at_most"}  # file key -> FitRule attribute


def _scoring_to_dict(rules: ScoringRules) -> dict:
    fit = []
    for rule in rules.fit:
        item = {"field": rule.field, "points": rule.points}
        for key, attr in _FIT_CONDITIONS.items():
            value = getattr(rule, attr)
            if value is not None:
                item[key] = list(value) if key == "in" else value
        fit.append(item)
    triggers = [{k: v for k, v in (("on", t.on), ("page", t.page), ("email", t.email),
                                   ("route", t.route), ("enroll", t.enroll)) if v is not None}
                for t in rules.triggers]
    return {
        "behaviour": dict(rules.behaviour),
        "pages": dict(rules.pages),
        "daily_caps": dict(rules.daily_caps),
        "decay": {"half_life": format_duration(rules.half_life)} if rules.half_life else None,
        "fit": fit,
        "mql": ({"threshold": rules.threshold, "requires": list(rules.requires)}
                if rules.threshold is not None else None),
        "triggers": triggers,
    }


def _scoring_from_dict(data: dict) -> ScoringRules:
    decay, mql = data.get("decay") or {}, data.get("mql") or {}
    fit = tuple(
        FitRule(field=item["field"], points=item["points"],
                **{attr: (tuple(item[key]) if key == "in" else item[key])
                   for key, attr in _FIT_CONDITIONS.items() if key in item})
        for item in data.get("fit") or ()
    )
    return ScoringRules(
        behaviour=dict(data.get("behaviour") or {}),
        pages=dict(data.get("pages") or {}),
        daily_caps=dict(data.get("daily_caps") or {}),
        half_life=parse_duration(decay["half_life"]) if decay.get("half_life") else None,
        fit=fit,
        threshold=mql.get("threshold"),
        requires=tuple(mql.get("requires") or ()),
        triggers=tuple(Trigger(**item) for item in data.get("triggers") or ()),
    )


def _sla_to_dict(sla: SlaRules) -> dict:
    return {
        "mql_response": format_duration(sla.mql_response),
        "opportunity_stalled": format_duration(sla.opportunity_stalled),
        "stalled_track": sla.stalled_track,
        "escalate_to": sla.escalate_to,
    }


def _sla_from_dict(data: dict) -> SlaRules:
    default = SlaRules()
    return SlaRules(
        mql_response=parse_duration(data["mql_response"]) if data.get("mql_response")
        else default.mql_response,
        opportunity_stalled=parse_duration(data["opportunity_stalled"])
        if data.get("opportunity_stalled") else default.opportunity_stalled,
        stalled_track=data.get("stalled_track"),
        escalate_to=data.get("escalate_to"),
    )
