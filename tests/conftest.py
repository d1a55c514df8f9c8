"""Shared fixtures: a real database per backend (SQLite always; PostgreSQL on CI or when
NURTURE_TEST_DATABASE_URL is set), an app, a CLI runner, and program directories."""

from __future__ import annotations

import importlib
import os
import pkgutil
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

import pytest
from click.testing import CliRunner
from launching import mark_launched
from sqlalchemy import create_engine, text

from engine.config import stop_embedded
from engine.db import Base, Database
from engine.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_PROGRAM = ROOT / "assets" / "acme-nurture"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TEST_SENDER = "Nurture Tests <tests@nurture.example>"


def _import_every_module() -> None:
    """Every module of the engine and the worker, imported before any test runs: a module first
    imported while a test has patched engine.db.utcnow would keep the fake clock for the rest
    of the session (its `from engine.db import utcnow` binds whatever is there then)."""
    import engine
    import worker

    for package in (engine, worker):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not module.name.startswith("engine.migrations"):  # alembic runs those
                importlib.import_module(module.name)


# The CLI's console (engine/cli_context.py) keeps the width COLUMNS gives when it is created,
# and a pytest-xdist worker inherits COLUMNS=80 and LINES=24 from the pytest that started it
# (GNU readline, once imported there, exports them). Tests that need a width set COLUMNS.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)

_import_every_module()  # after the above: importing may create the console


def _postgres_admin_url() -> str | None:
    url = os.environ.get("NURTURE_TEST_DATABASE_URL")
    if url:
        return url.replace("postgresql://", "postgresql+psycopg://", 1)
    return PG_ADMIN_URL if os.environ.get("CI") == "true" else None


def _backends() -> list[str]:
    return ["sqlite", "postgresql"] if _postgres_admin_url() else ["sqlite"]


@pytest.fixture(scope="session", autouse=True)
def embedded_redis_stopped():
    """The embedded Redis servers tests start stop with the session: a pytest-xdist worker
    exits without running exit handlers, which would leave them running."""
    yield
    stop_embedded()


@pytest.fixture(scope="session", autouse=True)
def default_sender():
    """Most programs written in tests set no sender: they take NURTURE_FROM, as a deployment
    may. Tests about a missing sender remove it with monkeypatch."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NURTURE_FROM", TEST_SENDER)
        yield TEST_SENDER


@pytest.fixture(scope="session")
def ci_redis_url() -> str:
    """The Redis service on CI: a database of this test process's own, so that parallel
    pytest-xdist workers never empty each other's queues (gw0 takes 15, gw1 14, ...; db 0 is
    never used). Within a process tests run one at a time, each emptying it as it needs."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    number = 15 - int(worker.removeprefix("gw"))
    if number < 1:
        pytest.fail(f"xdist worker {worker}: the Redis service has no database left for it "
                    "(15 workers at most: run with fewer, e.g. -n 8)", pytrace=False)
    return f"redis://127.0.0.1:6379/{number}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite file, copied for each test (migrating per test would be slow)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_url():
    """A database of our own on the shared server, dropped at the end of the session."""
    admin_url = _postgres_admin_url()
    if admin_url is None:
        pytest.skip("PostgreSQL tests run when CI=true or NURTURE_TEST_DATABASE_URL is set")
    name = f"nurture_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    _no_autovacuum(url)
    yield url
    if url in _emptying:
        _emptying.pop(url)[0].dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=_backends())
def database_url(request, tmp_path, sqlite_template) -> str:
    if request.param == "sqlite":
        path = tmp_path / "nurture.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    _empty(url)


@pytest.fixture
def postgres_only_url(postgres_url) -> str:
    """For tests of what only PostgreSQL is deployed for (several hosts): emptied after, with
    TRUNCATE (bench/reports.py runs VACUUM, which would hand the space of deleted rows to new
    ones: see _no_autovacuum)."""
    yield postgres_url
    _truncate(postgres_url)


