"""Read a registry as it is, read-only and in one consistent snapshot, without trusting it.

The audit must not go through the registry's ORM: its enum and timestamp types refuse values that
are not what the coordinator writes, and a tampered row is exactly such a value. Every table is
read here with plain SQL into plain rows, keeping whatever the database holds (a status that is
no status, a timestamp that does not parse), so that the checks can report it instead of the
read failing. Nothing is written: SQLite is opened with `mode=ro`, PostgreSQL in a read-only,
repeatable-read transaction, and nothing is migrated.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from fedseal.registry.engine import (
    SQLITE_BUSY_TIMEOUT_S,
    create_registry_engine,
    normalise_url,
)
from fedseal.registry.errors import RegistryUnavailable
from fedseal.registry.failures import redact_url, unavailable

__all__ = [
    "ChainRow",
    "ContributionRow",
    "EventRow",
    "PrivacyRow",
    "RoundRow",
    "RunRow",
    "SiteRow",
    "Snapshot",
    "load_snapshot",
    "open_readonly",
    "read_snapshot",
]

_Row = TypeVar("_Row")

REQUIRED_TABLES = (
    "sites",
    "runs",
    "rounds",
    "contributions",
    "privacy_ledger",
    "events",
    "ledger_chain",
)


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One `ledger_chain` row as stored."""

    seq: Any
    table_name: Any
    entry_hash: Any
    prev_hash: Any


@dataclass(frozen=True, slots=True)
class PrivacyRow:
    """One `privacy_ledger` row as stored, with its site's name and its run's Flower id.

    `site` is None when `site_id` names no site; `run_known` is False when `run_id` names no run.
    """

    id: Any
    site_id: Any
    site: str | None
    run_id: Any
    run_known: bool
    flower_run_id: Any
    round_number: Any
    status: Any
    noise_multiplier: Any
    sample_rate: Any
    steps: Any
    max_grad_norm: Any
    delta: Any
    accountant: Any
    epsilon_round: Any
    epsilon_cumulative: Any
    budget: Any
    update_digest: Any
    site_signature: Any
    prev_hash: Any
    entry_hash: Any
    coordinator_signature: Any
    created_at: Any


@dataclass(frozen=True, slots=True)
class EventRow:
    """One `events` row as stored."""

    id: Any
    action: Any
    site: Any
    run_id: Any
    details: Any
    created_at: Any
    prev_hash: Any
    entry_hash: Any
    coordinator_signature: Any


@dataclass(frozen=True, slots=True)
class SiteRow:
    id: Any
    name: Any
    status: Any
    public_key: Any


@dataclass(frozen=True, slots=True)
class RunRow:
    id: Any
    flower_run_id: Any
    scenario: Any
    protocol_mode: Any
    status: Any
    rounds_planned: Any


@dataclass(frozen=True, slots=True)
class ContributionRow:
    """One `contributions` row with its round's run and number and its site's name."""

    id: Any
    run_id: Any
    round_number: Any
    site_id: Any
    site: str | None
    status: Any
    update_digest: Any


@dataclass(frozen=True, slots=True)
class RoundRow:
    """One `rounds` row's outcome: the global model's score on the coordinator's global test set
    after the round (None when not scored). Not chained: shown, never verified."""

    run_id: Any
    round_number: Any
    status: Any
    global_accuracy: Any
    global_auc: Any


@dataclass(frozen=True)
class Snapshot:
    """Every table the audit reads, each ordered by its key, from one read transaction."""

    url: str
    chain: tuple[ChainRow, ...]
    privacy: tuple[PrivacyRow, ...]
    events: tuple[EventRow, ...]
    sites: tuple[SiteRow, ...]
    runs: tuple[RunRow, ...]
    contributions: tuple[ContributionRow, ...]
    rounds: tuple[RoundRow, ...] = ()


def open_readonly(url: str) -> Engine:
    """An engine on the registry at `url` that cannot write (where the driver allows).

    Raises `RegistryUnavailable` (one line, password redacted) when the database cannot be
    reached or does not hold a registry with a ledger chain.
    """
    try:
        parsed = normalise_url(url)
    except ArgumentError:
        raise unavailable(url, "not a valid database URL") from None
    engine: Engine | None = None
    try:
        engine = _sqlite_readonly(url, parsed) if parsed.get_backend_name() == "sqlite" else None
        if engine is None:
            engine = create_registry_engine(parsed)
        with engine.connect() as connection:
            present = set(inspect(connection).get_table_names())
    except RegistryUnavailable:
        raise
    except Exception as exc:
        if engine is not None:
            engine.dispose()
        raise unavailable(url, exc) from exc
    missing = [table for table in REQUIRED_TABLES if table not in present]
    if missing:
        engine.dispose()
        raise unavailable(
            url,
            f"no ledger chain here (missing tables: {', '.join(missing)}); the coordinator "
            "creates them (migration 0003) when it next opens the registry",
        )
    return engine


