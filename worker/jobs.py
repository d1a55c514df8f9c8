"""RQ jobs. They take ids or nothing, open their own resources and are idempotent: the outbox
in the database decides what is sent, so a job that runs twice does what running it once does."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from datetime import timedelta
from functools import cache

from engine.config import Settings, default_sender, redis_connection
from engine.db import Database, utcnow
from engine.flows.tracking import drain_buffer
from engine.journeys.service import run_due
from engine.migrate import open_database
from engine.redis_breaker import ShortCircuit
from engine.sending.compose import Signing
from engine.sending.delivery import DeliveryOptions, DeliveryReport, check_lease, deliver_due
from engine.sending.outbox import LEASE
from engine.sending.policy import FrequencyCap
from engine.sending.relay import RelayHealth
from engine.sending.smtp import transport_from_settings
from engine.sending.throttle import RedisThrottle
from engine.sending.transport import Transport
from engine.tracking.buffer import EventBuffer

SEND_BATCH = 200
# A send job takes batch after batch until this long has passed (the scheduler queues the next
# job while rows are due): well inside its RQ timeout (worker.scheduler.SEND_JOB_TIMEOUT) even
# with a last batch of half a lease, so RQ does not interrupt a send in the middle.
JOB_BUDGET_SECONDS = 240
STOPPING = threading.Event()  # set by `nurture worker` on SIGTERM or Ctrl+C: jobs end early
ADVISORY_TIMEOUT = 0.5  # seconds, for the Redis calls a send makes (limits, relay health)


@cache
def _database() -> Database:
    return open_database(Settings.from_env())


@cache
def _transport() -> Transport:
    """One SMTP connection per worker process, reused across jobs."""
    return transport_from_settings(Settings.from_env())


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@cache
def _delivery_options() -> DeliveryOptions:
    """From the environment: NURTURE_SEND_LEASE_SECONDS (the fault test shortens it),
    NURTURE_THROTTLE_PER_MINUTE and NURTURE_THROTTLE_PER_DOMAIN_PER_MINUTE (unset: unlimited),
    NURTURE_FREQUENCY_CAP (sends per lead per 7 days, default 3), NURTURE_REQUIRE_CONSENT."""
    env = os.environ
    settings = Settings.from_env()
    lease = env.get("NURTURE_SEND_LEASE_SECONDS")
    # Limits and relay health are shared through Redis; while it is away they cost no wait.
    redis = ShortCircuit(redis_connection(settings, timeout=ADVISORY_TIMEOUT))
    relay = settings.smtp_url or f"sink {settings.sink_host}:{settings.sink_port}"
    return DeliveryOptions(
        cap=FrequencyCap(max_sends=int(env.get("NURTURE_FREQUENCY_CAP") or 3)),
        require_consent=env.get("NURTURE_REQUIRE_CONSENT", "").lower() in ("1", "true", "yes"),
        lease=timedelta(seconds=float(lease)) if lease else LEASE,
        signing=Signing(secret_key=settings.secret_key, base_url=settings.base_url),
        relay=RelayHealth(name=relay.rpartition("@")[2], redis=redis),  # no credentials
        throttle=RedisThrottle(redis,
                               global_per_minute=_int(env.get("NURTURE_THROTTLE_PER_MINUTE")),
                               per_domain_per_minute=_int(
                                   env.get("NURTURE_THROTTLE_PER_DOMAIN_PER_MINUTE"))),
    )


def _int(value: str | None) -> int | None:
    return int(value) if value else None


def check_send_settings() -> None:
    """Refuse settings that would send twice (a lease shorter than the SMTP timeout): at the
    start of `nurture worker`, and of every send job."""
    check_lease(_delivery_options().lease, _transport())


def send_due(limit: int = SEND_BATCH) -> str:
    """Claim and deliver due outbox rows, batch after batch, until none is due (or the relay
    is down: the scheduler queues the next job, which probes it), the job's time is up, or the
    worker is asked to stop."""
    check_send_settings()
    total = DeliveryReport()
    started = time.monotonic()
    while True:
        report = deliver_due(db=_database(), transport=_transport(), worker=worker_name(),
                             clock=utcnow, limit=limit, options=_delivery_options())
        total.counts.update(report.counts)
        if not report.full or _time_to_stop(started):
            return str(total)


def _time_to_stop(started: float) -> bool:
    return STOPPING.is_set() or time.monotonic() - started > JOB_BUDGET_SECONDS


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


def deliver_notifications(limit: int = SEND_BATCH) -> str:
    """Email the sales notifications waiting (MQLs, triggers, SLA escalations), batch after
    batch, until none is due. Operational mail: no suppression, cap or send window."""
    from engine.sales.notify import NotifyOptions, deliver_due

    settings = Settings.from_env()
    options = NotifyOptions(sales_email=settings.sales_email, sender=default_sender(),
                            base_url=settings.base_url)
    total: Counter = Counter()
    started = time.monotonic()
    while True:
        outcomes = deliver_due(db=_database(), transport=_transport(), worker=worker_name(),
                               clock=utcnow, options=options, limit=limit)
        total.update(outcomes)
        if outcomes.total() < limit or _time_to_stop(started):
            return ", ".join(f"{n} {kind}" for kind, n in sorted(total.items())) or "nothing due"


def deliver_crm(limit: int = SEND_BATCH) -> str:
    """Deliver the due CRM outbox items to the CRM webhook, batch after batch, until none is
    due, the webhook stops answering, the job's time is up, or the worker is asked to stop.
    Without NURTURE_CRM_WEBHOOK_URL (and _SECRET) the items stay pending, saying why."""
    from engine.crm.delivery import deliver_all, not_configured, webhook_from_settings

    settings = Settings.from_env()
    if why := not_configured(settings):
        return why
    started = time.monotonic()
    report = deliver_all(db=_database(), webhook=webhook_from_settings(settings),
                         worker=worker_name(), clock=utcnow, limit=limit,
                         should_stop=lambda: _time_to_stop(started))
    return str(report)


def store_tracking_events(batch: int = 500) -> int:
    """Move buffered tracking events into the database (one drainer at a time)."""
    buffer = EventBuffer(redis_connection(Settings.from_env()))
    return drain_buffer(db=_database(), buffer=buffer, batch=batch)


def check_slas() -> str:
    """The daily lifecycle check: record SLA breaches, escalate, enroll stalled opportunities;
    move the leads an `advance` idle rule applies to."""
    from engine.flows.leads import advance_idle
    from engine.sales.sla import check_slas as check
    from worker.scheduler import SLA_DONE_KEY, SLA_QUEUED_KEY

    now = utcnow()
    with _database().session() as session:
        result = check(session=session, now=now)
        moved = advance_idle(session=session, now=now)
    redis = redis_connection(Settings.from_env())
    redis.set(f"{SLA_DONE_KEY}:{now.date().isoformat()}", 1, ex=2 * 86400)
    redis.delete(SLA_QUEUED_KEY)
    return f"{result}; {len(moved)} lead(s) moved by idle rules"
