"""Choosing and opening the registry database: CLI flag, then environment, then a SQLite file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError

from .engine import create_registry_engine, normalise_url
from .failures import unavailable
from .migrate import upgrade_to_head
from .registry import Clock, Registry, utc_now

__all__ = ["DEFAULT_DATABASE_ENV", "open_registry", "resolve_database_url", "sqlite_url"]

DEFAULT_DATABASE_ENV = "FEDSEAL_DATABASE_URL"
"""Environment variable holding the registry URL, so passwords stay off command lines."""


def sqlite_url(path: Path) -> str:
    """A SQLAlchemy URL for the SQLite file at ``path`` (made absolute)."""
    return f"sqlite:///{path.expanduser().absolute()}"


def resolve_database_url(
    cli_value: str | None,
    default_sqlite_path: Path,
    *,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The registry URL: the CLI value, else ``$FEDSEAL_DATABASE_URL``, else the SQLite file.

    Blank values count as unset, so ``FEDSEAL_DATABASE_URL=`` in a compose file
    falls back to the default instead of failing.
    """
    if cli_value is not None and not isinstance(cli_value, str):
        raise TypeError("cli_value must be a str or None")
    if not isinstance(default_sqlite_path, Path):
        raise TypeError("default_sqlite_path must be a pathlib.Path")
    env = os.environ if environ is None else environ
    for candidate in (cli_value, env.get(DEFAULT_DATABASE_ENV)):
        if candidate is not None and candidate.strip():
            return candidate.strip()
    return sqlite_url(default_sqlite_path)


def open_registry(
    url: str, *, clock: Clock = utc_now, ledger_key: Ed25519PrivateKey | None = None
) -> Registry:
    """Connect to the registry at ``url``, migrate it to the newest schema and return it.

    ``ledger_key`` is the coordinator's key (``fedseal.registry.ledger_key``): writes that
    append to the ledger chain need it, reads do not. Any failure raises
    :class:`RegistryUnavailable` with one line naming the URL (password redacted) and the
    reason; the caller prints it and exits.
    """
    if not isinstance(url, str):
        raise TypeError("url must be a str")
    if ledger_key is not None and not isinstance(ledger_key, Ed25519PrivateKey):
        raise TypeError("ledger_key must be an Ed25519PrivateKey or None")
    try:
        parsed = normalise_url(url)
    except ArgumentError:
        raise unavailable(url, "not a valid database URL") from None
    missing = _missing_sqlite_directory(parsed)
    if missing is not None:
        raise unavailable(url, f"directory {missing} does not exist")
    engine: Engine | None = None
    try:
        engine = create_registry_engine(parsed)
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
        upgrade_to_head(engine)
    except Exception as exc:
        if engine is not None:
            engine.dispose()
        raise unavailable(url, exc) from exc
    return Registry(engine, clock=clock, url=url, ledger_key=ledger_key)


def _missing_sqlite_directory(url: URL) -> Path | None:
    """The directory a SQLite file would live in, when it does not exist (SQLite won't say so)."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    if url.query.get("uri") in ("true", "1"):
        return None
    directory = Path(url.database).expanduser().parent
    return None if directory.is_dir() else directory
