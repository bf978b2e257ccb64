"""Engine construction: driver choice for PostgreSQL, SQLite pragmas and transaction control.

SQLite is tuned so that one process can write while others (a live progress
table, an audit CLI) read: write-ahead logging, a busy timeout, foreign keys
on, and BEGIN emitted by SQLAlchemy rather than by the sqlite3 module, so that
reads see one snapshot and writers take the write lock up front.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url

__all__ = [
    "SQLITE_BUSY_TIMEOUT_S",
    "create_registry_engine",
    "normalise_url",
    "writer",
]

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for another process's write to finish."""

POSTGRES_CONNECT_TIMEOUT_S = 10
"""Fail fast on an unreachable server instead of hanging a CLI."""

_WRITE_OPTION = "fedseal_write"

_POSTGRES_ALIASES = frozenset({"postgresql", "postgres"})
_LIBPQ_DRIVERS = frozenset({"psycopg", "psycopg2"})  # accept libpq's connect_timeout


def normalise_url(url: str | URL) -> URL:
    """Parse ``url`` and map plain ``postgresql://`` to the psycopg 3 driver that fedseal ships."""
    parsed = make_url(url)
    if parsed.drivername in _POSTGRES_ALIASES:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_registry_engine(url: str | URL) -> Engine:
    """Create an engine for the registry; no connection is made yet."""
    parsed = normalise_url(url)
    connect_args: dict[str, Any] = {}
    backend = parsed.get_backend_name()
    if backend == "sqlite" and "timeout" not in parsed.query:
        connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_S
    if parsed.get_driver_name() in _LIBPQ_DRIVERS and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
    engine = create_engine(parsed, connect_args=connect_args, pool_pre_ping=True)
    if backend == "sqlite":
        _tune_sqlite(engine)
    return engine


def writer(engine: Engine) -> Engine:
    """The same engine, marked so that SQLite transactions take the write lock at BEGIN.

    Without it a transaction that reads first and writes later can fail with
    "database is locked" instead of waiting, when another process wrote in between.
    """
    return engine.execution_options(**{_WRITE_OPTION: True})


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
