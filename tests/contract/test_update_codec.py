"""Plain-mode update and aggregate byte formats."""

from __future__ import annotations

import numpy as np
import pytest

from fedseal.contract.update_codec import (
    InvalidPayload,
    decode_aggregate,
    decode_update,
    encode_aggregate,
    encode_update,
    payload_digest,
)


def test_update_round_trip() -> None:
    vector = np.linspace(-1, 1, 11, dtype=np.float32)
    assert np.array_equal(decode_update(encode_update(vector), 11), vector)


def test_aggregate_round_trip_carries_the_weight() -> None:
    vector = np.arange(5, dtype=np.float32)
    total, weight = decode_aggregate(encode_aggregate(vector, 1234), 5)
    assert weight == 1234 and np.array_equal(total, vector)


@pytest.mark.parametrize("payload", [b"", b"\x00" * 7, b"\x00" * 44])
def test_wrong_sizes_are_refused(payload: bytes) -> None:
    with pytest.raises(InvalidPayload):
        decode_update(payload, 10)
    with pytest.raises(InvalidPayload):
        decode_aggregate(payload, 10)


def test_non_finite_values_and_zero_weight_are_refused() -> None:
    with pytest.raises(InvalidPayload):
        encode_update(np.array([1.0, np.nan], dtype=np.float32))
    bad = np.array([1.0, np.inf], dtype=np.float32).tobytes()
    with pytest.raises(InvalidPayload):
        decode_update(bad, 2)
    with pytest.raises(InvalidPayload):
        encode_aggregate(np.zeros(2, dtype=np.float32), 0)
    with pytest.raises(InvalidPayload):
        decode_aggregate(b"\x00" * 8 + b"\x00" * 8, 2)


def test_digest_is_sha256_hex() -> None:
    assert payload_digest(b"abc").startswith("ba7816bf")
