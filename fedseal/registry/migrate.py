"""Schema migrations: Alembic configured in code, so no alembic.ini or credentials on disk."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from .engine import create_registry_engine, writer

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "head_revision",
    "upgrade_to_head",
]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

_POSTGRES_MIGRATION_LOCK = 0x6665_6473_6561_6C  # "fedseal": one migrator at a time per database


def alembic_config(connection: Connection | None = None, *, url: str | None = None) -> Config:
    """An in-memory Alembic config for the registry's migrations.

    Pass an open ``connection`` to migrate through it, or ``url`` for offline
    SQL generation and ``alembic revision --autogenerate`` during development.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this version of fedseal ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("the registry ships no migrations")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at, or None for an empty database."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(engine_or_url: Engine | str) -> None:
    """Bring the registry schema to the newest revision; a database already there is only read.

    Concurrent callers are serialised (a PostgreSQL advisory lock, SQLite's write
    lock), so a coordinator and a CLI starting together do not race.
    """
    engine = (
        create_registry_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    )
    try:
        head = head_revision()
        with engine.connect() as connection:
            if current_revision(connection) == head:
                return
        with writer(engine).begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_MIGRATION_LOCK}
                )
            command.upgrade(alembic_config(connection), "head")
    finally:
        if engine is not engine_or_url:
            engine.dispose()
