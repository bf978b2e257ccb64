"""The chain's entries in order, each resolved to its row, and the content each one hashes.

Every check walks the same sequence, so it is built once: which `seq` is held by which row of
which table, which rows are outside the index, and each entry's content as the writer hashes it.
The content comes from `fedseal.registry.chain.entry_content`, the very function the
registry uses when it appends, applied to the columns as read: the verifier and the writer agree
by construction, and nothing the row says about itself (its hashes, its signatures) is used to
compute it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from fedseal.registry.chain import entry_content

from .snapshot import ChainRow, EventRow, PrivacyRow, Snapshot

__all__ = ["EVENTS", "PRIVACY", "TABLES", "ChainEntry", "content_of", "name", "resolve_entries"]

PRIVACY = "privacy_ledger"
EVENTS = "events"
TABLES = (PRIVACY, EVENTS)
CHAIN = "ledger_chain"


def name(table: str, key: Any) -> str:
    """How findings name a row: `privacy_ledger#17`."""
    return f"{table}#{key}"


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """One chain position: its index row and the entry row found for it (None: missing)."""

    seq: int
    link: ChainRow
    table: str | None
    row: PrivacyRow | EventRow | None


def as_mapping(row: PrivacyRow | EventRow) -> Mapping[str, Any]:
    return {field.name: getattr(row, field.name) for field in fields(row)}


def content_of(table: str, row: PrivacyRow | EventRow) -> dict[str, Any]:
    """The entry's hashed content, from its columns (raises on values with no encoding)."""
    return entry_content(table, as_mapping(row))


def is_seq(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def resolve_entries(snapshot: Snapshot) -> list[ChainEntry]:
    """The index rows with a valid `seq`, in order, each with the row holding that entry.

    The row is looked up in the table the index names, else in the other chain table (the
    chain check reports the mismatch); `table` is where it was found.
    """
    rows: dict[str, dict[Any, PrivacyRow | EventRow]] = {
        PRIVACY: {row.id: row for row in snapshot.privacy},
        EVENTS: {row.id: row for row in snapshot.events},
    }
    resolved = []
    for link in snapshot.chain:
        if not is_seq(link.seq):
            continue
        candidates = [link.table_name] if link.table_name in TABLES else []
        candidates += [table for table in TABLES if table not in candidates]
        table = next((t for t in candidates if link.seq in rows[t]), None)
        row = None if table is None else rows[table][link.seq]
        resolved.append(ChainEntry(link.seq, link, table, row))
    return resolved