def _sqlite_readonly(url: str, parsed: URL) -> Engine:
    """SQLite through a `mode=ro` URI: the file cannot be created, migrated or written."""
    database = parsed.database
    if not database or database == ":memory:":
        raise unavailable(url, "an in-memory SQLite database holds no registry")
    path = Path(database).expanduser().absolute()
    if not path.is_file():
        raise unavailable(url, f"no such file: {path}")
    uri = f"file:{quote(str(path))}?mode=ro"

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(
            uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False
        )
        connection.isolation_level = None  # BEGIN is emitted below, so reads share a snapshot
        return connection

    engine = create_engine("sqlite://", creator=connect, poolclass=NullPool)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN")

    return engine


@contextmanager
def _read_transaction(engine: Engine) -> Iterator[Connection]:
    connection = engine.connect()
    try:
        if engine.dialect.name == "postgresql":
            connection = connection.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        with connection.begin():
            yield connection
    finally:
        connection.close()


def load_snapshot(engine: Engine, url: str) -> Snapshot:
    """Read every table the audit needs in one transaction; `RegistryUnavailable` on failure."""
    try:
        with _read_transaction(engine) as connection:
            return read_snapshot(connection, url)
    except RegistryUnavailable:
        raise
    except Exception as exc:
        raise unavailable(url, exc) from exc


def _rows(connection: Connection, sql: str) -> list[Mapping[str, Any]]:
    return [dict(row) for row in connection.execute(text(sql)).mappings()]


def read_snapshot(connection: Connection, url: str) -> Snapshot:
    """Every table the audit needs, read through `connection` in its current transaction.

    `load_snapshot` is the read-only way in; this one lets a caller read inside a transaction
    of its own (the tests tamper with a PostgreSQL ledger and roll back).
    """
    url = redact_url(url)
    sites = _read(connection, SiteRow, "SELECT id, name, status, public_key FROM sites ORDER BY id")
    runs = _read(
        connection,
        RunRow,
        "SELECT id, flower_run_id, scenario, protocol_mode, status, rounds_planned "
        "FROM runs ORDER BY id",
    )
    site_names = {site.id: site.name for site in sites}
    flower_ids = {run.id: run.flower_run_id for run in runs}
    chain = _read(
        connection,
        ChainRow,
        "SELECT seq, table_name, entry_hash, prev_hash FROM ledger_chain ORDER BY seq",
    )
    privacy = _read(
        connection,
        PrivacyRow,
        "SELECT * FROM privacy_ledger ORDER BY id",
        site=lambda r: site_names.get(r["site_id"]),
        run_known=lambda r: r["run_id"] in flower_ids,
        flower_run_id=lambda r: flower_ids.get(r["run_id"]),
    )
    events = _read(connection, EventRow, "SELECT * FROM events ORDER BY id")
    contributions = _read(
        connection,
        ContributionRow,
        "SELECT c.id, r.run_id, r.number AS round_number, c.site_id, c.status, c.update_digest "
        "FROM contributions c LEFT JOIN rounds r ON r.id = c.round_id ORDER BY c.id",
        site=lambda r: site_names.get(r["site_id"]),
    )
    rounds = _read(
        connection,
        RoundRow,
        "SELECT run_id, number AS round_number, status, global_accuracy, global_auc "
        "FROM rounds ORDER BY run_id, number",
    )
    return Snapshot(url, chain, privacy, events, sites, runs, contributions, rounds)


_BINARY = frozenset({"public_key", "site_signature", "coordinator_signature"})
_TIMESTAMPS = frozenset({"created_at"})


def _read(
    connection: Connection,
    row_type: type[_Row],
    sql: str,
    **derived: Callable[[Mapping[str, Any]], Any],
) -> tuple[_Row, ...]:
    """`sql`'s rows as `row_type`: each field the column of its name as stored (binary columns
    as bytes, timestamps as aware datetimes), except those `derived` computes from the row."""
    result = []
    for row in _rows(connection, sql):
        values: dict[str, Any] = {}
        for item in fields(row_type):  # type: ignore[arg-type]
            if item.name in derived:
                values[item.name] = derived[item.name](row)
            elif item.name in _BINARY:
                values[item.name] = _blob(row[item.name])
            elif item.name in _TIMESTAMPS:
                values[item.name] = timestamp(row[item.name])
            else:
                values[item.name] = row[item.name]
        result.append(row_type(**values))
    return tuple(result)


def _blob(value: Any) -> Any:
    """Binary columns as `bytes` whatever the driver hands back (memoryview, bytearray)."""
    return bytes(value) if isinstance(value, memoryview | bytearray) else value


def timestamp(value: Any) -> Any:
    """A stored timestamp as an aware UTC datetime, as the registry's column type reads it.

    SQLite keeps text (naive, UTC); PostgreSQL hands back aware datetimes. Text that does not
    parse is returned unchanged, for the checks to report.
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value
