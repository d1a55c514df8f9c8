"""What to do after an attempt: a pure function of the reply, the attempts made and `now`.

- 2xx: delivered.
- 5xx, 408, 429, a timeout, a connection error: retried. The wait is exponential backoff with
  full jitter: a random time between 0 and min(cap, base x 2^(attempts - 1)) (so many items
  failing at once do not come back at once). On 429 and 503 a Retry-After header (seconds or
  an HTTP date) is honoured instead, up to MAX_RETRY_AFTER.
- any other 4xx, a 3xx (redirects are not followed), a bad URL: dead-lettered at once:
  sending the same request again cannot help.
- after `max_attempts` attempts, an item that would be retried is dead-lettered, with its
  last error.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum

from engine.crm.webhook import ErrorKind, Reply

RETRIED = frozenset({ErrorKind.TIMEOUT, ErrorKind.CONNECTION, ErrorKind.HTTP_5XX,
                     ErrorKind.HTTP_408, ErrorKind.HTTP_429})
RETRY_AFTER_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER = timedelta(hours=6)  # a longer Retry-After is shortened to this


@dataclass(frozen=True)
class Backoff:
    base: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(hours=1)

    def ceiling(self, attempts: int) -> timedelta:
        """The longest wait after the `attempts`-th failed attempt."""
        return min(self.cap, self.base * 2 ** min(max(attempts - 1, 0), 30))

    def wait(self, attempts: int, rng: random.Random) -> timedelta:
        return self.ceiling(attempts) * rng.random()


class Next(StrEnum):
    DELIVERED = "sent"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True)
class Verdict:
    next: Next
    at: datetime | None = None  # when to try again (RETRY)
    why: str = ""  # for a dead letter: why it is not retried


def after_attempt(reply: Reply, *, attempts: int, max_attempts: int, now: datetime,
                  backoff: Backoff, rng: random.Random) -> Verdict:
    """`attempts`: the attempts made so far, this one included."""
    if reply.delivered:
        return Verdict(Next.DELIVERED)
    if reply.error_kind not in RETRIED:
        return Verdict(Next.DEAD, why="not retried")
    if attempts >= max_attempts:
        return Verdict(Next.DEAD, why=f"gave up after {attempts} attempts")
    asked = retry_after(reply.retry_after, now) if reply.status in RETRY_AFTER_STATUSES else None
    return Verdict(Next.RETRY, at=now + (asked if asked is not None
                                         else backoff.wait(attempts, rng)))


def retry_after(value: str | None, now: datetime) -> timedelta | None:
    """A Retry-After header as a wait: delta-seconds or an HTTP date; None when absent or
    unreadable. Never negative, never over MAX_RETRY_AFTER."""
    if not value or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        wait = timedelta(seconds=int(text[:9]))
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        wait = when - now
    return min(max(wait, timedelta(0)), MAX_RETRY_AFTER)
