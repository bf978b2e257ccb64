"""Fuzz: the plain-mode update codec, the ledger codec and the typed message-field readers.

Each either returns or raises its documented error (`InvalidPayload`, `LedgerCodecError`,
`MessageFieldError`); signature checks over hostile bytes return False, never raise.
"""

from __future__ import annotations

import contextlib

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fuzzing import FUZZ, hostile_values, random_or_mutated
from hypothesis import given
from hypothesis import strategies as st

from fedseal.contract import ledger_codec
from fedseal.contract.limits import MessageTooLarge, check_size, record_size
from fedseal.contract.message_fields import (
    MessageFieldError,
    field_bytes,
    field_bytes_list,
    field_int,
    field_json,
    field_str,
    field_str_list,
)
from fedseal.contract.update_codec import (
    InvalidPayload,
    decode_aggregate,
    decode_update,
    encode_aggregate,
)

AGGREGATE = encode_aggregate(np.linspace(-1, 1, 16, dtype=np.float32), 42)
KEY = Ed25519PrivateKey.generate()


@FUZZ
@given(raw=random_or_mutated(AGGREGATE, max_random=96), size=st.sampled_from((0, 1, 16, 2**40)))
def test_update_codec(raw, size):
    for decode in (decode_update, decode_aggregate):
        with contextlib.suppress(InvalidPayload):
            decode(raw, size)


json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@FUZZ
@given(fields=st.dictionaries(st.text(max_size=20), json_like, max_size=16), data=st.data())
def test_ledger_codec(fields, data):
    with contextlib.suppress(ledger_codec.LedgerCodecError):
        ledger_codec.site_statement(fields)
    public = data.draw(
        st.one_of(st.binary(max_size=40), st.just(KEY.public_key().public_bytes_raw()))
    )
    signature = data.draw(st.binary(max_size=80))
    assert ledger_codec.verify_statement(public, fields, signature) is False
    digest = data.draw(st.one_of(st.text(max_size=70), st.just("ab" * 32)))
    assert ledger_codec.verify_countersignature(public, digest, signature) is False


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(("k", "x")), hostile_values(), max_size=2))
def test_message_fields(fields):
    readers = (
        lambda f: field_int(f, "k", low=0, high=10),
        lambda f: field_str(f, "k", max_len=8),
        lambda f: field_bytes(f, "k", max_len=8),
        lambda f: field_bytes_list(f, "k", max_len=8, max_items=2),
        lambda f: field_json(f, "k"),
        lambda f: field_str_list(f, "k"),
    )
    for read in readers:
        try:
            read(fields)
        except MessageFieldError as exc:
            assert "'k'" in str(exc)
    try:
        check_size("advertise", record_size(fields), 64)
    except MessageTooLarge as exc:
        assert "exceeds the limit of 64 bytes" in str(exc)


def test_field_bytes_never_allocates_from_a_number():
    for value in (10**9, [10**9], 2**62):
        try:
            field_bytes({"k": value}, "k", max_len=1 << 31)
        except MessageFieldError:
            continue
        raise AssertionError("a number was turned into bytes")
