"""Keys, signatures and sealed boxes, built only from `cryptography` primitives.

* Ed25519 identity keys sign every protocol message. The signed bytes bind run, round, stage and
  sender, so a valid message cannot be replayed into another round or stage or passed off as
  another site's.
* X25519 + HKDF-SHA256 give the pairwise mask seeds of SecAgg.
* A sealed box (ephemeral X25519, HKDF-SHA256, ChaCha20-Poly1305) carries a secret to one recipient
  through the untrusted coordinator; its associated data binds run and recipient, so it cannot be
  redirected to another site or run.

Every authentication failure raises the same `InvalidMessage`.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._wire import frame, text
from .errors import InvalidMessage
from .prg import SEED_BYTES, RandBytes

__all__ = [
    "KEY_BYTES",
    "SIGNATURE_BYTES",
    "generate_agreement_key",
    "generate_identity_key",
    "load_agreement_private",
    "load_agreement_public",
    "load_identity_public",
    "open_sealed",
    "pairwise_seed",
    "private_bytes",
    "public_bytes",
    "seal",
    "sealed_overhead",
    "sign_message",
    "verify_message",
]

KEY_BYTES = 32
SIGNATURE_BYTES = 64
_SEAL_VERSION = b"\x01"
_SEAL_NONCE = bytes(12)  # every sealing key is fresh (ephemeral X25519), so a fixed nonce is safe

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw


def generate_identity_key(randbytes: RandBytes) -> Ed25519PrivateKey:
    """A site's long-term signing key, from 32 bytes of `randbytes`."""
    return Ed25519PrivateKey.from_private_bytes(_take(randbytes, KEY_BYTES))


def generate_agreement_key(randbytes: RandBytes) -> X25519PrivateKey:
    """An X25519 key (long-term sealing key, or per-round mask / share key)."""
    return X25519PrivateKey.from_private_bytes(_take(randbytes, KEY_BYTES))


