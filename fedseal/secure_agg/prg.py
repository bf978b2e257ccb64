"""Masks and randomness expanded from 32-byte seeds with a ChaCha20 keystream.

A mask must be uniform in ``Z_t`` and reproducible by whoever later learns the seed (the aggregator
after Shamir reconstruction), so it is a deterministic function of the seed and of its context. The
context (purpose, run, round) goes into HKDF's info, so the same seed never yields the same stream
twice across purposes or rounds. Uniformity mod a prime ``t`` comes from rejection sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._wire import frame, text

__all__ = [
    "SEED_BYTES",
    "ChaChaRandom",
    "Purpose",
    "RandBytes",
    "derive_stream_key",
    "expand_mask",
    "uniform_floats",
    "uniform_mod",
]

#: A source of cryptographically secure random bytes: ``os.urandom``, or a seeded `ChaChaRandom`.
RandBytes = Callable[[int], bytes]

SEED_BYTES = 32
_INFO_PREFIX = b"fedseal/prg/v1"


class Purpose(StrEnum):
    """What a keystream is for; part of the key derivation (domain separation)."""

    SELF_MASK = "self-mask"
    PAIR_MASK = "pair-mask"
    RANDOM = "random"


def derive_stream_key(seed: bytes, *, purpose: Purpose, run_id: str, round_no: int) -> bytes:
    """HKDF-SHA256 of the seed, bound to purpose, run and round: the ChaCha20 key of one stream."""
    if not isinstance(seed, bytes):
        raise TypeError("seed must be bytes")
    if len(seed) != SEED_BYTES:
        raise ValueError(f"seed must be {SEED_BYTES} bytes; got {len(seed)}")
    info = _INFO_PREFIX + frame(text(Purpose(purpose)), text(run_id), text(round_no))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(seed)


class ChaChaRandom:
    """A deterministic CSPRNG: the ChaCha20 keystream of a 32-byte key, read sequentially.

    Callable as a `RandBytes`. Each key must drive one stream only; the nonce is fixed at zero
    because every key is fresh (derived per purpose, run and round, or drawn at random).
    """

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != 32:
            raise ValueError("ChaChaRandom needs a 32-byte key")
        self._enc = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()

    def __call__(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("n must be non-negative")
        return self._enc.update(bytes(n))


def uniform_mod(stream: RandBytes, length: int, modulus: int) -> np.ndarray:
    """`length` integers uniform in ``[0, modulus)`` (uint64), by rejection sampling the stream.

    Words below the largest multiple of `modulus` that fits in the word are kept and reduced; the
    rest are dropped, so no residue is favoured. Reads the stream in order: reproducible.
    """
    if not 2 <= modulus < 2**63:
        raise ValueError(f"modulus must be in [2, 2**63); got {modulus}")
    if length < 0:
        raise ValueError("length must be non-negative")
    wide = modulus >= 2**32
    word_bits = 64 if wide else 32
    dtype = np.dtype("<u8") if wide else np.dtype("<u4")
    limit = (2**word_bits // modulus) * modulus
    accept = limit / 2**word_bits
    out = np.empty(length, dtype=np.uint64)
    reduce_by = np.uint64(modulus) if wide else np.uint32(modulus)  # 32-bit remainders are fast
    filled = 0
    while filled < length:
        need = length - filled
        draw = int(need / accept * 1.001) + 16
        words = np.frombuffer(stream(draw * dtype.itemsize), dtype=dtype)
        if limit < 2**word_bits:
            words = words[words < limit]
        take = min(need, words.size)
        out[filled : filled + take] = np.remainder(words[:take], reduce_by)
        filled += take
    return out


def expand_mask(
    seed: bytes, length: int, modulus: int, *, purpose: Purpose, run_id: str, round_no: int
) -> np.ndarray:
    """The mask ``PRG(seed)``: `length` values uniform mod `modulus`, bound to its context."""
    key = derive_stream_key(seed, purpose=purpose, run_id=run_id, round_no=round_no)
    return uniform_mod(ChaChaRandom(key), length, modulus)


def uniform_floats(stream: RandBytes, length: int) -> np.ndarray:
    """`length` floats uniform in ``[0, 1)`` with 53 random bits each (for stochastic rounding)."""
    words = np.frombuffer(stream(8 * length), dtype="<u8")
    return (words >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)
