"""Shamir sharing of 32-byte secrets (mask keys, self-mask seeds), with checked reconstruction.

pycryptodome's `Shamir` works over GF(2^128) on 16-byte secrets, so a 32-byte secret is split
as two halves with the same share indices. Its `combine` returns a wrong secret SILENTLY when a
share is wrong, so every reconstruction here is checked against a commitment in the owner's signed
advert (a SHA-256 hash for a seed, the X25519 public key for a mask key) and a mismatch raises
`InvalidShare`: a wrong secret is never returned.

The random polynomial coefficients come from pycryptodome's own OS-seeded CSPRNG
(`Crypto.Random.get_random_bytes`); its API takes no randomness source.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

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


def _combine(shares: Iterable[Share], threshold: int) -> bytes:
    shares = list(shares)
    if len(shares) < threshold:
        raise InsufficientSurvivors(
            f"{len(shares)} shares given, {threshold} needed to reconstruct"
        )
    if len({s.index for s in shares}) != len(shares):
        raise InvalidShare("duplicate share index")
    low = Shamir.combine([(s.index, s.value[:_HALF]) for s in shares], ssss=False)
    high = Shamir.combine([(s.index, s.value[_HALF:]) for s in shares], ssss=False)
    return low + high


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
