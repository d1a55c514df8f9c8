"""Whether the relay (SMTP_URL, or the local sink) answers at all, shared by every worker.

A send that cannot even reach the relay (connection refused or timed out, EHLO, STARTTLS or AUTH
failing) says nothing about the message: it costs the row no attempt, and the row is held a
short while. After FAILURES_TO_DOWN such failures in a row the relay is down: workers stop
claiming rows, which wait in the database, uncharged. When a probe is due, one worker (the
others keep waiting) sends one row: if the relay answers at all, it is up and everyone resumes
at once; if not, the next probe waits twice as long, up to PROBE_MAX.

The state lives in Redis when there is one (every worker on every host sees it), else in this
process; a Redis that fails meanwhile falls back to this process's view, never to an error.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

FAILURES_TO_DOWN = 3
PROBE_FIRST = timedelta(seconds=5)
PROBE_MAX = timedelta(minutes=2)
_FORGET = 600  # seconds: a few old failures do not count against a relay that works


class RelayState(StrEnum):
    UP = "up"
    DOWN = "down"  # wait: no claims until the next probe
    PROBE = "probe"  # this worker probes it: claim one row


@dataclass
class RelayHealth:
    name: str = "relay"  # what it is (host:port), in keys and messages
    redis: object | None = None
    failures_to_down: int = FAILURES_TO_DOWN
    _local: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def state(self, now: datetime) -> RelayState:
        down_until = self._get("down_until")
        if down_until is None:
            return RelayState.UP
        if now.timestamp() < float(down_until):
            return RelayState.DOWN
        return RelayState.PROBE if self._set_new("probe", "1", seconds=60) else RelayState.DOWN

    def down(self, now: datetime) -> bool:
        """Down, and its next probe not due yet (a worker in the middle of a batch stops)."""
        down_until = self._get("down_until")
        return down_until is not None and now.timestamp() < float(down_until)

    def next_probe(self, now: datetime) -> datetime:
        """When to try again: the next probe if the relay is down, else shortly."""
        down_until = self._get("down_until")
        at = float(down_until) if down_until is not None else (now + PROBE_FIRST).timestamp()
        return max(now, datetime.fromtimestamp(at, UTC))

    def unreachable(self, now: datetime) -> bool:
        """A send could not reach the relay. True when the relay is now down."""
        failures = self._incr("failures")
        if failures < self.failures_to_down:
            return False
        interval = self._get("interval")
        interval = min(float(interval) * 2, PROBE_MAX.total_seconds()) if interval is not None \
            else PROBE_FIRST.total_seconds()
        self._set("interval", str(interval))
        self._set("down_until", str(now.timestamp() + interval))
        self._delete("probe")
        return True

    def answered(self) -> bool:
        """The relay answered (whatever it said): it is up. True when it had been failing:
        the rows it held may go now."""
        if self._get("failures") is None and self._get("down_until") is None:
            return False
        for key in ("failures", "down_until", "interval", "probe"):
            self._delete(key)
        return True

    @property
    def held_reason(self) -> str:
        """How rows held for this relay are marked (so they can all go when it answers)."""
        return f"relay {self.name}"

    # -- storage: Redis when it works, else this process ---------------------------------------

    def _key(self, name: str) -> str:
        return f"nurture:relay:{self.name}:{name}"

    def _redis(self, call, *args, **kwargs):
        if self.redis is None:
            raise LookupError
        try:
            return getattr(self.redis, call)(*args, **kwargs)
        except Exception as exc:  # a Redis outage: this process's view will do
            raise LookupError from exc

    def _get(self, name: str) -> str | None:
        try:
            value = self._redis("get", self._key(name))
            return value.decode() if isinstance(value, bytes) else value
        except LookupError:
            with self._lock:
                return self._local.get(name)

    def _set(self, name: str, value: str) -> None:
        try:
            self._redis("set", self._key(name), value, ex=_FORGET)
        except LookupError:
            with self._lock:
                self._local[name] = value

    def _set_new(self, name: str, value: str, *, seconds: int) -> bool:
        try:
            return bool(self._redis("set", self._key(name), value, ex=seconds, nx=True))
        except LookupError:
            with self._lock:
                if name in self._local:
                    return False
                self._local[name] = value
                return True

    def _incr(self, name: str) -> int:
        try:
            count = self._redis("incr", self._key(name))
            self._redis("expire", self._key(name), _FORGET)
            return int(count)
        except LookupError:
            with self._lock:
                self._local[name] = str(int(self._local.get(name, "0")) + 1)
                return int(self._local[name])

    def _delete(self, name: str) -> None:
        try:
            self._redis("delete", self._key(name))
        except LookupError:
            with self._lock:
                self._local.pop(name, None)
