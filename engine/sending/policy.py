"""May this send go now? A pure function of what the send-time checks know, and `now`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from engine.programs.spec import SendWindow


@dataclass(frozen=True)
class FrequencyCap:
    max_sends: int = 3
    period: timedelta = timedelta(days=7)


@dataclass(frozen=True)
class SendFacts:
    """What is known about one outbox row at send time."""

    suppressed_reason: str | None  # on the suppression list, and why
    consent: bool | None  # the lead's consent; None: not recorded
    enrollment_exited: bool
    timezone: str
    recent_sends: tuple[datetime, ...]  # this lead's sends across programs, any order


@dataclass(frozen=True)
class Verdict:
    action: str  # "send", "skip" (never: the row is done) or "hold" (later, at `until`)
    reason: str = ""
    until: datetime | None = None


SEND = Verdict("send")


def check_send(facts: SendFacts, *, window: SendWindow, cap: FrequencyCap, now: datetime,
               require_consent: bool = False) -> Verdict:
    """Skips come first (they are final); a hold names every reason and the one time that
    satisfies them all: the next window opening once the frequency cap allows a send."""
    if facts.suppressed_reason:
        return Verdict("skip", f"suppressed: {facts.suppressed_reason}")
    if facts.consent is False:
        return Verdict("skip", "consent withdrawn")
    if facts.consent is None and require_consent:
        return Verdict("skip", "no consent recorded")
    if facts.enrollment_exited:
        return Verdict("skip", "enrollment exited")
    reasons, at = [], now
    recent = sorted(t for t in facts.recent_sends if t > now - cap.period)
    if len(recent) >= cap.max_sends:
        at = recent[len(recent) - cap.max_sends] + cap.period
        reasons.append(f"frequency cap: {len(recent)} sends in {cap.period.days} days")
    opens = window.next_open(at, ZoneInfo(facts.timezone))
    if opens > at:
        reasons.append("outside the send window")
    if not reasons:
        return SEND
    return Verdict("hold", "; ".join(reasons), opens)
