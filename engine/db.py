"""SQLAlchemy base, engine and session factory. Nothing connects at import time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import DateTime, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator


class Base(DeclarativeBase):
    pass


class UTCDateTime(TypeDecorator):
    """Stores naive UTC, returns aware UTC, on SQLite and PostgreSQL alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def insert_new(connection, table: Table):
    """INSERT into `table` that leaves a row already there (a key it conflicts with) as it is,
    for the dialect of `connection` (a Session, a Connection, or anything with a dialect)."""
    on = getattr(connection, "dialect", None) or connection.get_bind().dialect
    dialect = postgresql if on.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def make_engine(url: str, **kwargs) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        # A transaction takes the write lock when it begins (BEGIN IMMEDIATE), waiting for it
        # up to busy_timeout. A deferred one that read and then writes fails at once, with no
        # wait, when another connection wrote meanwhile (SQLITE_BUSY_SNAPSHOT in WAL mode): an
        # unsubscribe while workers send would answer "database is locked". See Database for
        # the sessions that read in a deferred one.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(
            "BEGIN" if conn.get_execution_options().get(DEFERRED) else "BEGIN IMMEDIATE"))
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


DEFERRED = "nurture_deferred"


class Database:
    """One engine and session factories per configured URL.

    On SQLite a session's transaction takes the write lock when it begins (see make_engine),
    but two kinds read in a deferred one, holding no lock until they write: `reading()`, for
    long work that only reads (the QA gate fetching links), and a session opened while another
    of this thread is open (the outer one holds the write lock: an inner one that waited for it
    would wait for itself)."""

    def __init__(self, url: str, *, info: dict | None = None):
        self.url = url
        # What every session carries as session.info: facts of the instance the database
        # belongs to (engine/crm/fieldmap.py: where its CRM field map is).
        self.info = dict(info or {})
        self.engine = make_engine(url)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False, info=self.info)
        self._deferred = sessionmaker(self.engine.execution_options(**{DEFERRED: True}),
                                      expire_on_commit=False, info=self.info)
        self._open = threading.local()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on any error."""
        depth = getattr(self._open, "depth", 0)
        self._open.depth = depth + 1
        try:
            with (self._deferred if depth else self.sessionmaker)() as session, session.begin():
                yield session
        finally:
            self._open.depth = depth

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for long work that only reads: on SQLite it holds no write lock. What it
        writes by mistake is rolled back."""
        with self._deferred() as session:  # closing it rolls back
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