def _no_autovacuum(url: str) -> None:
    """Tests empty the database with DELETE (_empty). Without vacuum the space of deleted rows
    is never reused, so new rows are stored after the old ones, in the order they are inserted,
    as in a freshly truncated table: some tests take a tie (outbox rows due at the same instant)
    to come out in insertion order."""
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            conn.execute(text(f'ALTER TABLE "{table.name}" SET (autovacuum_enabled = off, '
                              "toast.autovacuum_enabled = off)"))
    engine.dispose()


def _truncate(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


_emptying: dict[str, tuple] = {}  # url -> (engine, statement), kept for the session


def _empty(url: str) -> None:
    """Every table emptied and its ids restarted at 1, as TRUNCATE ... RESTART IDENTITY would,
    but with DELETE (children first) and setval: on tables holding a few rows TRUNCATE costs
    about 0.1 s per test, DELETE a few milliseconds."""
    if url not in _emptying:
        engine = create_engine(url)
        tables = Base.metadata.sorted_tables
        with engine.connect() as conn:
            sequences = conn.scalars(text(
                "SELECT s.oid::regclass::text FROM pg_class s"
                " JOIN pg_depend d ON d.objid = s.oid AND d.deptype IN ('a', 'i')"
                " JOIN pg_class t ON t.oid = d.refobjid"
                " WHERE s.relkind = 'S' AND t.relname = ANY(:names) ORDER BY 1"),
                {"names": [t.name for t in tables]}).all()
        statement = "; ".join(
            [f'DELETE FROM "{t.name}"' for t in reversed(tables)]
            + [f"SELECT {', '.join(f'setval({_literal(s)}, 1, false)' for s in sequences)}"]
            * bool(sequences))
        _emptying[url] = (engine, statement)
    engine, statement = _emptying[url]
    with engine.begin() as conn:
        conn.execute(text(statement))


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@pytest.fixture
def db(database_url) -> Database:
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def env(tmp_path, database_url, monkeypatch) -> dict:
    """Environment for CLI and app: the test database and a private instance directory."""
    values = {"DATABASE_URL": database_url, "NURTURE_INSTANCE": str(tmp_path / "instance"),
              "SECRET_KEY": "test-secret"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("REDIS_URL", raising=False)
    return values


@pytest.fixture
def app(env):
    """The Flask app on the test's database (a test module that needs more overrides it)."""
    from engine.web.app import create_app

    app = create_app()
    yield app
    app.extensions["nurture.db"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def cli(env):
    """Run `nurture ...` in-process: cli("program", "load", path) -> click Result."""
    from engine.cli import main

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def sample_program(tmp_path) -> Path:
    """A private copy of the bundled sample program, safe to edit."""
    target = tmp_path / "acme-nurture"
    shutil.copytree(SAMPLE_PROGRAM, target)
    return target


@pytest.fixture
def loaded_program(cli, sample_program, db) -> str:
    """The sample program loaded, and launched (its sends go out): tests that are about the
    launch gate load it themselves."""
    result = cli("program", "load", sample_program)
    assert result.exit_code == 0, result.output
    mark_launched(db, "acme-nurture")
    return "acme-nurture"


@pytest.fixture
def leads_cli_clock(monkeypatch):
    """The leads CLI's clock: Monday 2026-03-02 06:00 UTC (before the send window opens), one
    minute later at each reading, so that a rewritten timestamp would show."""
    times = (datetime(2026, 3, 2, 6, 0, tzinfo=UTC) + timedelta(minutes=n) for n in count())
    monkeypatch.setattr("engine.leads.cli.utcnow", lambda: next(times))


@pytest.fixture
def keys(db) -> dict[str, str]:
    """One API key per role, named "<role> bot": {"admin": "nur_...", ...}."""
    from engine.auth.service import ROLES, create_key
    from engine.db import utcnow

    with db.session() as s:
        return {role: create_key(session=s, role=role, name=f"{role} bot", now=utcnow())[1]
                for role in ROLES}
