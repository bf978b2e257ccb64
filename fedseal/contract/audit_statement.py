"""A site's privacy audit statement: what its membership-inference attack on a run's global
model measured, signed with its identity key, as the ledger keeps it and auditors read it.

A site runs the attack on the global adapter it holds (`fl-client --site=NAME audit-privacy`):
its training records against its held-out ones. The statement names the run, the round whose
aggregate that adapter is and the adapter's digest, the attack, the records used, the attack's
AUC with its confidence interval and the ε lower bound it proves (at a confidence, for a δ). It
is signed over `ledger_codec.audit_statement`'s bytes, whose domain prefix no other signature of
the site's uses, so a signature made for a round's statement or a protocol message never
verifies as an audit statement and back.

The file a site hands to the coordinator (`SignedAuditStatement.to_json`) is the statement's
fields and the signature in hex, under a format word; `from_json` refuses anything else in one
line (`AuditStatementError`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedseal.contract import ledger_codec
from fedseal.contract.errors import ContractError

__all__ = [
    "AUDIT_STATEMENT_VERSION",
    "MAX_STATEMENT_FILE_BYTES",
    "STATEMENT_FILE_FORMAT",
    "AuditAttack",
    "AuditStatementError",
    "PrivacyAuditStatement",
    "SignedAuditStatement",
    "audit_time_text",
]

AUDIT_STATEMENT_VERSION = 1
"""The statement's `version` field; a statement of another version is refused."""

STATEMENT_FILE_FORMAT = "fedseal-privacy-audit-statement/1"
"""The `format` word of a signed statement's file."""

MAX_STATEMENT_FILE_BYTES = 16_384
"""A statement file is a few hundred bytes; anything much larger is not one."""

_NAME_LENGTH = 200
_FLOWER_RUN = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
_DIGEST = re.compile(r"^[0-9a-f]{16,128}$")


class AuditAttack(StrEnum):
    """The membership-inference attacks whose results a statement may carry."""

    LOSS_THRESHOLD = "loss-threshold"
    """A threshold on the model's loss on each record (`fedseal.privacy.membership`)."""


class AuditStatementError(ContractError):
    """A privacy audit statement, or its file, that cannot be used; one line for a person."""


def audit_time_text(moment: datetime) -> str:
    """When an audit was made, as the statement holds it: UTC, ISO 8601, to the second."""
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise AuditStatementError("the audit time must be a timezone-aware datetime")
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise AuditStatementError(f"{what} must be a non-blank name")
    if len(value) > _NAME_LENGTH:
        raise AuditStatementError(f"{what} must be at most {_NAME_LENGTH} characters")
    return value