def public_bytes(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    """Raw 32-byte public key."""
    return key.public_key().public_bytes(_RAW, _RAW_PUB)


def private_bytes(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    """Raw 32-byte private key (for Shamir sharing a mask key, or for the site's own key store)."""
    return key.private_bytes(_RAW, _RAW_PRIV, serialization.NoEncryption())


def load_identity_public(data: bytes) -> Ed25519PublicKey:
    """Parse a raw Ed25519 public key; malformed bytes raise `InvalidMessage`."""
    try:
        return Ed25519PublicKey.from_public_bytes(bytes(data))
    except (ValueError, TypeError):
        raise InvalidMessage() from None


@lru_cache(maxsize=4096)
def _identity_public(data: bytes) -> Ed25519PublicKey:
    """`load_identity_public`, once per key: a directory's keys verify every message of a run
    (an immutable public key object, keyed by its own bytes; bounded)."""
    return load_identity_public(data)


def load_agreement_public(data: bytes) -> X25519PublicKey:
    """Parse a raw X25519 public key; malformed bytes raise `InvalidMessage`."""
    try:
        return X25519PublicKey.from_public_bytes(bytes(data))
    except (ValueError, TypeError):
        raise InvalidMessage() from None


def load_agreement_private(data: bytes) -> X25519PrivateKey:
    """Parse a raw X25519 private key (e.g. one reconstructed from Shamir shares)."""
    if not isinstance(data, bytes) or len(data) != KEY_BYTES:
        raise ValueError(f"an X25519 private key is {KEY_BYTES} bytes")
    return X25519PrivateKey.from_private_bytes(data)


def _take(randbytes: RandBytes, n: int) -> bytes:
    out = randbytes(n)
    if not isinstance(out, bytes) or len(out) != n:
        raise ValueError(f"randbytes must return {n} bytes")
    return out


def _exchange(private: X25519PrivateKey, peer: X25519PublicKey | bytes) -> bytes:
    peer_key = peer if isinstance(peer, X25519PublicKey) else load_agreement_public(peer)
    try:
        return private.exchange(peer_key)
    except ValueError:  # low-order point: all-zero shared secret
        raise InvalidMessage() from None


def pairwise_seed(
    own: X25519PrivateKey,
    peer_public: X25519PublicKey | bytes,
    *,
    own_id: str,
    peer_id: str,
    run_id: str,
    round_no: int,
) -> bytes:
    """The seed ``s_ij`` two sites share (ECDH + HKDF); both ends derive the same 32 bytes."""
    if own_id == peer_id:
        raise ValueError("a site has no pairwise seed with itself")
    low, high = sorted((own_id, peer_id))
    info = b"fedseal/pair-seed/v1" + frame(text(run_id), text(round_no), text(low), text(high))
    shared = _exchange(own, peer_public)
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(shared)


def _signed_bytes(run_id: str, round_no: int, stage: str, sender: str, payload: bytes) -> bytes:
    digest = hashlib.sha256(payload).digest()
    return b"fedseal/sig/v1" + frame(
        text(run_id), text(round_no), text(stage), text(sender), digest
    )


def sign_message(
    identity_key: Ed25519PrivateKey,
    *,
    run_id: str,
    round_no: int,
    stage: str,
    sender: str,
    payload: bytes,
) -> bytes:
    """Ed25519 signature over (run, round, stage, sender, SHA-256 of the payload)."""
    if not isinstance(payload, bytes):
        raise TypeError("payload must be bytes")
    return identity_key.sign(_signed_bytes(run_id, round_no, stage, sender, payload))


def verify_message(
    public_key: Ed25519PublicKey | bytes,
    signature: bytes | None,
    *,
    run_id: str,
    round_no: int,
    stage: str,
    sender: str,
    payload: bytes,
) -> None:
    """None if `signature` is the sender's over exactly this binding, else `InvalidMessage`."""
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise InvalidMessage()
    if not isinstance(payload, bytes):
        raise InvalidMessage()
    if isinstance(public_key, Ed25519PublicKey):
        key = public_key
    elif isinstance(public_key, bytes):
        key = _identity_public(public_key)
    else:
        key = load_identity_public(public_key)
    try:
        key.verify(signature, _signed_bytes(run_id, round_no, stage, sender, payload))
    except InvalidSignature:
        raise InvalidMessage() from None


def _seal_key(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=ephemeral_public + recipient_public,
        info=b"fedseal/seal/v1",
    ).derive(shared)


def _seal_aad(run_id: str, recipient_id: str, context: bytes) -> bytes:
    return b"fedseal/seal/v1" + frame(text(run_id), text(recipient_id), context)


def seal(
    recipient_public: X25519PublicKey | bytes,
    plaintext: bytes,
    *,
    run_id: str,
    recipient_id: str,
    randbytes: RandBytes,
    context: bytes = b"",
) -> bytes:
    """Encrypt `plaintext` to one recipient; only its X25519 private key opens it.

    `context` is extra associated data (e.g. round, stage and sender) the opener must repeat.
    """
    if not isinstance(plaintext, bytes):
        raise TypeError("plaintext must be bytes")
    recipient = (
        recipient_public
        if isinstance(recipient_public, X25519PublicKey)
        else load_agreement_public(recipient_public)
    )
    ephemeral = generate_agreement_key(randbytes)
    eph_pub = public_bytes(ephemeral)
    rec_pub = recipient.public_bytes(_RAW, _RAW_PUB)
    key = _seal_key(_exchange(ephemeral, recipient), eph_pub, rec_pub)
    box = ChaCha20Poly1305(key).encrypt(
        _SEAL_NONCE, plaintext, _seal_aad(run_id, recipient_id, context)
    )
    return _SEAL_VERSION + eph_pub + box


def open_sealed(
    recipient_private: X25519PrivateKey,
    sealed: bytes,
    *,
    run_id: str,
    recipient_id: str,
    context: bytes = b"",
) -> bytes:
    """Decrypt a sealed box addressed to this recipient in this run, else `InvalidMessage`."""
    if not isinstance(sealed, bytes) or len(sealed) < 1 + KEY_BYTES + 16:
        raise InvalidMessage()
    if sealed[:1] != _SEAL_VERSION:
        raise InvalidMessage()
    eph_pub = sealed[1 : 1 + KEY_BYTES]
    rec_pub = public_bytes(recipient_private)
    key = _seal_key(_exchange(recipient_private, eph_pub), eph_pub, rec_pub)
    try:
        return ChaCha20Poly1305(key).decrypt(
            _SEAL_NONCE, sealed[1 + KEY_BYTES :], _seal_aad(run_id, recipient_id, context)
        )
    except InvalidTag:
        raise InvalidMessage() from None


def sealed_overhead() -> int:
    """Bytes a sealed box adds to its plaintext (version, ephemeral key, tag)."""
    return 1 + KEY_BYTES + 16
