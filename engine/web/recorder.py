"""How the web process records tracking events: pushed to the Redis buffer (or, when Redis is
unreachable, stored in the database directly, so an answered request never loses its event),
and where a click goes (the outbox row's stored links, cached: they never change once sent)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from flask import current_app, request
from redis.exceptions import RedisError
from sqlalchemy import select

from engine.config import redis_connection, release_redis
from engine.db import Database
from engine.flows.tracking import store_events
from engine.sending.models import OutboxMessage
from engine.tracking.buffer import EventBuffer
from engine.tracking.service import new_event

MAX_CACHED_ROWS = 50_000
REDIS_TIMEOUT = 0.25  # seconds: a hung Redis must not hold a public endpoint
REDIS_BYPASS = 2.0  # seconds to write straight to the database after a Redis failure


class Recorder:
    def __init__(self, *, db: Database, buffer_factory: Callable[[], EventBuffer],
                 clock: Callable[[], datetime]):
        self.db = db
        self.clock = clock
        self._buffer_factory = buffer_factory
        self._buffer: EventBuffer | None = None
        self._bypass_until = 0.0
        self._links: dict[int, tuple[int, list[str]]] = {}  # outbox id -> (lead id, links)

    @property
    def buffer(self) -> EventBuffer:
        if self._buffer is None:  # lazily: the app starts even while Redis is down
            self._buffer = self._buffer_factory()
        return self._buffer

    def close(self) -> None:
        if self._buffer is not None:
            release_redis(self._buffer.redis)
            self._buffer = None

    def record(self, event: dict) -> None:
        """Push to the buffer; on a Redis failure (and for a few seconds after it, so a hung
        Redis costs one timeout, not one per request) store the event directly. A push that
        timed out may still have landed: its key makes the second store a no-op."""
        if time.monotonic() >= self._bypass_until:
            try:
                self.buffer.push(event)
                return
            except RedisError:
                current_app.logger.warning("event buffer unavailable; storing events directly",
                                           exc_info=True)
                self._bypass_until = time.monotonic() + REDIS_BYPASS
        with self.db.session() as session:
            store_events(session=session, events=[event])

    def destination(self, *, outbox_id: int, lead_id: int, index: int) -> str | None:
        cached = self._links.get(outbox_id)
        if cached is None:
            with self.db.engine.connect() as conn:
                found = conn.execute(select(OutboxMessage.lead_id, OutboxMessage.links)
                                     .where(OutboxMessage.id == outbox_id)).first()
            if found is None or not found.links:
                return None  # unknown, or not sent yet: not cached, it may be sent in a moment
            if len(self._links) >= MAX_CACHED_ROWS:
                self._links.clear()
            cached = self._links[outbox_id] = (found.lead_id, list(found.links))
        owner, links = cached
        if owner != lead_id or not 0 <= index < len(links):
            return None
        return links[index]


def init_recorder(app, *, db: Database, settings, clock: Callable[[], datetime]) -> None:
    app.extensions["nurture.recorder"] = Recorder(
        db=db, clock=clock,
        buffer_factory=lambda: EventBuffer(redis_connection(settings, timeout=REDIS_TIMEOUT)))


def recorder() -> Recorder:
    return current_app.extensions["nurture.recorder"]


def record(kind: str, *, lead_id: int, outbox_id: int | None = None, link_index: int | None = None,
           url: str | None = None, page: str | None = None) -> None:
    """Record what this request shows a lead did, with its user agent and address."""
    rec = recorder()
    rec.record(new_event(kind, lead_id=lead_id, outbox_id=outbox_id, link_index=link_index,
                         url=url, page=page, at=rec.clock(),
                         user_agent=request.headers.get("User-Agent"), ip=request.remote_addr))
