"""Send-rate limits shared by every worker on every host, kept in Redis.

Fixed one-minute windows: a global limit and a per-recipient-domain limit. A domain that
answered with a throttling reply (421 4.7.28, 450 4.2.1, 451 4.7.1) is backed off for a while.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from engine.redis_breaker import REDIS_DOWN

WINDOW = timedelta(minutes=1)
BACK_OFF = timedelta(minutes=5)
UNCHECKED_RETRY = timedelta(seconds=30)  # limits set but Redis down: try again after this


@dataclass
class RedisThrottle:
    redis: object
    global_per_minute: int | None = None
    per_domain_per_minute: int | None = None
    prefix: str = "nurture:throttle"

    def acquire(self, domain: str, now: datetime) -> datetime | None:
        """Take one send for `domain` now. Returns None if allowed, else when to try again.
        While Redis is down, limits that are set cannot be checked: the send waits (a domain's
        back-off cannot be checked either, but with no limits set nothing waits for it)."""
        try:
            return self._acquire(domain, now)
        except REDIS_DOWN:
            limited = self.global_per_minute is not None or self.per_domain_per_minute is not None
            return now + UNCHECKED_RETRY if limited else None

    def _acquire(self, domain: str, now: datetime) -> datetime | None:
        backed_off = self.redis.pttl(f"{self.prefix}:backoff:{domain}")
        if backed_off > 0:
            return now + timedelta(milliseconds=backed_off)
        minute = int(now.timestamp() // 60)
        next_minute = datetime.fromtimestamp((minute + 1) * 60, now.tzinfo)
        taken = []  # counters incremented so far, given back if a later limit refuses
        for key, limit in ((f"{self.prefix}:domain:{domain}:{minute}", self.per_domain_per_minute),
                           (f"{self.prefix}:global:{minute}", self.global_per_minute)):
            if limit is None:
                continue
            pipe = self.redis.pipeline()
            pipe.incr(key)
            pipe.expire(key, 120)
            count, _ = pipe.execute()
            taken.append(key)
            if count > limit:
                for counted in taken:
                    self.redis.decr(counted)
                return next_minute
        return None

    def back_off(self, domain: str, now: datetime, period: timedelta = BACK_OFF) -> datetime:
        """The domain asked us to slow down: no sends to it for `period` (this row's retry waits
        that long even when Redis cannot share it)."""
        try:
            self.redis.set(f"{self.prefix}:backoff:{domain}", "1",
                           px=int(period.total_seconds() * 1000))
        except REDIS_DOWN:
            pass
        return now + period
