"""The coordinator's public key as the auditor pins it, and the fingerprint people compare.

A chain can only be checked against the key that is meant to have signed it. The chain names its
own key (`chain_started`), which proves the entries are consistent with each other but not who
wrote them: whoever rewrites the whole chain rewrites that entry too. Pinning the key obtained out
of band (`--coordinator-key`) closes that gap, so the file formats an operator is likely to hand
over are all accepted: the raw 32 bytes, their hex, or a PEM/DER public key.
"""

from __future__ import annotations

import hashlib
import string
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedseal.audit.errors import AuditError

__all__ = ["KeyFileError", "fingerprint", "load_coordinator_key", "parse_public_key"]

_MAX_KEY_FILE = 64 * 1024
_RAW = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class KeyFileError(AuditError, ValueError):
    """A key file that is missing, unreadable or holds no Ed25519 public key."""


def fingerprint(public_key: bytes) -> str:
    """SHA-256 of the raw 32-byte public key, hex, in groups of four for reading aloud."""
    digest = hashlib.sha256(public_key).hexdigest()
    return ":".join(digest[i : i + 4] for i in range(0, len(digest), 4))


def parse_public_key(data: bytes) -> bytes:
    """The raw Ed25519 public key in `data` (raw, hex, PEM or DER), or `KeyFileError`."""
    stripped = data.strip()
    if len(data) == 32:
        return bytes(data)
    text = stripped.decode("ascii", errors="replace")
    if len(text) == 64 and all(c in string.hexdigits for c in text):
        return bytes.fromhex(text)
    try:
        if stripped.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(stripped)
        else:
            key = serialization.load_der_public_key(data)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(
            "holds no Ed25519 public key (expected 32 raw bytes, 64 hex digits, PEM or DER)"
        )
    return key.public_bytes(*_RAW)


def load_coordinator_key(path: Path) -> bytes:
    """The raw public key in the file at `path`; `KeyFileError` naming the path otherwise."""
    try:
        if path.stat().st_size > _MAX_KEY_FILE:
            raise KeyFileError(f"coordinator key file {path} is too large to be a public key")
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(
            f"cannot read coordinator key file {path}: {exc.strerror or exc}"
        ) from None
    try:
        return parse_public_key(data)
    except KeyFileError as exc:
        raise KeyFileError(f"coordinator key file {path} {exc}") from None