def _count(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise AuditStatementError(f"{what} must be an integer of at least {minimum}")
    return value


def _real(value: Any, what: str, low: float, high: float, *, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuditStatementError(f"{what} must be a number")
    number = float(value)
    if not math.isfinite(number) or number < low or number > high or (open_low and number == low):
        side = "(" if open_low else "["
        raise AuditStatementError(f"{what} must be in {side}{low:g}, {high:g}]")
    return number


@dataclass(frozen=True)
class PrivacyAuditStatement:
    """One site's empirical privacy audit of one run's global model; validated on creation."""

    site: str
    flower_run_id: str
    applied_round: int
    adapter_digest: str
    attack: AuditAttack
    members: int
    non_members: int
    auc: float
    auc_low: float
    auc_high: float
    epsilon_lower: float
    """The ε every (ε, δ)-DP mechanism must at least have for the attack to do this well."""
    confidence: float
    delta: float
    audited_at: str
    """UTC, ISO 8601, to the second (`audit_time_text`)."""
    version: int = field(default=AUDIT_STATEMENT_VERSION)

    def __post_init__(self) -> None:
        if self.version != AUDIT_STATEMENT_VERSION or isinstance(self.version, bool):
            raise AuditStatementError(
                f"privacy audit statement version {self.version!r} is not "
                f"{AUDIT_STATEMENT_VERSION}, the one this fedseal reads"
            )
        _name(self.site, "site")
        if not isinstance(self.flower_run_id, str) or not _FLOWER_RUN.match(self.flower_run_id):
            raise AuditStatementError("flower_run_id must be 1 to 64 letters, digits, '-' or '_'")
        _count(self.applied_round, "applied_round", 1)
        if not isinstance(self.adapter_digest, str) or not _DIGEST.match(self.adapter_digest):
            raise AuditStatementError("adapter_digest must be 16 to 128 lowercase hex digits")
        try:
            object.__setattr__(self, "attack", AuditAttack(self.attack))
        except ValueError:
            known = ", ".join(attack.value for attack in AuditAttack)
            raise AuditStatementError(
                f"attack {self.attack!r} is not one this fedseal knows ({known})"
            ) from None
        _count(self.members, "members", 1)
        _count(self.non_members, "non_members", 1)
        for name in ("auc", "auc_low", "auc_high"):
            object.__setattr__(self, name, _real(getattr(self, name), name, 0.0, 1.0))
        if self.auc_low > self.auc_high:
            raise AuditStatementError("the AUC's interval must have auc_low <= auc_high")
        object.__setattr__(
            self, "epsilon_lower", _real(self.epsilon_lower, "epsilon_lower", 0.0, math.inf)
        )
        object.__setattr__(
            self, "confidence", _real(self.confidence, "confidence", 0.0, 1.0, open_low=True)
        )
        object.__setattr__(self, "delta", _real(self.delta, "delta", 0.0, 1.0, open_low=True))
        try:
            parsed = datetime.fromisoformat(self.audited_at)
            canonical = audit_time_text(parsed) == self.audited_at
        except (TypeError, ValueError):
            canonical = False
        if not canonical:
            raise AuditStatementError(
                "audited_at must be a UTC time in ISO 8601 to the second, e.g. "
                "2026-03-01T12:00:00+00:00"
            )

    def fields(self) -> dict[str, Any]:
        """The statement as `ledger_codec.AUDIT_STATEMENT_FIELDS`, the values a site signs."""
        values = {name: getattr(self, name) for name in ledger_codec.AUDIT_STATEMENT_FIELDS}
        values["attack"] = str(self.attack)
        return values

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> PrivacyAuditStatement:
        """The statement these fields (exactly `AUDIT_STATEMENT_FIELDS`) state."""
        if not isinstance(fields, Mapping):
            raise AuditStatementError("a privacy audit statement must be a JSON object")
        expected = set(ledger_codec.AUDIT_STATEMENT_FIELDS)
        if set(fields) != expected:
            missing = sorted(expected - set(fields))
            extra = sorted(str(key) for key in set(fields) - expected)
            raise AuditStatementError(
                f"privacy audit statement fields differ: missing {missing}, unexpected {extra}"
            )
        return cls(**{str(key): value for key, value in fields.items()})

    def signed_bytes(self) -> bytes:
        return ledger_codec.audit_statement(self.fields())

    def sign(self, key: Ed25519PrivateKey) -> SignedAuditStatement:
        """Signed with the site's identity key."""
        return SignedAuditStatement(self, ledger_codec.sign_audit_statement(key, self.fields()))

    @property
    def indistinguishable(self) -> bool:
        """The attack did no better than chance within its confidence interval."""
        return self.auc_low <= 0.5 <= self.auc_high


@dataclass(frozen=True)
class SignedAuditStatement:
    """A statement and the site's Ed25519 signature over its `signed_bytes()`."""

    statement: PrivacyAuditStatement
    signature: bytes

    def verify(self, identity_key: bytes) -> bool:
        """True when the holder of `identity_key` (raw Ed25519) signed this statement."""
        return ledger_codec.verify_audit_statement(
            identity_key, self.statement.fields(), self.signature
        )

    def to_json(self) -> str:
        document = {
            "format": STATEMENT_FILE_FORMAT,
            "statement": self.statement.fields(),
            "signature": self.signature.hex(),
        }
        return json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> SignedAuditStatement:
        """A statement file's content, or `AuditStatementError` saying what is wrong with it."""
        if len(text) > MAX_STATEMENT_FILE_BYTES:
            raise AuditStatementError(
                f"a privacy audit statement file is at most {MAX_STATEMENT_FILE_BYTES} bytes"
            )
        try:
            document = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            raise AuditStatementError("not a privacy audit statement file (not JSON)") from None
        if not isinstance(document, dict) or document.get("format") != STATEMENT_FILE_FORMAT:
            raise AuditStatementError(
                f"not a privacy audit statement file (its format is not {STATEMENT_FILE_FORMAT})"
            )
        if set(document) != {"format", "statement", "signature"}:
            raise AuditStatementError(
                "a privacy audit statement file holds exactly format, statement and signature"
            )
        signature = document["signature"]
        try:
            raw = bytes.fromhex(signature) if isinstance(signature, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != 64:
            raise AuditStatementError("the statement's signature must be 128 hex digits")
        return cls(PrivacyAuditStatement.from_fields(document["statement"]), raw)
