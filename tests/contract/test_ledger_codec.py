"""The ledger's byte encodings (fedseal.contract.ledger_codec): canonical JSON, statements,
entry hashes and countersignatures, with fixed vectors so the format cannot drift unnoticed."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedseal.contract import ledger_codec
from fedseal.contract.ledger_codec import (
    GENESIS_HASH,
    STATEMENT_FIELDS,
    LedgerCodecError,
    canonical_json,
    countersign,
    entry_hash,
    sign_statement,
    site_statement,
    verify_countersignature,
    verify_statement,
)

# RFC 8032 test 1: a fixed key, so signatures below are fixed too (Ed25519 is deterministic)
KEY = Ed25519PrivateKey.from_private_bytes(
    bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
)
PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def _fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "site": "hospital_a",
        "flower_run_id": "4242",
        "round_number": 2,
        "status": "charged",
        "noise_multiplier": 1.1,
        "sample_rate": 32 / 600,
        "steps": 20,
        "max_grad_norm": 1.0,
        "delta": 1e-5,
        "accountant": "rdp",
        "epsilon_round": 0.61,
        "epsilon_cumulative": 0.93,
        "budget": 3.0,
        "update_digest": "ab" * 32,
    }
    fields.update(overrides)
    return fields


def _public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# -- canonical JSON --------------------------------------------------------------------------


def test_canonical_json_is_sorted_compact_utf8() -> None:
    value = {"b": [1, 2.5, None, True], "a": {"z": "é", "y": 0.1 + 0.2}}
    assert canonical_json(value) == (
        '{"a":{"y":0.30000000000000004,"z":"é"},"b":[1,2.5,null,true]}'.encode()
    )


def test_canonical_json_does_not_depend_on_insertion_order() -> None:
    assert canonical_json({"x": 1, "y": 2}) == canonical_json({"y": 2, "x": 1})


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        {"a": float("inf")},
        [1.0, -float("inf")],
        {"nested": [{"deep": float("nan")}]},
        {1: "non-string key"},
        {"bytes": b"raw"},
        {"set": {1, 2}},
        object(),
    ],
    ids=["nan", "inf", "minus-inf", "nested-nan", "int-key", "bytes", "set", "object"],
)
def test_canonical_json_refuses_what_has_no_single_encoding(value: Any) -> None:
    with pytest.raises(LedgerCodecError):
        canonical_json(value)


def test_floats_round_trip_exactly() -> None:
    for number in (32 / 600, 1e-5, 0.1 + 0.2, 1.0642857142857143, 5e-324):
        assert float(canonical_json(number)) == number


# -- statements ------------------------------------------------------------------------------


def test_a_statement_is_the_prefix_and_the_canonical_fields() -> None:
    statement = site_statement(_fields())
    assert statement.startswith(b"fedseal-ledger-statement/v1\n")
    assert statement == b"fedseal-ledger-statement/v1\n" + canonical_json(_fields())


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"drop": "update_digest"}, "update_digest"),
        ({"add": "comment"}, "comment"),
    ],
)
def test_a_statement_needs_exactly_the_statement_fields(change: dict[str, str], named: str) -> None:
    fields = _fields()
    if "drop" in change:
        del fields[change["drop"]]
    else:
        fields[change["add"]] = "x"
    with pytest.raises(LedgerCodecError, match=named):
        site_statement(fields)


def test_statement_fields_are_the_documented_ones() -> None:
    assert set(STATEMENT_FIELDS) == set(_fields())
    assert len(STATEMENT_FIELDS) == len(set(STATEMENT_FIELDS))


def test_a_signed_statement_verifies_and_nothing_else_does() -> None:
    signature = sign_statement(KEY, _fields())
    assert len(signature) == 64
    assert verify_statement(PUBLIC, _fields(), signature)
    assert not verify_statement(PUBLIC, _fields(epsilon_cumulative=0.92), signature)
    assert not verify_statement(PUBLIC, _fields(round_number=3), signature)
    assert not verify_statement(PUBLIC, _fields(budget=3), signature)  # int is not 3.0
    assert not verify_statement(_public(OTHER), _fields(), signature)
    assert not verify_statement(PUBLIC, _fields(), signature[:-1] + bytes([signature[-1] ^ 1]))


@pytest.mark.parametrize(
    ("public", "signature"),
    [(b"short", bytes(64)), (PUBLIC, b""), (PUBLIC, bytes(10)), (b"", b"")],
)
def test_malformed_keys_and_signatures_just_do_not_verify(public: bytes, signature: bytes) -> None:
    assert verify_statement(public, _fields(), signature) is False
    assert verify_countersignature(public, GENESIS_HASH, signature) is False


def test_the_statement_signature_is_fixed() -> None:
    """Pins the statement format: a change to it changes this signature."""
    statement = (
        b"fedseal-ledger-statement/v1\n"
        b'{"accountant":"rdp","budget":3.0,"delta":1e-05,"epsilon_cumulative":0.93,'
        b'"epsilon_round":0.61,"flower_run_id":"4242","max_grad_norm":1.0,'
        b'"noise_multiplier":1.1,"round_number":2,"sample_rate":0.05333333333333334,'
        b'"site":"hospital_a","status":"charged","steps":20,"update_digest":"' + b"ab" * 32 + b'"}'
    )
    assert site_statement(_fields()) == statement
    assert sign_statement(KEY, _fields()).hex() == (
        "3c69efd9af37142ca0625a8d5de755754aa62397d012cacc095149856968193a"
        "f235703150bcd74541f907dd96f1a01ca618b13587e7f376c13633099c3bcc0b"
    )


# -- chain entries and countersignatures -----------------------------------------------------


def test_the_entry_hash_is_sha256_of_the_prefixed_document() -> None:
    content = {"action": "chain_started", "details": '{"coordinator_key":"00"}', "site": None}
    document = (
        b'fedseal-chain-entry/v1\n{"content":{"action":"chain_started",'
        b'"details":"{\\"coordinator_key\\":\\"00\\"}","site":null},'
        b'"prev_hash":"' + GENESIS_HASH.encode() + b'","seq":1,"table":"events"}'
    )
    assert entry_hash("events", 1, GENESIS_HASH, content) == hashlib.sha256(document).hexdigest()


def test_the_entry_hash_binds_table_position_predecessor_and_content() -> None:
    content = {"budget": 3.0}
    base = entry_hash("events", 5, "a" * 64, content)
    assert len(base) == 64 and base == base.lower()
    assert entry_hash("privacy_ledger", 5, "a" * 64, content) != base
    assert entry_hash("events", 6, "a" * 64, content) != base
    assert entry_hash("events", 5, "b" * 64, content) != base
    assert entry_hash("events", 5, "a" * 64, {"budget": 3.5}) != base
    assert entry_hash("events", 5, "a" * 64, {"budget": 3.0}) == base


def test_genesis_is_64_zeros() -> None:
    assert GENESIS_HASH == "0" * 64


def test_a_countersignature_verifies_for_its_hash_only() -> None:
    digest = entry_hash("events", 1, GENESIS_HASH, {"x": 1})
    signature = countersign(KEY, digest)
    assert verify_countersignature(PUBLIC, digest, signature)
    assert not verify_countersignature(PUBLIC, GENESIS_HASH, signature)
    assert not verify_countersignature(_public(OTHER), digest, signature)
    assert not verify_countersignature(PUBLIC, "not hex", signature)


def test_signatures_of_one_kind_are_not_accepted_as_the_other() -> None:
    """Domain separation: a statement signature is never a countersignature, or vice versa."""
    digest = entry_hash("events", 1, GENESIS_HASH, {"x": 1})
    countersignature = countersign(KEY, digest)
    statement_signature = sign_statement(KEY, _fields())
    raw = KEY.sign(bytes.fromhex(digest))  # a bare signature over the hash
    assert not verify_countersignature(PUBLIC, digest, raw)
    assert not verify_statement(PUBLIC, _fields(), countersignature)
    assert not verify_countersignature(PUBLIC, digest, statement_signature)


def test_update_digest_is_sha256_hex() -> None:
    assert ledger_codec.update_digest(b"") == hashlib.sha256(b"").hexdigest()
    assert ledger_codec.update_digest(b"update") == hashlib.sha256(b"update").hexdigest()


def test_the_codec_imports_nothing_of_fedseal() -> None:
    tree = ast.parse(Path(ledger_codec.__file__).read_text(encoding="utf-8"))
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not any(name.startswith("fedseal") for name in imported)
