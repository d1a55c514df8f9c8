"""RQ jobs. They take ids or nothing, open their own resources and are idempotent: the outbox
in the database decides what is sent, so a job that runs twice does what running it once does."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from functools import cache

from engine.config import Settings
from engine.db import Database, utcnow
from engine.journeys.service import run_due
from engine.migrate import open_database
from engine.sending.delivery import deliver_due
from engine.sending.outbox import LEASE
from engine.sending.transport import Transport, transport_from_settings

SEND_BATCH = 200


@cache
def _database() -> Database:
    return open_database(Settings.from_env())


@cache
def _transport() -> Transport:
    """One SMTP connection per worker process, reused across jobs."""
    return transport_from_settings(Settings.from_env())


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def send_lease() -> timedelta:
    """The claim lease: NURTURE_SEND_LEASE_SECONDS (the fault test shortens it), else LEASE."""
    seconds = os.environ.get("NURTURE_SEND_LEASE_SECONDS")
    return timedelta(seconds=float(seconds)) if seconds else LEASE


def send_due(limit: int = SEND_BATCH) -> str:
    """Claim and deliver due outbox rows, batch after batch, until none is due."""
    total = {}
    while True:
        report = deliver_due(db=_database(), transport=_transport(), worker=worker_name(),
                             clock=utcnow, limit=limit, lease=send_lease())
        for outcome, count in report.counts.items():
            total[outcome] = total.get(outcome, 0) + count
        if sum(report.counts.values()) < limit:
            return ", ".join(f"{n} {k}" for k, n in sorted(total.items())) or "nothing due"


def advance_journeys(db: Database | None = None, batch: int = 1000) -> int:
    """Fire due journey steps (each writes its outbox row). Returns how many were processed."""
    db = db or _database()
    processed = 0
    while True:
        with db.session() as session:
            count = run_due(session=session, now=utcnow(), limit=batch)
        processed += count
        if count < batch:
            return processed
