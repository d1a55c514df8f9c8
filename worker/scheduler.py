"""The scheduler tick: advance journeys, then wake the send workers when the outbox has due rows.

Ticks may overlap or be missed without harm: run_due and the outbox claim are idempotent, and
a send job is only queued when none is waiting already.
"""

from __future__ import annotations

from sqlalchemy import exists, select

from engine.db import Database, utcnow
from engine.sending.outbox import due_clause
from worker import queues
from worker.jobs import advance_journeys

SEND_JOB_TIMEOUT = 600  # seconds


def has_due_sends(db: Database) -> bool:
    with db.session() as session:
        return session.scalar(select(exists().where(due_clause(utcnow()))))


def tick(*, db: Database, redis, batch: int = 1000) -> dict:
    """One scheduler pass. Returns what it did, for the log line."""
    from rq import Queue

    advanced = advance_journeys(db, batch)
    queued = False
    send_queue = Queue(queues.SEND, connection=redis)
    if has_due_sends(db) and send_queue.count == 0:
        send_queue.enqueue("worker.jobs.send_due", job_timeout=SEND_JOB_TIMEOUT,
                           result_ttl=3600, failure_ttl=7 * 86400)
        queued = True
    return {"advanced": advanced, "send_job_queued": queued}
