"""The bytes that sites sign, the coordinator chains and auditors recompute: one definition.

Four things are encoded here, each with its own domain-separation prefix so a signature made for
one can never be replayed as another:

- a site's **statement** for one round (`site_statement`): what the site says it spent of its
  privacy budget and which update it sent; signed with the site's Ed25519 identity key;
- a site's **privacy audit statement** (`audit_statement`): the result of a membership-inference
  attack it ran on a run's global model with its own records; signed with the same key, under
  its own prefix (`fedseal.contract.audit_statement` is its typed form);
- a **chain entry** (`entry_hash`): any ledger or events row, as the canonical JSON of its
  content, its position and the previous entry's hash, hashed with SHA-256;
- the coordinator's **countersignature** (`countersign_payload`) over an entry's hash.

Canonical JSON: sorted keys, no whitespace, UTF-8, no NaN or infinity. Floats are written with
Python's shortest round-trip form, which SQLite and PostgreSQL (`double precision`) read back
exactly, so an auditor recomputes the same bytes from the database. This module imports nothing
of fedseal's and does no I/O.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "AUDIT_STATEMENT_FIELDS",
    "GENESIS_HASH",
    "STATEMENT_FIELDS",
    "LedgerCodecError",
    "audit_statement",
    "canonical_json",
    "countersign",
    "countersign_payload",
    "entry_hash",
    "sign_audit_statement",
    "sign_statement",
    "site_statement",
    "update_digest",
    "verify_audit_statement",
    "verify_countersignature",
    "verify_statement",
]

GENESIS_HASH = "0" * 64
"""The `prev_hash` of the first entry of a chain."""

_STATEMENT_PREFIX = b"fedseal-ledger-statement/v1\n"
_AUDIT_STATEMENT_PREFIX = b"fedseal-privacy-audit-statement/v1\n"
_ENTRY_PREFIX = b"fedseal-chain-entry/v1\n"
_COUNTERSIGN_PREFIX = b"fedseal-chain-countersign/v1\n"

STATEMENT_FIELDS = (
    "site",
    "flower_run_id",
    "round_number",
    "status",
    "noise_multiplier",
    "sample_rate",
    "steps",
    "max_grad_norm",
    "delta",
    "accountant",
    "epsilon_round",
    "epsilon_cumulative",
    "budget",
    "update_digest",
)
"""What a site signs for a round: who, which run and round, the DP mechanism, ε this round and
cumulative, the budget, and the SHA-256 of the update it sent ("" when it sent none)."""

AUDIT_STATEMENT_FIELDS = (
    "version",
    "site",
    "flower_run_id",
    "applied_round",
    "adapter_digest",
    "attack",
    "members",
    "non_members",
    "auc",
    "auc_low",
    "auc_high",
    "epsilon_lower",
    "confidence",
    "delta",
    "audited_at",
)
"""What a site signs for an empirical privacy audit: the statement's version, who, which run and
which of its global models (the round whose aggregate it held and that adapter's digest), the
attack, how many member and non-member records it used, the attack's AUC with its interval, the
ε lower bound it proves at `confidence` for `delta`, and when (UTC, ISO 8601)."""


class LedgerCodecError(ValueError):
    """A value that has no canonical encoding (NaN, infinity, an unknown type or field).

    Not a `ContractError`: this module imports nothing of fedseal, so that an auditor can check
    the ledger format from this one file (docs/ledger-format.md)."""


def _check(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise LedgerCodecError(f"{where} is not finite")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise LedgerCodecError(f"{where} has a non-string key")
            _check(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check(item, f"{where}[{index}]")
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise LedgerCodecError(f"{where} has no canonical encoding ({type(value).__name__})")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, compact separators, UTF-8; refuses NaN, infinity and non-JSON types."""
    _check(value, "value")
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def update_digest(payload: bytes) -> str:
    """SHA-256 (hex) of the update bytes a site sent: what its statement commits to."""
    return hashlib.sha256(payload).hexdigest()


def site_statement(fields: Mapping[str, Any]) -> bytes:
    """The bytes a site signs for one round; `fields` must hold exactly `STATEMENT_FIELDS`."""
    _exact(fields, STATEMENT_FIELDS, "statement")
    return _STATEMENT_PREFIX + canonical_json(dict(fields))


def sign_statement(key: Ed25519PrivateKey, fields: Mapping[str, Any]) -> bytes:
    return key.sign(site_statement(fields))


def verify_statement(public_key: bytes, fields: Mapping[str, Any], signature: bytes) -> bool:
    """True when `signature` is the holder of `public_key`'s signature over these fields."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, site_statement(fields))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _exact(fields: Mapping[str, Any], expected: tuple[str, ...], what: str) -> None:
    if set(fields) != set(expected):
        missing = sorted(set(expected) - set(fields))
        extra = sorted(set(fields) - set(expected))
        raise LedgerCodecError(f"{what} fields differ: missing {missing}, unexpected {extra}")


def audit_statement(fields: Mapping[str, Any]) -> bytes:
    """The bytes a site signs for a privacy audit; `fields` must hold exactly
    `AUDIT_STATEMENT_FIELDS`. Its prefix differs from every other, so no signature made for a
    round's statement, a chain entry or a protocol message verifies as an audit statement."""
    _exact(fields, AUDIT_STATEMENT_FIELDS, "audit statement")
    return _AUDIT_STATEMENT_PREFIX + canonical_json(dict(fields))


def sign_audit_statement(key: Ed25519PrivateKey, fields: Mapping[str, Any]) -> bytes:
    return key.sign(audit_statement(fields))


def verify_audit_statement(public_key: bytes, fields: Mapping[str, Any], signature: bytes) -> bool:
    """True when `signature` is the holder of `public_key`'s signature over this audit."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, audit_statement(fields))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def entry_hash(table: str, seq: int, prev_hash: str, content: Mapping[str, Any]) -> str:
    """SHA-256 (hex) binding an entry's content to its table, position and predecessor."""
    document = {"table": table, "seq": seq, "prev_hash": prev_hash, "content": dict(content)}
    return hashlib.sha256(_ENTRY_PREFIX + canonical_json(document)).hexdigest()


def countersign_payload(entry_hash_hex: str) -> bytes:
    return _COUNTERSIGN_PREFIX + bytes.fromhex(entry_hash_hex)


def countersign(key: Ed25519PrivateKey, entry_hash_hex: str) -> bytes:
    return key.sign(countersign_payload(entry_hash_hex))


def verify_countersignature(public_key: bytes, entry_hash_hex: str, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            signature, countersign_payload(entry_hash_hex)
        )
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True
