"""Byte formats of a plain-mode update and aggregate (FedAvg in the clear).

An update is a site's weighted change `n_i · Δ_i` as little-endian float32; an aggregate carries
`Σ n_i` as an 8-byte little-endian integer followed by `Σ n_i · Δ_i` as float32. Sites divide the
sum by the weight themselves, which is the same contract the encrypted modes keep (the weight rides
inside the aggregate, so the coordinator never needs to know it in the clear there).
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np

from fedseal.contract.errors import ContractError

__all__ = [
    "InvalidPayload",
    "decode_aggregate",
    "decode_update",
    "encode_aggregate",
    "encode_update",
    "payload_digest",
]

_WEIGHT = struct.Struct("<Q")
_FLOAT = np.dtype("<f4")


class InvalidPayload(ContractError):
    """Bytes that are not a well-formed update or aggregate of the expected size."""


def encode_update(weighted_delta: np.ndarray) -> bytes:
    """`n_i · Δ_i` as float32 bytes."""
    vector = np.ascontiguousarray(weighted_delta, dtype=_FLOAT)
    if vector.ndim != 1 or not np.all(np.isfinite(vector)):
        raise InvalidPayload("an update must be a finite 1-D vector")
    return vector.tobytes()


def decode_update(payload: bytes, expected_size: int) -> np.ndarray:
    """Parse an update, refusing the wrong size or non-finite values before use."""
    if not isinstance(payload, bytes | bytearray) or len(payload) != expected_size * 4:
        raise InvalidPayload(f"an update must be {expected_size * 4} bytes")
    vector = np.frombuffer(payload, dtype=_FLOAT)
    if not np.all(np.isfinite(vector)):
        raise InvalidPayload("an update contains non-finite values")
    return vector


def encode_aggregate(weighted_sum: np.ndarray, total_weight: int) -> bytes:
    """`Σ n_i` and `Σ n_i · Δ_i` as one payload."""
    if total_weight <= 0:
        raise InvalidPayload("an aggregate needs a positive total weight")
    return _WEIGHT.pack(total_weight) + encode_update(weighted_sum)


def decode_aggregate(payload: bytes, expected_size: int) -> tuple[np.ndarray, int]:
    """Parse an aggregate into (weighted sum, total weight)."""
    if (
        not isinstance(payload, bytes | bytearray)
        or len(payload) != _WEIGHT.size + 4 * expected_size
    ):
        raise InvalidPayload(f"an aggregate must be {_WEIGHT.size + 4 * expected_size} bytes")
    (total_weight,) = _WEIGHT.unpack_from(payload)
    if total_weight <= 0:
        raise InvalidPayload("an aggregate's total weight must be positive")
    return decode_update(bytes(payload[_WEIGHT.size :]), expected_size), total_weight


def payload_digest(payload: bytes) -> str:
    """SHA-256 of a payload, as recorded in the registry."""
    return hashlib.sha256(payload).hexdigest()
