"""Alembic environment: the URL comes from the caller (`nurture db upgrade`), never from a file."""

from alembic import context
from sqlalchemy import pool

from engine.db import make_engine
from engine.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is None:
        engine = make_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
        with engine.connect() as connection:
            _run(connection)
        engine.dispose()
    else:
        _run(connectable)


def _run(connection) -> None:
    if connection.dialect.name == "sqlite":
        _without_foreign_key_actions(connection)
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    if connection.dialect.name == "sqlite":
        _check_foreign_keys(connection)


def _without_foreign_key_actions(connection) -> None:
    """A batch migration rebuilds a SQLite table: it copies the rows, then drops the old
    table. With foreign keys on, that DROP fires every referencing key's ON DELETE (SET NULL,
    CASCADE) on rows that are not going away. SQLite takes this pragma outside a transaction
    only, so it is set on the driver's connection before the migrations begin one."""
    connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")


def _check_foreign_keys(connection) -> None:
    broken = connection.connection.dbapi_connection.execute("PRAGMA foreign_key_check").fetchall()
    connection.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")
    if broken:
        raise RuntimeError(f"the migrations left rows whose foreign keys point nowhere: "
                           f"{broken[:5]}")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
