"""The coordinator's ledger key: the Ed25519 key that countersigns every ledger chain entry.

Kept as raw 32 bytes in ``<state_dir>/keys/ledger.key`` (folder 0700, file 0600), made once and
loaded afterwards; its public half (hex) is written beside it for auditors, who pin it with
``fl-audit verify --coordinator-key``. Give each registry one coordinator key: losing it does not
break the chain, but entries after a new key verify only against the new one.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedseal.registry.errors import RegistryError

__all__ = [
    "LEDGER_KEY_FILE",
    "LEDGER_PUBLIC_KEY_FILE",
    "LedgerKeyError",
    "create_ledger_key",
    "ledger_key_path",
    "load_ledger_key",
    "public_key_bytes",
]

LEDGER_KEY_FILE = "ledger.key"
LEDGER_PUBLIC_KEY_FILE = "ledger-public-key.hex"


class LedgerKeyError(RegistryError, ValueError):
    """A ledger key file that is missing, damaged or readable by other users."""


def ledger_key_path(state_dir: Path) -> Path:
    """Where the coordinator's ledger key lives under ``state_dir``."""
    return Path(state_dir) / "keys" / LEDGER_KEY_FILE


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key: what ``chain_started`` records and auditors pin."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def create_ledger_key(state_dir: Path) -> tuple[Ed25519PrivateKey, bool]:
    """Load the coordinator's ledger key, or make it if there is none; returns (key, newly_made).

    Two processes creating it at once end up with the same key: the file appears whole
    (written aside, then linked into place) and the loser loads the winner's.
    """
    path = ledger_key_path(state_dir)
    if path.exists():
        return load_ledger_key(state_dir), False
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    aside = folder / f".{LEDGER_KEY_FILE}.{secrets.token_hex(8)}"
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(aside, path)
    except FileExistsError:
        return load_ledger_key(state_dir), False
    finally:
        aside.unlink(missing_ok=True)
    (folder / LEDGER_PUBLIC_KEY_FILE).write_text(public_key_bytes(key).hex() + "\n")
    return key, True


def load_ledger_key(state_dir: Path) -> Ed25519PrivateKey:
    """The coordinator's ledger key, or :class:`LedgerKeyError` saying what is wrong."""
    path = ledger_key_path(state_dir)
    try:
        mode = os.stat(path).st_mode
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LedgerKeyError(f"no coordinator ledger key at {path}") from None
    if mode & 0o077:
        raise LedgerKeyError(f"{path} is readable by other users; make it 0600")
    if len(raw) != 32:
        raise LedgerKeyError(f"{path} is damaged: {len(raw)} bytes, not 32")
    return Ed25519PrivateKey.from_private_bytes(raw)
