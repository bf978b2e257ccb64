"""The privacy audit statement (fedseal.contract.audit_statement): its fields, its signed bytes
under their own domain prefix, and its file, with every malformed input one clear error."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedseal.contract import ledger_codec
from fedseal.contract.audit_statement import (
    STATEMENT_FILE_FORMAT,
    AuditAttack,
    AuditStatementError,
    PrivacyAuditStatement,
    SignedAuditStatement,
    audit_time_text,
)
from fedseal.privacy.membership import MembershipAudit, membership_audit

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def _public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def statement(**overrides: Any) -> PrivacyAuditStatement:
    values: dict[str, Any] = {
        "site": "hospital_a",
        "flower_run_id": "7001",
        "applied_round": 3,
        "adapter_digest": "ab" * 32,
        "attack": AuditAttack.LOSS_THRESHOLD,
        "members": 600,
        "non_members": 400,
        "auc": 0.512,
        "auc_low": 0.48,
        "auc_high": 0.545,
        "epsilon_lower": 0.0,
        "confidence": 0.95,
        "delta": 1e-5,
        "audited_at": "2026-03-01T12:00:00+00:00",
    }
    values.update(overrides)
    return PrivacyAuditStatement(**values)


def test_fields_are_exactly_the_signed_fields_and_round_trip() -> None:
    made = statement()
    fields = made.fields()
    assert tuple(fields) == ledger_codec.AUDIT_STATEMENT_FIELDS
    assert fields["version"] == 1 and fields["attack"] == "loss-threshold"
    assert PrivacyAuditStatement.from_fields(fields) == made
    assert made.signed_bytes().startswith(b"fedseal-privacy-audit-statement/v1\n")


def test_a_signed_statement_verifies_with_its_key_only() -> None:
    signed = statement().sign(KEY)
    assert signed.verify(_public(KEY))
    assert not signed.verify(_public(OTHER))
    assert not signed.verify(b"short")
    altered = dataclasses.replace(signed.statement, epsilon_lower=0.5)
    assert not SignedAuditStatement(altered, signed.signature).verify(_public(KEY))


def test_no_other_statement_kinds_signature_is_accepted() -> None:
    """The round statement and the audit statement sign under different prefixes: the same
    JSON signed as one never verifies as the other."""
    fields = statement().fields()
    as_round = KEY.sign(b"fedseal-ledger-statement/v1\n" + ledger_codec.canonical_json(fields))
    assert not ledger_codec.verify_audit_statement(_public(KEY), fields, as_round)
    assert not SignedAuditStatement(statement(), as_round).verify(_public(KEY))
    bare = KEY.sign(ledger_codec.canonical_json(fields))
    assert not ledger_codec.verify_audit_statement(_public(KEY), fields, bare)
    audit_signature = ledger_codec.sign_audit_statement(KEY, fields)
    assert ledger_codec.verify_audit_statement(_public(KEY), fields, audit_signature)
    assert not ledger_codec.verify_statement(_public(KEY), fields, audit_signature)


def test_a_round_statement_signature_is_no_audit_signature() -> None:
    round_fields = dict.fromkeys(ledger_codec.STATEMENT_FIELDS, 1)
    signature = ledger_codec.sign_statement(KEY, round_fields)
    assert ledger_codec.verify_statement(_public(KEY), round_fields, signature)
    assert not SignedAuditStatement(statement(), signature).verify(_public(KEY))


def test_the_file_round_trips() -> None:
    signed = statement().sign(KEY)
    text = signed.to_json()
    assert json.loads(text)["format"] == STATEMENT_FILE_FORMAT
    again = SignedAuditStatement.from_json(text)
    assert again == signed and again.verify(_public(KEY))
    assert SignedAuditStatement.from_json(text.encode()) == signed


def _document(**changes: Any) -> str:
    document = json.loads(statement().sign(KEY).to_json())
    for key, value in changes.items():
        if key in document:
            document[key] = value
        else:
            document["statement"][key] = value
    return json.dumps(document)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "its format is not"),
        ('{"format": "fedseal-site-run/1"}', "its format is not"),
        (_document(signature="zz"), "128 hex digits"),
        (_document(signature="ab" * 10), "128 hex digits"),
        (_document(signature=7), "128 hex digits"),
        (_document(statement=[1]), "must be a JSON object"),
        (_document(version=2), "version 2 is not 1"),
        (_document(attack="shadow-models"), "attack 'shadow-models' is not one"),
        (_document(auc=1.5), "auc must be in [0, 1]"),
        (_document(auc_low=0.9), "auc_low <= auc_high"),
        (_document(members=0), "members must be an integer of at least 1"),
        (_document(members=True), "members must be an integer"),
        (_document(applied_round="3"), "applied_round must be an integer"),
        (_document(delta=0.0), "delta must be in (0, 1]"),
        (_document(epsilon_lower=-1.0), "epsilon_lower must be in [0, inf]"),
        (_document(flower_run_id="../x"), "flower_run_id must be"),
        (_document(site=" a"), "site must be a non-blank name"),
        (_document(adapter_digest="XYZ"), "adapter_digest must be"),
        (_document(audited_at="yesterday"), "audited_at must be a UTC time"),
        (_document(audited_at="2026-03-01T13:00:00+01:00"), "audited_at must be a UTC time"),
        ("x" * 20_000, "at most 16384 bytes"),
    ],
)
def test_a_bad_file_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(AuditStatementError) as raised:
        SignedAuditStatement.from_json(text)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_unknown_and_missing_fields_are_named() -> None:
    fields = statement().fields()
    fields["extra"] = 1
    del fields["auc"]
    with pytest.raises(AuditStatementError, match=r"missing \['auc'\], unexpected \['extra'\]"):
        PrivacyAuditStatement.from_fields(fields)


def test_audit_time_text_is_utc_to_the_second() -> None:
    moment = datetime(2026, 3, 1, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert audit_time_text(moment) == "2026-03-01T12:00:00+00:00"
    assert audit_time_text(datetime(2026, 3, 1, tzinfo=UTC)) == "2026-03-01T00:00:00+00:00"
    with pytest.raises(AuditStatementError):
        audit_time_text(datetime(2026, 3, 1))  # naive


def test_every_attack_privacy_names_is_a_contract_word() -> None:
    """`fedseal.privacy` imports no contract, so its attack's name is held equal here."""
    rng = np.random.default_rng(0)
    result = membership_audit(rng.normal(size=20), rng.normal(size=20), delta=1e-5, resamples=10)
    assert AuditAttack(result.attack) is AuditAttack.LOSS_THRESHOLD
    default = next(f for f in dataclasses.fields(MembershipAudit) if f.name == "attack")
    assert default.type in ("str", str)
