"""What every part of the registry stands on: short transactions, translated failures, the clock.

Each public registry method opens one transaction here and hands back plain values or frozen
views, so callers never hold ORM objects or sessions. A write that appends to the ledger chain
(``chain.py``) runs in :meth:`RegistryCore._chained`, which needs the coordinator's ledger key
and tries again when another writer took the chain's next position first.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Self, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from .chain import ChainAppender, ChainCollision
from .checks import check_count
from .engine import writer
from .errors import ChainBusy, LedgerKeyMissing, RecordConflict, RecordNotFound
from .failures import describe_error, one_line, unavailable
from .schema import Round, Run, Site
from .statuses import SiteStatus

__all__ = ["CHAIN_ATTEMPTS", "Clock", "RegistryCore", "get_record", "utc_now"]

_T = TypeVar("_T")
_Model = TypeVar("_Model", Run, Round)

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware; tests pass a fake one."""


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


CHAIN_ATTEMPTS = 20
"""How often a chain append is tried when other writers keep taking the next position."""
_BACKOFF_BASE_S = 0.005
_BACKOFF_MAX_S = 0.25
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})  # PostgreSQL: serialisation, deadlock


class RegistryCore:
    """The engine, the clock and the ledger key, and the transactions every registry call runs in.

    The registry's parts (sites, runs, rounds, queries, the privacy ledger) derive from this
    class; :class:`~fedseal.registry.Registry` combines them.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock = utc_now,
        url: str | None = None,
        ledger_key: Ed25519PrivateKey | None = None,
    ) -> None:
        if ledger_key is not None and not isinstance(ledger_key, Ed25519PrivateKey):
            raise TypeError("ledger_key must be an Ed25519PrivateKey or None")
        self._engine = engine
        self._writer = writer(engine)
        self._clock = clock
        self._url = url if url is not None else engine.url.render_as_string(hide_password=True)
        self._ledger_key = ledger_key

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The underlying engine, for tools that inspect the schema (not for writing rows)."""
        return self._engine

    def close(self) -> None:
        """Release pooled connections; the registry must not be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- transactions --------------------------------------------------------------------------

    def _require_ledger_key(self) -> Ed25519PrivateKey:
        if self._ledger_key is None:
            raise LedgerKeyMissing()
        return self._ledger_key

    def _chained(self, work: Callable[[Session, ChainAppender], _T]) -> _T:
        """Run ``work`` in one write transaction that appends to the ledger chain.

        When another writer takes the chain's next position first, the transaction rolls back
        and ``work`` runs again on the new head, after a short random pause; after
        ``CHAIN_ATTEMPTS`` tries, :class:`ChainBusy`.
        """
        key = self._require_ledger_key()
        with self._translated():
            for attempt in range(CHAIN_ATTEMPTS):
                try:
                    with Session(self._writer) as session, session.begin():
                        return work(session, ChainAppender(session, key, self._now()))
                except ChainCollision:
                    pass
                except OperationalError as exc:
                    if getattr(exc.orig, "sqlstate", None) not in _TRANSIENT_SQLSTATES:
                        raise
                ceiling = min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2**attempt)
                time.sleep(ceiling * secrets.randbelow(1001) / 1000)
        raise ChainBusy(
            f"other writers took the ledger chain's next position {CHAIN_ATTEMPTS} times; "
            "nothing was written"
        )

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("the registry clock must return timezone-aware datetimes")
        return now.astimezone(UTC)

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._translated(), Session(self._writer) as session, session.begin():
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._translated(), Session(self._engine) as session, session.begin():
            yield session

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Database failures become registry errors with one-line, password-free messages."""
        try:
            yield
        except IntegrityError as exc:
            raise RecordConflict(one_line(describe_error(exc))) from exc
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._url, exc) from exc

    def _site_ids(self, session: Session, names: Sequence[str]) -> dict[str, int]:
        """Ids of the named sites, registering the missing ones as active."""
        found = session.execute(select(Site.name, Site.id).where(Site.name.in_(names)))
        ids = {name: site_id for name, site_id in found}
        missing = [name for name in names if name not in ids]
        if missing:
            now = self._now()
            created = [
                Site(name=name, created_at=now, status=SiteStatus.ACTIVE) for name in missing
            ]
            session.add_all(created)
            session.flush()
            ids.update((site.name, site.id) for site in created)
        return ids


def get_record(session: Session, model: type[_Model], record_id: int) -> _Model:
    """The run or round with this id; :class:`RecordNotFound` if there is none."""
    check_count(record_id, f"{model.__name__.lower()} id")
    found = session.get(model, record_id)
    if found is None:
        raise RecordNotFound(f"no {model.__name__.lower()} with id {record_id}")
    return found
