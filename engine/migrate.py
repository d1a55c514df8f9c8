"""Schema migrations with Alembic, driven from code (no alembic.ini to keep in sync)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

# Every table mapped before a session flushes: a model's foreign key may name a table whose
# module the caller never imported.
import engine.models  # noqa: F401
from engine.config import Settings
from engine.crm.fieldmap import session_info
from engine.db import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def is_current(engine) -> bool:
    """True when the database is at the newest migration."""
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision() == head


class SchemaNotCurrent(RuntimeError):
    pass


def open_database(settings: Settings) -> Database:
    """The configured database, at the newest schema.

    Its sessions know the instance's CRM field map (engine/crm/fieldmap.py map_for). The
    embedded SQLite database upgrades itself; a server database must be upgraded on purpose
    (`nurture db upgrade`), so that several hosts never race to migrate it.
    """
    database = Database(settings.database_url, info=session_info(settings))
    if not is_current(database.engine):
        if not database.url.startswith("sqlite"):
            database.dispose()
            raise SchemaNotCurrent("the database schema is not current: run `nurture db upgrade`")
        settings.instance_path.mkdir(parents=True, exist_ok=True)
        upgrade(database.url)
    return database
