"""A site's SuperNode authentication key: ECDSA P-384 in OpenSSH format.

A SuperLink started with ``--enable-supernode-auth`` lets a SuperNode in only when the public half
of the key it presents (``flower-supernode --auth-supernode-private-key PATH``) was registered by
the operator (``flwr supernode register PATH.pub``). Both the site (``fl-client enroll``) and the
operator's tools (``fl-coordinator site-auth-key``) make such keys, so this module belongs to
neither side.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedseal.contract.errors import ContractError

__all__ = ["NODE_AUTH_KEY", "NodeAuthKeyError", "make_node_auth_key", "public_key_path"]

NODE_AUTH_KEY = "node-auth"
"""The key's file name in a site's STATE/keys/ folder when its config names no other."""


class NodeAuthKeyError(ContractError):
    """A key file that cannot be made or used (the message is one line)."""


def public_key_path(private_path: Path) -> Path:
    """Where the public half of ``private_path`` lives: the same name with ``.pub`` added."""
    return private_path.with_name(private_path.name + ".pub")


def make_node_auth_key(path: Path) -> bool:
    """Make ``path`` (private, 0600) and ``path.pub``; True if made, False if a good pair was kept.

    Half a pair, or files that are not a matching P-384 pair, is an error: a key is never
    silently replaced, because the operator registered the old public half.
    """
    path = Path(path)
    public_path = public_key_path(path)
    present = [p for p in (path, public_path) if p.exists()]
    if len(present) == 2:
        check_node_auth_pair(path, public_path)
        return False
    if present:
        raise NodeAuthKeyError(
            f"{present[0]} exists without its pair; move it away or restore the other file"
        )
    if not path.parent.is_dir():
        raise NodeAuthKeyError(f"folder {path.parent} does not exist")
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write_new(path, private, 0o600)
    _write_new(public_path, public + b"\n", 0o644)
    return True


def check_node_auth_pair(private_path: Path, public_path: Path) -> None:
    """Raise NodeAuthKeyError unless the two files hold a matching ECDSA P-384 OpenSSH pair."""
    try:
        private = serialization.load_ssh_private_key(private_path.read_bytes(), password=None)
        public = serialization.load_ssh_public_key(public_path.read_bytes())
    except (ValueError, TypeError, OSError) as exc:
        raise NodeAuthKeyError(
            f"{private_path} / {public_path} are not an OpenSSH key pair: {exc}"
        ) from None
    if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(
        private.curve, ec.SECP384R1
    ):
        raise NodeAuthKeyError(f"{private_path} is not an ECDSA P-384 key")
    if private.public_key() != public:
        raise NodeAuthKeyError(f"{public_path} is not the public half of {private_path}")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (never briefly world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
