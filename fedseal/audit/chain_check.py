"""Check 1: the chain is complete, every hash recomputes, every link and countersignature holds.

Each entry's hash exists three times: recomputed from its columns (H), recorded in its row (R)
and in the index (C); the coordinator's countersignature says which one it signed. Comparing the
three names the copy that was changed instead of failing every entry after it: a changed column
gives H != R = C, a changed row hash R != H = C, a changed index hash C != H = R. The next entry
must link to the hash the countersignature vouches for, so one tampered entry yields findings
about that entry only, while deleting, inserting or reordering entries still breaks the links.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedseal.contract import ledger_codec

from .entries import (
    CHAIN,
    PRIVACY,
    TABLES,
    ChainEntry,
    content_of,
    is_seq,
    name,
)
from .findings import Check, Finding
from .snapshot import Snapshot

__all__ = ["check_chain", "short"]


def short(digest: Any) -> str:
    """A hash as printed in findings: long enough to compare by eye, short enough for a line."""
    if isinstance(digest, str) and len(digest) > 20:
        return f"{digest[:16]}…"
    return repr(digest) if not isinstance(digest, str) else (digest or '""')


def _finding(entry: str, field: str, expected: str, found: str) -> Finding:
    return Finding(Check.CHAIN, entry, field, expected, found)


def _countersigned(key: bytes | None, signature: Any, candidates: Sequence[Any]) -> str | None:
    """The first candidate hash the coordinator's signature verifies over, if any."""
    if key is None or not isinstance(signature, bytes):
        return None
    for digest in candidates:
        if _is_hash(digest) and ledger_codec.verify_countersignature(key, digest, signature):
            return digest
    return None


def _is_hash(value: Any) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def check_chain(
    snapshot: Snapshot, entries: Sequence[ChainEntry], key: bytes | None
) -> list[Finding]:
    """Findings of check 1; `key` is the coordinator's public key (None: none usable)."""
    findings = _index_findings(snapshot, entries)
    vouched: dict[int, str] = {}  # seq -> the hash the next entry must link to
    for entry in entries:
        findings += _entry_findings(entry, vouched, key)
    return findings


def _index_findings(snapshot: Snapshot, entries: Sequence[ChainEntry]) -> list[Finding]:
    """Gaps, bad seqs, and entry rows that the index does not hold."""
    findings = [
        _finding(name(CHAIN, link.seq), "seq", "a position 1, 2, 3, …", repr(link.seq))
        for link in snapshot.chain
        if not is_seq(link.seq)
    ]
    previous = 0
    for seq in sorted({entry.seq for entry in entries}):
        if seq > previous + 1:
            missing = (
                f"entry {previous + 1}"
                if seq == previous + 2
                else f"entries {previous + 1} to {seq - 1}"
            )
            findings.append(
                _finding(
                    name(CHAIN, previous + 1),
                    "seq",
                    f"an index row for every entry before {seq}",
                    f"none for {missing}: missing from the chain",
                )
            )
        previous = seq
    indexed = {(entry.table, entry.seq) for entry in entries if entry.row is not None}
    for table, rows in ((PRIVACY, snapshot.privacy), ("events", snapshot.events)):
        for row in rows:
            if (table, row.id) in indexed:
                continue
            if table == PRIVACY and isinstance(row.id, int) and row.id <= 0:
                findings.append(
                    _finding(
                        name(table, row.id),
                        "entry_hash",
                        "a chain entry (signed by its site, hashed and countersigned)",
                        "a legacy entry recorded before the ledger was chained (migration 0003)",
                    )
                )
                continue
            findings.append(
                _finding(
                    name(table, row.id),
                    "id",
                    f"an entry indexed by {name(CHAIN, row.id)}",
                    "a row outside the chain's index",
                )
            )
    return findings


def _entry_findings(entry: ChainEntry, vouched: dict[int, str], key: bytes | None) -> list[Finding]:
    link, seq = entry.link, entry.seq
    findings: list[Finding] = []
    if entry.row is None or entry.table is None:
        table = link.table_name if link.table_name in TABLES else None
        findings.append(
            _finding(name(table, seq), "id", f"a row indexed by {name(CHAIN, seq)}", "none")
            if table is not None
            else _finding(
                name(CHAIN, seq), "table_name", "privacy_ledger or events", repr(link.table_name)
            )
        )
        if _is_hash(link.entry_hash):
            vouched[seq] = link.entry_hash
        return findings
    table, row = entry.table, entry.row
    here = name(table, seq)
    if link.table_name != table:
        findings.append(_finding(name(CHAIN, seq), "table_name", table, repr(link.table_name)))
    expected_prev = ledger_codec.GENESIS_HASH if seq == 1 else vouched.get(seq - 1)
    try:
        content = content_of(table, row)
        recomputed = ledger_codec.entry_hash(
            table, seq, expected_prev if expected_prev is not None else row.prev_hash, content
        )
    except (ValueError, TypeError, KeyError) as exc:
        findings.append(
            _finding(here, "columns", "values that can be hashed", f"{type(exc).__name__}: {exc}")
        )
        recomputed = None
    stored, indexed = row.entry_hash, link.entry_hash
    signed = _countersigned(key, row.coordinator_signature, (recomputed, stored, indexed))
    if recomputed is not None and stored != recomputed:
        if stored == indexed and signed != recomputed:
            findings.append(
                _finding(
                    here,
                    "columns",
                    f"the values it was chained with (hash {short(stored)})",
                    f"values that hash to {short(recomputed)}: a column was changed",
                )
            )
        else:
            findings.append(_finding(here, "entry_hash", short(recomputed), short(stored)))
    if indexed not in (recomputed, stored):
        findings.append(
            _finding(name(CHAIN, seq), "entry_hash", short(recomputed or stored), short(indexed))
        )
    if key is not None and signed is None:
        found = "none" if row.coordinator_signature is None else "a signature that does not verify"
        findings.append(
            _finding(
                here,
                "coordinator_signature",
                f"the coordinator's countersignature over {short(recomputed or stored)}",
                found,
            )
        )
    if expected_prev is not None:
        if row.prev_hash != expected_prev:
            findings.append(_finding(here, "prev_hash", short(expected_prev), short(row.prev_hash)))
        if link.prev_hash != expected_prev:
            findings.append(
                _finding(name(CHAIN, seq), "prev_hash", short(expected_prev), short(link.prev_hash))
            )
    best = signed or recomputed or (indexed if _is_hash(indexed) else None)
    if best is not None:
        vouched[seq] = best
    return findings
