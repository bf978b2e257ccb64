"""`verify`: the seven checks of docs/ledger-format.md over one registry snapshot.

Each check lives in its own module and returns findings; this module decides which coordinator
key the countersignatures are checked against, runs the checks in order and gathers one
`VerifyResult` that the CLI prints and the report renders. Nothing stored is trusted: every hash
is recomputed from the columns, every signature verified, every ε recomputed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from .audit_check import check_privacy_audits
from .chain_check import check_chain
from .contribution_check import check_contributions
from .entries import EVENTS, ChainEntry, name, resolve_entries
from .epsilon_check import check_epsilon, ledger_order
from .findings import Check, Finding, KeySource, VerifyResult
from .keys import fingerprint
from .site_check import check_site_keys, check_site_signatures
from .snapshot import EventRow, Snapshot, load_snapshot, open_readonly

__all__ = ["verify", "verify_database"]


def verify(snapshot: Snapshot, pinned_key: bytes | None = None) -> VerifyResult:
    """Run every check on `snapshot`; `pinned_key` is the coordinator's raw public key, if the
    auditor has it from elsewhere (otherwise the chain's own `chain_started` entry is used)."""
    entries = resolve_entries(snapshot)
    key, source, findings = _coordinator_key(entries, pinned_key)
    findings += check_chain(snapshot, entries, key)
    findings += check_site_signatures(entries)
    ledger = ledger_order(snapshot, entries)
    epsilon_findings, recomputed = check_epsilon(ledger)
    findings += epsilon_findings
    findings += check_contributions(snapshot, ledger)
    findings += check_site_keys(snapshot, entries)
    audit_findings, audits = check_privacy_audits(snapshot, entries, ledger)
    findings += audit_findings
    last = snapshot.chain[-1] if snapshot.chain else None
    return VerifyResult(
        findings=tuple(sorted(findings, key=lambda f: f.check)),
        counts={
            "ledger_chain": len(snapshot.chain),
            "privacy_ledger": len(snapshot.privacy),
            "events": len(snapshot.events),
            "contributions": len(snapshot.contributions),
        },
        sites=tuple(str(site.name) for site in snapshot.sites),
        runs=len(snapshot.runs),
        key_fingerprint=None if key is None else fingerprint(key),
        key_source=source,
        head=None if last is None else (last.seq, last.entry_hash),
        recomputed=recomputed,
        audits=tuple(audits),
    )


def verify_database(url: str, pinned_key: bytes | None = None) -> tuple[Snapshot, VerifyResult]:
    """Open the registry at `url` read-only, snapshot it and verify it.

    Raises `RegistryUnavailable` (one line) when the database cannot be read.
    """
    engine = open_readonly(url)
    try:
        snapshot = load_snapshot(engine, url)
    finally:
        engine.dispose()
    return snapshot, verify(snapshot, pinned_key)


def _chain_key(entries: Sequence[ChainEntry]) -> tuple[bytes | None, list[Finding]]:
    """The key `chain_started` (entry 1) names, and findings about a missing or bad one."""
    findings = [
        Finding(
            Check.CHAIN,
            name(EVENTS, e.seq),
            "action",
            "chain_started only as entry 1",
            "chain_started",
        )
        for e in entries
        if e.seq != 1 and isinstance(e.row, EventRow) and e.row.action == "chain_started"
    ]
    first = entries[0] if entries and entries[0].seq == 1 else None
    if first is None or first.row is None:
        return None, findings  # an empty chain, or a missing first entry (check 1 says so)
    if not isinstance(first.row, EventRow) or first.row.action != "chain_started":
        found = first.row.action if isinstance(first.row, EventRow) else f"a {first.table} entry"
        findings.append(
            Finding(Check.CHAIN, name(first.table, 1), "action", "chain_started", repr(found))
        )
        return None, findings
    try:
        key = bytes.fromhex(json.loads(first.row.details)["coordinator_key"])
    except (TypeError, ValueError, KeyError):
        key = b""
    if len(key) != 32:
        findings.append(
            Finding(
                Check.CHAIN,
                name(EVENTS, 1),
                "details",
                '{"coordinator_key": 64 hex digits}',
                repr(first.row.details),
            )
        )
        return None, findings
    return key, findings


def _coordinator_key(
    entries: Sequence[ChainEntry], pinned: bytes | None
) -> tuple[bytes | None, KeySource, list[Finding]]:
    chain_key, findings = _chain_key(entries)
    if pinned is not None:
        if chain_key is not None and chain_key != pinned:
            findings.append(
                Finding(
                    Check.CHAIN,
                    name(EVENTS, 1),
                    "details",
                    f"coordinator_key {fingerprint(pinned)} (pinned)",
                    f"coordinator_key {fingerprint(chain_key)}",
                )
            )
        return pinned, KeySource.PINNED, findings
    if chain_key is not None:
        return chain_key, KeySource.CHAIN, findings
    if entries and not findings:
        findings.append(
            Finding(
                Check.CHAIN,
                name(EVENTS, 1),
                "details",
                "the coordinator's key, to check countersignatures against",
                "no chain_started entry",
            )
        )
    return None, KeySource.NONE, findings
