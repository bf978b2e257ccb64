"""The ledger chain: what an entry hashes, and appending entries (docs/ledger-format.md).

The writer (the registry) and the verifier (``fl-audit``) both compute an entry's hashed content
with :func:`entry_content`, from the row's columns, so they cannot disagree about it. Byte
encodings are ``fedseal.contract.ledger_codec``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedseal.contract import ledger_codec

from .schema import ChainLink, Event, PrivacyEntry, Run, Site
from .statuses import ChainTable, EventAction

__all__ = [
    "ChainAppender",
    "ChainCollision",
    "entry_content",
    "entry_rows",
    "read_head",
    "timestamp_text",
]


def timestamp_text(value: datetime | str) -> str:
    """A stored timestamp as it is hashed: UTC, ISO 8601, microseconds.

    Naive values (SQLite read without the registry's column type) are UTC, as stored.
    """
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError("created_at must be a datetime")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)  # a StrEnum gives its value


def _integer(value: Any) -> int | None:
    return None if value is None else int(value)


def _real(value: Any) -> float:
    return float(value)


def _hex(value: Any) -> str | None:
    return None if value is None else bytes(value).hex()


_CONTENT: dict[ChainTable, dict[str, Callable[[Any], Any]]] = {
    ChainTable.PRIVACY_LEDGER: {
        "site": _text,
        "run_id": _integer,
        "flower_run_id": _text,
        "round_number": _integer,
        "status": _text,
        "noise_multiplier": _real,
        "sample_rate": _real,
        "steps": _integer,
        "max_grad_norm": _real,
        "delta": _real,
        "accountant": _text,
        "epsilon_round": _real,
        "epsilon_cumulative": _real,
        "budget": _real,
        "update_digest": _text,
        "site_signature": _hex,
        "created_at": timestamp_text,
    },
    ChainTable.EVENTS: {
        "action": _text,
        "site": _text,
        "run_id": _integer,
        "details": _text,
        "created_at": timestamp_text,
    },
}


def entry_content(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """The content an entry of ``table`` hashes, from its row's values by column name.

    A ``privacy_ledger`` row also needs ``site`` (the site's name, from ``site_id``) and
    ``flower_run_id`` (its run's, from ``run_id``): :func:`entry_rows` selects both.
    Extra keys are ignored; a missing one raises ``KeyError``.
    """
    fields = _CONTENT[ChainTable(table)]
    return {name: convert(row[name]) for name, convert in fields.items()}


def entry_rows(table: str) -> Select[Any]:
    """Every row of a chain table with what :func:`entry_content` needs, by id.

    Use ``row._mapping`` of each result row. Legacy privacy rows (ids <= 0) are included.
    """
    if ChainTable(table) is ChainTable.EVENTS:
        return select(Event.__table__).order_by(Event.id)
    return (
        select(PrivacyEntry.__table__, Site.name.label("site"), Run.flower_run_id)
        .join(Site, Site.id == PrivacyEntry.site_id)
        .join(Run, Run.id == PrivacyEntry.run_id)
        .order_by(PrivacyEntry.id)
    )


def read_head(session: Session) -> tuple[int, str] | None:
    """The last entry's (seq, entry_hash), or None for an empty chain."""
    row = session.execute(
        select(ChainLink.seq, ChainLink.entry_hash).order_by(ChainLink.seq.desc()).limit(1)
    ).one_or_none()
    return None if row is None else (row.seq, row.entry_hash)


class ChainCollision(Exception):
    """Another writer took the next ``seq`` first: roll back and try again."""


class ChainAppender:
    """Appends entries after the head read at the start of one write transaction.

    The first entry of an empty chain is always ``chain_started``, naming the coordinator's key.
    Every entry gets the transaction's timestamp.
    """

    def __init__(self, session: Session, key: Ed25519PrivateKey, now: datetime) -> None:
        self._session = session
        self._key = key
        self._now = now
        self._head = read_head(session)  # first, so later reads never see a newer chain

    def event(
        self,
        action: EventAction,
        *,
        site: str | None = None,
        run_id: int | None = None,
        details: Mapping[str, Any],
    ) -> int:
        """Append an ``events`` entry; returns its seq (= its id)."""
        text = ledger_codec.canonical_json(dict(details)).decode("utf-8")
        return self.append(Event(action=action, site=site, run_id=run_id, details=text))

    def append(self, entry: PrivacyEntry | Event, **joined: Any) -> int:
        """Hash, countersign and insert ``entry`` with its index row; returns its seq.

        ``joined`` holds what the content takes from other tables (a privacy entry's ``site``
        name and ``flower_run_id``).
        """
        if self._head is None and not (
            isinstance(entry, Event) and entry.action is EventAction.CHAIN_STARTED
        ):
            public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            self.event(EventAction.CHAIN_STARTED, details={"coordinator_key": public.hex()})
        table = ChainTable(entry.__tablename__)
        if self._head is None:
            seq, prev_hash = 1, ledger_codec.GENESIS_HASH
        else:
            seq, prev_hash = self._head[0] + 1, self._head[1]
        entry.created_at = self._now
        row = {column.key: getattr(entry, column.key) for column in entry.__table__.columns}
        digest = ledger_codec.entry_hash(table, seq, prev_hash, entry_content(table, row | joined))
        self._session.flush()  # pending work first, so a failure below is the chain's
        self._session.add(
            ChainLink(seq=seq, table_name=table, entry_hash=digest, prev_hash=prev_hash)
        )
        try:
            self._session.flush()
        except IntegrityError as exc:
            raise ChainCollision(f"seq {seq} was taken by another writer") from exc
        entry.id = seq
        entry.prev_hash = prev_hash
        entry.entry_hash = digest
        entry.coordinator_signature = ledger_codec.countersign(self._key, digest)
        self._session.add(entry)
        self._session.flush()
        self._head = (seq, digest)
        return seq
