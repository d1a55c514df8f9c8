"""The scheduler tick: advance journeys, then wake the send workers when the outbox has due rows,
the notification worker when sales notifications wait to be emailed, the tracking worker when
events wait in the buffer, the CRM worker when CRM items are due (and a webhook is set), and
the SLA check once a day.

Ticks may overlap or be missed without harm: run_due, the outbox and notification claims, the
buffer drain and the SLA check are idempotent, and a job is only queued when none of its kind
is waiting.
"""

from __future__ import annotations

from sqlalchemy import exists, select

from engine.config import Settings
from engine.crm.delivery import due_clause as crm_due
from engine.crm.delivery import not_configured as crm_not_configured
from engine.db import Database, utcnow
from engine.sales.notify import due_clause as notification_due
from engine.sending.outbox import due_clause
from engine.tracking.buffer import EventBuffer
from worker import queues
from worker.jobs import advance_journeys

SEND_JOB_TIMEOUT = 1800  # seconds; a send job ends itself long before (jobs.JOB_BUDGET_SECONDS)
SLA_DONE_KEY = "nurture:sla:done"  # + ":<UTC date>": set by the job once that day's check ran
SLA_QUEUED_KEY = "nurture:sla:queued"  # held while a check is queued or running
SLA_RETRY_SECONDS = 3600  # a check that failed or was lost is queued again after this


def has_due_sends(db: Database) -> bool:
    with db.session() as session:
        return session.scalar(select(exists().where(due_clause(utcnow()))))


def has_due_notifications(db: Database) -> bool:
    with db.session() as session:
        return session.scalar(select(exists().where(notification_due(utcnow()))))


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
    return {"advanced": advanced, "send_job_queued": queued,
            "notification_job_queued": _queue_notifications(db, redis),
            "tracking_job_queued": _queue_tracking(redis), "sla_job_queued": _queue_sla(redis),
            "crm_job_queued": _queue_crm(db, redis)}


def has_due_crm_items(db: Database) -> bool:
    with db.session() as session:
        return session.scalar(select(exists().where(crm_due(utcnow()))))


def _queue_crm(db: Database, redis, settings: Settings | None = None) -> bool:
    """When the CRM webhook is configured and items are due, and no CRM job is waiting."""
    from rq import Queue

    if crm_not_configured(settings or Settings.from_env()):
        return False
    queue = Queue(queues.CRM, connection=redis)
    if queue.count or not has_due_crm_items(db):
        return False
    queue.enqueue("worker.jobs.deliver_crm", job_timeout=SEND_JOB_TIMEOUT, result_ttl=3600,
                  failure_ttl=7 * 86400)
    return True


def _queue_notifications(db: Database, redis) -> bool:
    from rq import Queue

    queue = Queue(queues.NOTIFY, connection=redis)
    if queue.count or not has_due_notifications(db):
        return False
    queue.enqueue("worker.jobs.deliver_notifications", job_timeout=SEND_JOB_TIMEOUT,
                  result_ttl=3600, failure_ttl=7 * 86400)
    return True


def _queue_tracking(redis) -> bool:
    from rq import Queue

    queue = Queue(queues.TRACKING, connection=redis)
    if EventBuffer(redis).pending() == 0 or queue.count:
        return False
    queue.enqueue("worker.jobs.store_tracking_events", job_timeout=SEND_JOB_TIMEOUT,
                  result_ttl=3600, failure_ttl=7 * 86400)
    return True


def _queue_sla(redis) -> bool:
    """Once per UTC day: until the day's check has run (the job marks it), one scheduler of
    several (SET NX) queues it, again an hour later if it failed or was lost."""
    from rq import Queue

    if redis.exists(f"{SLA_DONE_KEY}:{utcnow().date().isoformat()}"):
        return False
    if not redis.set(SLA_QUEUED_KEY, 1, nx=True, ex=SLA_RETRY_SECONDS):
        return False
    Queue(queues.DEFAULT, connection=redis).enqueue(
        "worker.jobs.check_slas", job_timeout=SEND_JOB_TIMEOUT, result_ttl=86400,
        failure_ttl=7 * 86400)
    return True
