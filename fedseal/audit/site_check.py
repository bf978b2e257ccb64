"""Checks 2 and 6: whose key signed each statement, and whether the sites table agrees.

Which key may sign for a site is decided by the chain alone, in order: a `site_enrolled` event
makes its identity key valid for the entries after it, until the next `site_enrolled` (re-key)
or `site_revoked` event of that site. The `sites` table is not chained, so it is never used to
find a key, only checked against the chain (check 6): a key swapped there would otherwise let a
forger's statements through the coordinator's own check.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fedseal.contract import ledger_codec
from fedseal.contract.site_identity import SiteKeyError, SitePublicKeys

from .entries import EVENTS, PRIVACY, ChainEntry, content_of, name
from .findings import Check, Finding
from .keys import fingerprint
from .snapshot import EventRow, PrivacyRow, Snapshot

__all__ = [
    "PRIVACY_AUDIT",
    "SiteKeyState",
    "check_site_keys",
    "check_site_signatures",
    "key_states_before",
    "signature_problem",
]

PRIVACY_AUDIT = "privacy_audit"
"""The event action of a site's privacy audit statement (`audit_check` checks it)."""


@dataclass(frozen=True, slots=True)
class SiteKeyState:
    """A site's keys as the chain says at some point: enrolled (since which event) or revoked."""

    identity: bytes | None
    sealing: bytes | None
    enrolled_at: int | None
    revoked_at: int | None


def _key_fields(event: EventRow) -> tuple[bytes, bytes] | None:
    try:
        details = json.loads(event.details)
        identity = bytes.fromhex(details["identity_key"])
        sealing = bytes.fromhex(details["sealing_key"])
    except (TypeError, ValueError, KeyError):
        return None
    if len(identity) != 32 or len(sealing) != 32:
        return None
    return identity, sealing


def _walk(
    entries: Sequence[ChainEntry],
) -> tuple[dict[int, SiteKeyState | None], dict[str, SiteKeyState], list[Finding]]:
    """Each privacy entry's and privacy audit event's site key state just before it, the final
    states, and bad events."""
    states: dict[str, SiteKeyState] = {}
    before: dict[int, SiteKeyState | None] = {}
    findings: list[Finding] = []
    for entry in entries:
        row = entry.row
        if isinstance(row, PrivacyRow) and entry.table == PRIVACY:
            before[entry.seq] = states.get(row.site) if row.site is not None else None
            continue
        if isinstance(row, EventRow) and row.action == PRIVACY_AUDIT:
            before[entry.seq] = states.get(row.site) if isinstance(row.site, str) else None
            continue
        if not isinstance(row, EventRow) or row.action not in ("site_enrolled", "site_revoked"):
            continue
        here = name(EVENTS, entry.seq)
        if not isinstance(row.site, str):
            findings.append(
                Finding(Check.SITE_SIGNATURES, here, "site", "the site's name", repr(row.site))
            )
            continue
        if row.action == "site_revoked":
            previous = states.get(row.site)
            states[row.site] = SiteKeyState(
                None, None, previous.enrolled_at if previous else None, entry.seq
            )
            continue
        keys = _key_fields(row)
        if keys is None:
            findings.append(
                Finding(
                    Check.SITE_SIGNATURES,
                    here,
                    "details",
                    '{"identity_key": 64 hex digits, "sealing_key": 64 hex digits}',
                    _clip(row.details),
                )
            )
            continue
        states[row.site] = SiteKeyState(keys[0], keys[1], entry.seq, None)
    return before, states, findings


