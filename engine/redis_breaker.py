"""A Redis client for advisory calls that must not slow sending down while Redis is away (send
limits, relay health): after a call fails because Redis is down, the calls of the next few
seconds fail at once instead of each waiting for its timeout."""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
PAUSE = 2.0  # seconds


class ShortCircuit:
    def __init__(self, client, pause: float = PAUSE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.pause = pause
        self.clock = clock
        self._skip_until = 0.0

    def __getattr__(self, name: str):
        attribute = getattr(self.client, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            if self.clock() < self._skip_until:
                raise RedisConnectionError("Redis failed moments ago: not tried")
            try:
                return attribute(*args, **kwargs)
            except REDIS_DOWN:
                self._skip_until = self.clock() + self.pause
                raise

        return call
