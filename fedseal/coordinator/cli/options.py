"""The options several `fl-coordinator` commands share, and what they resolve to: the state
folder, the registry (opened with the ledger key when a command writes), the Flower connection.

A missing or unusable value is a `UserError` (one line, exit code 2), never a traceback.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from fedseal.cli_support import UserError

if TYPE_CHECKING:
    from fedseal.registry import Registry

__all__ = [
    "DEFAULT_STATE",
    "EPILOG",
    "FLWR_HOME_ENV",
    "PROG",
    "REGISTRY_FILE",
    "STATE_ENV",
    "add_common_options",
    "checked_flwr_home",
    "database_url",
    "flwr_home",
    "open_registry",
    "say",
    "say_files",
    "state_dir",
]

PROG = "fl-coordinator"
STATE_ENV = "FEDSEAL_COORDINATOR_STATE"
DEFAULT_STATE = Path("coordinator-state")
REGISTRY_FILE = "registry.db"
FLWR_HOME_ENV = "FLWR_HOME"

EPILOG = (
    "Exit codes: 0 done, 2 usage error (bad argument, missing or malformed file, unknown site, "
    "unreachable database), 4 a `flwr` command failed (what was done before it stays done), "
    "130 interrupted."
)


def add_common_options(
    parser: argparse.ArgumentParser, *, flower: str | None = None, database: bool = True
) -> None:
    """The options commands share: `--connection NAME` and `--flwr-home DIR` for a command that
    runs `flwr` to do `flower`, `--database URL` for one that opens the registry, `--state DIR`."""
    if flower is not None:
        _add_flower_options(parser, flower)
    if database:
        parser.add_argument(
            "--database",
            metavar="URL",
            help="registry database URL (default: $FEDSEAL_DATABASE_URL, else the SQLite file "
            f"STATE/{REGISTRY_FILE})",
        )
    parser.add_argument(
        "--state",
        type=Path,
        metavar="DIR",
        help=f"the coordinator's state folder, holding keys/ledger.key (default: ${STATE_ENV}, "
        f"else ./{DEFAULT_STATE})",
    )


def _add_flower_options(parser: argparse.ArgumentParser, what: str) -> None:
    from fedseal.coordinator.flower_app import CONNECTION_NAME

    parser.add_argument(
        "--connection",
        default=CONNECTION_NAME,
        metavar="NAME",
        help=f"the SuperLink connection in FLWR_HOME/config.toml used to {what} "
        f"(default: {CONNECTION_NAME})",
    )
    parser.add_argument(
        "--flwr-home",
        type=Path,
        metavar="DIR",
        help=f"the FLWR_HOME folder whose config.toml defines the connection (default: "
        f"${FLWR_HOME_ENV})",
    )


def say(message: str) -> None:
    """A progress line on stdout, named after the program."""
    print(f"{PROG}: {message}", flush=True)


def say_files(made: Iterable[Path], kept: Iterable[Path]) -> None:
    """The files a command made, then those it found and kept (never overwritten)."""
    for path in made:
        say(f"made {path}")
    for path in kept:
        say(f"kept existing {path} (not overwritten)")


def state_dir(args: argparse.Namespace) -> Path:
    """--state, else $FEDSEAL_COORDINATOR_STATE, else ./coordinator-state."""
    if args.state is not None:
        return Path(args.state)
    env = os.environ.get(STATE_ENV, "").strip()
    return Path(env) if env else DEFAULT_STATE


def database_url(args: argparse.Namespace) -> str:
    """--database, else $FEDSEAL_DATABASE_URL, else the SQLite file in the state folder."""
    from fedseal.registry import resolve_database_url

    return resolve_database_url(args.database, state_dir(args) / REGISTRY_FILE)


def open_registry(args: argparse.Namespace, *, writing: bool) -> Registry:
    """The registry; a writing command needs the ledger key that countersigns every entry."""
    from fedseal.registry import RegistryUnavailable
    from fedseal.registry import open_registry as open_database
    from fedseal.registry.ledger_key import LedgerKeyError, load_ledger_key

    key = None
    if writing:
        try:
            key = load_ledger_key(state_dir(args))
        except LedgerKeyError as exc:
            raise UserError(
                f"{exc}; run `{PROG} init-pki` (or pass the right --state) first"
            ) from None
    url = database_url(args)
    if not writing:
        _refuse_missing_sqlite(url)
    try:
        return open_database(url, ledger_key=key)
    except RegistryUnavailable as exc:
        raise UserError(str(exc)) from None


def _refuse_missing_sqlite(url: str) -> None:
    """Reading must not create an empty SQLite registry where none was meant to be."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # open_registry says what is wrong with it
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    if parsed.query.get("uri") in ("true", "1"):
        return
    if not Path(parsed.database).expanduser().exists():
        raise UserError(f"no registry database at {parsed.database}")


def flwr_home(args: argparse.Namespace) -> Path | None:
    """--flwr-home, else $FLWR_HOME, else None (no Flower connection known)."""
    if args.flwr_home is not None:
        return Path(args.flwr_home)
    env = os.environ.get(FLWR_HOME_ENV, "").strip()
    return Path(env) if env else None


def checked_flwr_home(args: argparse.Namespace) -> Path:
    """The FLWR_HOME a `flwr` command needs: given, and holding a config.toml."""
    home = flwr_home(args)
    if home is None:
        raise UserError(
            f"registering with Flower needs --flwr-home DIR (or ${FLWR_HOME_ENV}) naming the "
            "folder whose config.toml defines the SuperLink connection"
        )
    if not (home / "config.toml").is_file():
        raise UserError(f"{home / 'config.toml'} does not exist: no Flower connections there")
    return home