def _clip(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def key_states_before(entries: Sequence[ChainEntry]) -> dict[int, SiteKeyState | None]:
    """The key state of the entry's site just before each privacy entry and privacy audit
    event, by seq, as the chain's enrolments and revocations say."""
    return _walk(entries)[0]


def check_site_signatures(entries: Sequence[ChainEntry]) -> list[Finding]:
    """Check 2: every privacy entry is signed by the key its site held at that point."""
    before, _states, findings = _walk(entries)
    for entry in entries:
        row = entry.row
        if entry.table != PRIVACY or not isinstance(row, PrivacyRow):
            continue
        here = name(PRIVACY, entry.seq)
        if row.site is None:
            findings.append(
                Finding(
                    Check.SITE_SIGNATURES, here, "site_id", "an existing site", repr(row.site_id)
                )
            )
            continue
        problem = _signature_problem(row, before.get(entry.seq))
        if problem is not None:
            findings.append(Finding(Check.SITE_SIGNATURES, here, "site_signature", *problem))
    return findings


def signature_problem(
    site: str, state: SiteKeyState | None, verifies: Callable[[bytes], bool]
) -> tuple[str, str] | None:
    """What was expected and found when an entry of `site` is not signed by the key the site
    held at that point (`state`); `verifies` says whether a key verifies the entry's statement."""
    expected = f"a signature by site {site}'s enrolled identity key"
    if state is None:
        return expected, f"an entry of site {site}, which no site_enrolled event enrolled before it"
    if state.identity is None or state.revoked_at is not None:
        return expected, (
            f"an entry of site {site} after its revocation ({name(EVENTS, state.revoked_at)})"
        )
    if not verifies(state.identity):
        return (
            f"{expected} (key {fingerprint(state.identity)[:19]}, "
            f"{name(EVENTS, state.enrolled_at)}) over the entry's statement",
            "a signature that does not verify",
        )
    return None


def _signature_problem(row: PrivacyRow, state: SiteKeyState | None) -> tuple[str, str] | None:
    """What was expected and found when the entry is not signed by its site's valid key."""
    return signature_problem(
        str(row.site), state, lambda identity: _statement_verifies(row, identity)
    )


_NOT_SIGNED = {"created_at": datetime(2000, 1, 1, tzinfo=UTC), "site_signature": None}
"""Content fields outside the site's statement, neutralised so that a broken one (a timestamp
that does not parse) is reported once, by check 1, and not as a bad site signature too."""


def _statement_verifies(row: PrivacyRow, identity: bytes) -> bool:
    """The statement is the entry's content restricted to `STATEMENT_FIELDS`: the same values,
    converted by the same function the registry hashes with."""
    if not isinstance(row.site_signature, bytes):
        return False
    try:
        content = content_of(PRIVACY, dataclasses.replace(row, **_NOT_SIGNED))
        fields = {field: content[field] for field in ledger_codec.STATEMENT_FIELDS}
        return ledger_codec.verify_statement(identity, fields, row.site_signature)
    except (ValueError, TypeError, KeyError):
        return False


def check_site_keys(snapshot: Snapshot, entries: Sequence[ChainEntry]) -> list[Finding]:
    """Check 6: each active site's key in `sites` is the one its latest enrolment names."""
    _before, states, _findings = _walk(entries)
    findings = []
    for site in snapshot.sites:
        here = name("sites", site.id)
        state = states.get(site.name)
        if site.status == "active" and state is not None and state.revoked_at is not None:
            findings.append(
                Finding(
                    Check.SITE_KEYS,
                    here,
                    "status",
                    f"revoked ({name(EVENTS, state.revoked_at)})",
                    repr(site.status),
                )
            )
            continue
        if site.status != "active" or site.public_key is None:
            continue
        if state is None or state.identity is None or state.sealing is None:
            findings.append(
                Finding(
                    Check.SITE_KEYS,
                    here,
                    "public_key",
                    f"the keys of a site_enrolled event of {site.name} in the chain",
                    "a key the chain never enrolled",
                )
            )
            continue
        try:
            keys = SitePublicKeys.from_bundle(str(site.name), bytes(site.public_key))
            table_keys: tuple[bytes, bytes] | None = (keys.identity, keys.sealing)
        except (SiteKeyError, TypeError):
            table_keys = None
        if table_keys == (state.identity, state.sealing):
            continue
        enrolled = name(EVENTS, state.enrolled_at)
        if table_keys is not None and table_keys[0] == state.identity:
            expected = f"sealing key {state.sealing.hex()[:16]}… as enrolled by {enrolled}"
            found = f"sealing key {table_keys[1].hex()[:16]}…"
        else:
            expected = f"identity key {fingerprint(state.identity)[:19]} as enrolled by {enrolled}"
            found = (
                "a malformed key bundle"
                if table_keys is None
                else f"identity key {fingerprint(table_keys[0])[:19]}"
            )
        findings.append(Finding(Check.SITE_KEYS, here, "public_key", expected, found))
    return findings
