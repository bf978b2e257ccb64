"""The site's long-term keys: an Ed25519 identity key and an X25519 sealing key.

Made once by `fl-client --site=NAME enroll` and kept in `<state_dir>/keys/` (folder 0700, files
0600). The public halves go to the operator, who enrols them in the registry; every protocol
message the site sends is signed with the identity key, and the federation's BFV secret key
reaches the site sealed to its sealing key. The private keys never leave the site.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedseal.contract.site_identity import SiteKeyError, SitePublicKeys

__all__ = ["SiteKeys", "create_site_keys", "load_site_keys"]

_IDENTITY_FILE = "identity.key"
_SEALING_FILE = "sealing.key"
PUBLIC_FILE = "site-public-keys.json"


@dataclass(frozen=True)
class SiteKeys:
    """A site's private keys (repr hides them)."""

    site: str
    identity: Ed25519PrivateKey
    sealing: X25519PrivateKey

    def __repr__(self) -> str:
        return f"SiteKeys(site={self.site!r}, <private>)"

    def public(self) -> SitePublicKeys:
        raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
        return SitePublicKeys(
            self.site,
            self.identity.public_key().public_bytes(*raw),
            self.sealing.public_key().public_bytes(*raw),
        )


def _key_dir(state_dir: Path) -> Path:
    return Path(state_dir) / "keys"


def _private_bytes(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def create_site_keys(site: str, state_dir: Path) -> tuple[SiteKeys, bool]:
    """Load the site's keys, or make them if there are none; returns (keys, newly_made)."""
    folder = _key_dir(state_dir)
    if (folder / _IDENTITY_FILE).exists() or (folder / _SEALING_FILE).exists():
        return load_site_keys(site, state_dir), False
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    keys = SiteKeys(site, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())
    _write_private(folder / _IDENTITY_FILE, _private_bytes(keys.identity))
    _write_private(folder / _SEALING_FILE, _private_bytes(keys.sealing))
    (folder / PUBLIC_FILE).write_text(keys.public().to_json(), encoding="utf-8")
    return keys, True


def load_site_keys(site: str, state_dir: Path) -> SiteKeys:
    """The site's keys, or SiteKeyError telling the user to enrol first."""
    folder = _key_dir(state_dir)
    try:
        identity = (folder / _IDENTITY_FILE).read_bytes()
        sealing = (folder / _SEALING_FILE).read_bytes()
    except FileNotFoundError:
        raise SiteKeyError(
            f"site {site} has no keys in {folder}; run `fl-client --site={site} enroll` first"
        ) from None
    if len(identity) != 32 or len(sealing) != 32:
        raise SiteKeyError(f"site keys in {folder} are damaged (wrong length)")
    for path in (folder / _IDENTITY_FILE, folder / _SEALING_FILE):
        if os.stat(path).st_mode & 0o077:
            raise SiteKeyError(f"{path} is readable by other users; make it 0600")
    return SiteKeys(
        site,
        Ed25519PrivateKey.from_private_bytes(identity),
        X25519PrivateKey.from_private_bytes(sealing),
    )
