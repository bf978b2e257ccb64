"""Shamir sharing of 32-byte secrets (mask keys, self-mask seeds), with checked reconstruction.

pycryptodome's `Shamir` works over GF(2^128) on 16-byte secrets, so a 32-byte secret is split
as two halves with the same share indices. Its `combine` returns a wrong secret SILENTLY when a
share is wrong, so every reconstruction here is checked against a commitment in the owner's signed
advert (a SHA-256 hash for a seed, the X25519 public key for a mask key) and a mismatch raises
`InvalidShare`: a wrong secret is never returned.

The random polynomial coefficients come from pycryptodome's own OS-seeded CSPRNG
(`Crypto.Random.get_random_bytes`); its API takes no randomness source.

Reconstruction is Lagrange interpolation at zero in pycryptodome's field (GF(2^128) modulo
``x^128 + x^7 + x^2 + x + 1``, a share value read as a big-endian integer whose lowest bit is the
constant term), the arithmetic `Shamir.combine` does, but with the coefficients of an index set
computed once (they depend only on the public indices; cached) and the field product done in
4-bit steps. pycryptodome's `combine` spends k^2 bit-serial products and k inversions per half;
here one index set costs k^2 small products and one inversion, and a secret 2k products. The
loops of the product run over the public operand (the coefficient) only. Tests check the result
against `Shamir.combine`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from Crypto.Protocol.SecretSharing import Shamir
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ._wire import frame
from .errors import InsufficientSurvivors, InvalidShare
from .keys import public_bytes

__all__ = [
    "SECRET_BYTES",
    "SHARE_BYTES",
    "Share",
    "reconstruct_agreement_key",
    "reconstruct_seed",
    "seed_commitment",
    "split_secret",
]

SECRET_BYTES = 32
_HALF = 16
SHARE_BYTES = 2 + SECRET_BYTES
MAX_SHARES = 65535


@dataclass(frozen=True)
class Share:
    """One holder's share: its index (1-based) and 32 bytes (two GF(2^128) points)."""

    index: int
    value: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.index, int) or not 1 <= self.index <= MAX_SHARES:
            raise InvalidShare("share index out of range")
        if not isinstance(self.value, bytes) or len(self.value) != SECRET_BYTES:
            raise InvalidShare("share value must be 32 bytes")

    def to_bytes(self) -> bytes:
        """2-byte big-endian index, then the 32-byte value."""
        return self.index.to_bytes(2, "big") + self.value

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Parse `to_bytes` output; anything else raises `InvalidShare`."""
        if not isinstance(data, bytes) or len(data) != SHARE_BYTES:
            raise InvalidShare("malformed share")
        return cls(int.from_bytes(data[:2], "big"), data[2:])


def split_secret(secret: bytes, *, n: int, k: int) -> list[Share]:
    """Split into `n` shares (indices 1..n), any `k` of which reconstruct the secret."""
    if not isinstance(secret, bytes) or len(secret) != SECRET_BYTES:
        raise ValueError(f"secret must be {SECRET_BYTES} bytes")
    if not 1 <= k <= n <= MAX_SHARES:
        raise ValueError(f"need 1 <= k <= n <= {MAX_SHARES}; got k={k}, n={n}")
    low = Shamir.split(k, n, secret[:_HALF], ssss=False)
    high = Shamir.split(k, n, secret[_HALF:], ssss=False)
    return [Share(i, a + b) for (i, a), (_, b) in zip(low, high, strict=True)]


#: The field's modulus without its x^128 term: x^7 + x^2 + x + 1 (pycryptodome's `_Element`).
_REDUCTION = 0x87
_FIELD_MASK = (1 << 128) - 1


def _reduce(product: int) -> int:
    """A carry-less product of two field elements (< 2^255) reduced modulo the field polynomial."""
    for _ in range(2):  # the first fold leaves at most 7 bits above x^127, the second none
        high = product >> 128
        product = (product & _FIELD_MASK) ^ high ^ (high << 1) ^ (high << 2) ^ (high << 7)
    return product


def _mul(public: int, other: int) -> int:
    """``public · other`` in the field. The loop runs over the nibbles of `public` only (an index
    or a Lagrange coefficient); `other` only fills a 16-entry table of its multiples."""
    t1, t2, t4, t8 = other, other << 1, other << 2, other << 3
    t3, t5, t6 = t1 ^ t2, t1 ^ t4, t2 ^ t4
    t7 = t3 ^ t4
    t9, t10, t11, t12, t13, t14, t15 = t1 ^ t8, t2 ^ t8, t3 ^ t8, t4 ^ t8, t5 ^ t8, t6 ^ t8, t7 ^ t8
    table = (0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13, t14, t15)
    acc = 0
    for shift in range(((public.bit_length() + 3) // 4) * 4 - 4, -1, -4):
        acc = (acc << 4) ^ table[(public >> shift) & 15]
    return _reduce(acc)


def _inverse(value: int) -> int:
    """Multiplicative inverse (extended Euclid over GF(2)[x]) of a public non-zero element."""
    if value == 0:  # distinct non-zero indices never give one; the loop below would not end
        raise ZeroDivisionError("zero has no inverse")
    u, v, g1, g2 = value, (1 << 128) | _REDUCTION, 1, 0
    while u != 1:
        shift = u.bit_length() - v.bit_length()
        if shift < 0:
            u, v, g1, g2, shift = v, u, g2, g1, -shift
        u ^= v << shift
        g1 ^= g2 << shift
    return g1


@lru_cache(maxsize=128)
def _lagrange_at_zero(indices: tuple[int, ...]) -> tuple[int, ...]:
    """Coefficients c_j with ``p(0) = Σ c_j · p(x_j)`` for the distinct non-zero `indices`:
    ``c_j = Π_{m≠j} x_m / (x_j + x_m)``, computed as ``Π x_m / (x_j · Π_{m≠j} (x_j + x_m))``
    with one inversion for all j (Montgomery's trick)."""
    numerator = 1
    for x in indices:
        numerator = _mul(x, numerator)
    denominators = []
    for j, x_j in enumerate(indices):
        d = x_j
        for m, x_m in enumerate(indices):
            if m != j:
                d = _mul(x_j ^ x_m, d)
        denominators.append(d)
    prefix = [1]
    for d in denominators:
        prefix.append(_mul(prefix[-1], d))
    running = _mul(numerator, _inverse(prefix[-1]))  # numerator / Π_j d_j
    out = [0] * len(indices)
    for j in range(len(indices) - 1, -1, -1):
        out[j] = _mul(running, prefix[j])  # numerator / d_j
        running = _mul(running, denominators[j])
    return tuple(out)


def _combine(shares: Iterable[Share], threshold: int) -> bytes:
    shares = list(shares)
    if len(shares) < threshold:
        raise InsufficientSurvivors(
            f"{len(shares)} shares given, {threshold} needed to reconstruct"
        )
    if len({s.index for s in shares}) != len(shares):
        raise InvalidShare("duplicate share index")
    coefficients = _lagrange_at_zero(tuple(s.index for s in shares))
    low = high = 0
    for c, share in zip(coefficients, shares, strict=True):
        low ^= _mul(c, int.from_bytes(share.value[:_HALF], "big"))
        high ^= _mul(c, int.from_bytes(share.value[_HALF:], "big"))
    return low.to_bytes(_HALF, "big") + high.to_bytes(_HALF, "big")


def seed_commitment(seed: bytes, *, context: bytes) -> bytes:
    """SHA-256 commitment to a self-mask seed, bound to its context (run, round, owner)."""
    return hashlib.sha256(b"fedseal/seed-commit/v1" + frame(context, seed)).digest()


def reconstruct_seed(
    shares: Iterable[Share], *, threshold: int, commitment: bytes, context: bytes
) -> bytes:
    """Reconstruct a seed and check it against its commitment, else `InvalidShare`."""
    secret = _combine(shares, threshold)
    if not hmac.compare_digest(seed_commitment(secret, context=context), commitment):
        raise InvalidShare("reconstructed seed does not match its commitment")
    return secret


def reconstruct_agreement_key(
    shares: Iterable[Share], *, threshold: int, public_key: bytes
) -> bytes:
    """Reconstruct an X25519 private key, checked against its public key, else `InvalidShare`."""
    secret = _combine(shares, threshold)
    if not hmac.compare_digest(
        public_bytes(X25519PrivateKey.from_private_bytes(secret)), public_key
    ):
        raise InvalidShare("reconstructed key does not match its public key")
    return secret
