"""The tracking event buffer: public endpoints push to a Redis list and answer at once; a
worker drains the list in batches into the database.

Nothing is lost between the two: an endpoint answers only after Redis has the event (and if
Redis is down it writes the event to the database itself), and the drainer removes events
from the list only after their transaction has committed. A drainer that dies in between
leaves them in the list; the next drain stores them again, and each event's `k` (minted by
the endpoint, unique in tracking_events) makes that second store a no-op.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from redis.exceptions import LockError

EVENTS_KEY = "nurture:tracking:events"
DRAIN_LOCK_SECONDS = 120
log = logging.getLogger(__name__)


class EventBuffer:
    def __init__(self, redis, key: str = EVENTS_KEY):
        self.redis = redis
        self.key = key

    def push(self, event: dict) -> None:
        self.redis.rpush(self.key, json.dumps(event, separators=(",", ":")))

    def pending(self) -> int:
        return int(self.redis.llen(self.key))

    def drain(self, store: Callable[[list[dict]], None], *, batch: int = 500,
              max_batches: int | None = None) -> int:
        """Hand events to `store` (one committed transaction per call) in order, oldest first.
        Returns how many were drained; 0 when another drainer holds the lock."""
        lock = self.redis.lock(f"{self.key}:drain", timeout=DRAIN_LOCK_SECONDS,
                               blocking_timeout=0)
        if not lock.acquire(blocking=False):
            return 0
        drained = 0
        try:
            while max_batches is None or max_batches > 0:
                raw = self.redis.lrange(self.key, 0, batch - 1)
                if not raw:
                    break
                store(_parse(raw))
                self.redis.ltrim(self.key, len(raw), -1)
                drained += len(raw)
                lock.reacquire()
                if max_batches is not None:
                    max_batches -= 1
        finally:
            try:
                lock.release()
            except LockError:  # it expired: another drainer may have started; its store is idempotent
                log.warning("tracking drain lock expired while draining")
        return drained


def _parse(raw: list[bytes]) -> list[dict]:
    events = []
    for item in raw:
        try:
            event = json.loads(item)
        except ValueError:
            log.error("dropping an unreadable tracking event: %r", item[:200])
            continue
        if isinstance(event, dict):
            events.append(event)
    return events
