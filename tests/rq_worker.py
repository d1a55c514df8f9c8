"""RQ's SimpleWorker for tests that run queued jobs in-process with `work(burst=True)`.

Its command channel is polled every 0.1 s instead of RQ's 60 s: the worker's teardown waits
for the poll in hand (redis-py's PubSubWorkerThread.stop joins the thread), so a burst took a
whole minute whenever the poll had started just before. `nurture worker` does the same
(worker/outage.py polls every second).
"""

from __future__ import annotations

import rq


class SimpleWorker(rq.SimpleWorker):
    def subscribe(self) -> None:
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=0.1, daemon=True, exception_handler=self._pubsub_exception_handler)
