"""Redis (or database) outages seen by the long-running processes, `nurture worker` and
`nurture scheduler`: they wait with back-off, say once when an outage starts and once when it
ends, and carry on. Nothing is lost meanwhile: the outbox in the database decides what is sent,
and the scheduler queues the jobs again once Redis answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from engine.redis_breaker import REDIS_DOWN  # what a Redis that is down or restarting raises

FIRST_WAIT = 0.5  # seconds; doubled after each failure up to LONGEST_WAIT
LONGEST_WAIT = 30.0


class Outage:
    """One service's outages. `noticed` (a watcher) and `failed` (the one waiting to retry,
    given how long to wait, longer each time) say so only when an outage starts; `recovered`,
    at the first success, says how long it lasted. Safe to share between threads."""

    def __init__(self, service: str, say: Callable[[str], None], *,
                 meanwhile: str = "the rows wait in the database",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.service = service
        self.meanwhile = meanwhile
        self.say = say
        self.clock = clock
        self.since: float | None = None
        self.wait = FIRST_WAIT
        self._lock = threading.Lock()

    def noticed(self, error: Exception) -> None:
        """Redis failed: say so if this starts an outage."""
        with self._lock:
            self._notice(error)

    def failed(self, error: Exception) -> float:
        """Redis failed again for the one waiting on it: the next wait, longer each time."""
        with self._lock:
            self._notice(error)
            wait, self.wait = self.wait, min(self.wait * 2, LONGEST_WAIT)
            return wait

    def _notice(self, error: Exception) -> None:
        if self.since is not None:
            return
        self.since, self.wait = self.clock(), FIRST_WAIT
        self.say(f"{self.service} unreachable ({_first_line(error)}): retrying with back-off "
                 f"up to {LONGEST_WAIT:g}s; {self.meanwhile}")

    def recovered(self) -> None:
        with self._lock:
            if self.since is None:
                return
            lasted = self.clock() - self.since
            self.since = None
            self.say(f"{self.service} reachable again after {lasted:.0f}s")


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def wait_for(ping: Callable[[], object], outage: Outage, error: Exception,
             sleep: Callable[[float], None] = time.sleep) -> None:
    """Return once `ping` succeeds, waiting with the outage's back-off between tries."""
    while True:
        sleep(outage.failed(error))
        try:
            ping()
        except REDIS_DOWN as again:
            error = again
        else:
            outage.recovered()
            return


class Watch(threading.Thread):
    """Pings Redis every `every` seconds so an outage is reported (once) and its end too,
    even while the worker sits idle in RQ's own reconnect loop."""

    def __init__(self, ping: Callable[[], object], outage: Outage, every: float = 1.0) -> None:
        super().__init__(name="redis-watch", daemon=True)
        self.ping, self.outage, self.every = ping, outage, every
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                self.ping()
            except REDIS_DOWN as error:
                self.outage.noticed(error)
            else:
                self.outage.recovered()


class QuietReconnects(logging.Filter):
    """Drops RQ's own line for every reconnect try and its traceback when Redis goes away
    mid-job: the Outage says it once instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "could not connect to Redis" in record.getMessage():
            return False
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, REDIS_DOWN)


def run_worker(queue_names: list[str], connection, *, burst: bool,
               say: Callable[[str], None], sleep: Callable[[float], None] = time.sleep) -> None:
    """`nurture worker`: an RQ SimpleWorker that outlives Redis. RQ retries by itself while it
    waits for a job, but quits when Redis fails mid-job (or a reply times out); a new worker
    takes over once Redis answers. It stops for good on SIGINT/SIGTERM, or when a burst found
    the queues empty."""
    from rq import Queue, SimpleWorker
    from rq.exceptions import StopRequested

    from worker import jobs

    class Worker(SimpleWorker):
        max_connection_wait_time = LONGEST_WAIT  # RQ's own reconnect loop, while idle
        stop_asked = False

        def request_stop(self, signum, frame):
            self.stop_asked = True
            jobs.STOPPING.set()  # a send job ends after the batch in hand
            super().request_stop(signum, frame)

        def subscribe(self):
            # RQ's command channel, polled every second rather than every minute: stopping
            # waits for the poll in hand (redis-py's stop()), so SIGTERM could take a minute.
            self.pubsub = self.connection.pubsub()
            self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
            self.pubsub_thread = self.pubsub.run_in_thread(
                sleep_time=1, daemon=True, exception_handler=self._pubsub_exception_handler)

    logging.getLogger("rq.worker").addFilter(QuietReconnects())
    outage = Outage("Redis", say)
    watch = Watch(connection.ping, outage)
    watch.start()
    pause = FIRST_WAIT
    try:
        while True:
            worker, started = None, time.monotonic()
            try:
                worker = Worker([Queue(name, connection=connection) for name in queue_names],
                                connection=connection)
                worker.work(burst=burst)
            except REDIS_DOWN:
                pass  # RQ's teardown could not reach Redis: decided below
            finally:
                if worker is not None and worker.pubsub_thread is not None:
                    worker.pubsub_thread.stop(timeout=3)  # its unsubscribe may have failed
            if worker is not None and worker.stop_asked:
                return
            try:
                connection.ping()
            except REDIS_DOWN as error:
                wait_for(connection.ping, outage, error, sleep)
                continue
            if burst and worker is not None:
                return
            # Quit by itself with Redis answering (a reply timed out, or a failure RQ logged):
            # start again, waiting longer each time it happens in quick succession.
            pause = FIRST_WAIT if time.monotonic() - started > 60 else min(pause * 2,
                                                                           LONGEST_WAIT)
            say(f"the worker stopped by itself; starting a new one in {pause:g}s")
            sleep(pause)
    except StopRequested:  # SIGINT/SIGTERM while no RQ worker was running
        return
    finally:
        watch.stopped.set()
