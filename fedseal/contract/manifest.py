"""The federation manifest: who the members are and what the federation's rounds may be.

A site pins the manifest out of band (`fl-client --site=NAME trust FILE`), as SSH pins a host
key, and from then on takes the members' keys, the accepted modes and the collusion bound from
it, never from a message: the coordinator may lie about any of them (docs/protocol.md, "Threat
model"). The operator writes it from the members' public-key files (`fl-coordinator manifest`);
a new member means a new version that every site reviews and pins the same way.

The fingerprint is the SHA-256 of the manifest's canonical JSON (sorted keys, no spaces), so two
people comparing it over the phone compare every byte that matters.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from fedseal.contract.errors import ContractError
from fedseal.secure_agg.params import MAX_SITES, Mode

__all__ = [
    "MANIFEST_FORMAT",
    "FederationManifest",
    "ManifestError",
    "ManifestMember",
    "minority",
]

MANIFEST_FORMAT = "fedseal-manifest/v1"
MAX_MANIFEST_BYTES = 1 << 20
_NAME = re.compile(r"^[a-z0-9_]{1,63}$")


def minority(n_sites: int) -> int:
    """The default collusion bound: the largest minority of `n_sites` sites, (n - 1) // 2."""
    return (n_sites - 1) // 2


class ManifestError(ContractError):
    """A manifest that cannot be used; the message is one line meant for a person."""


@dataclass(frozen=True)
class ManifestMember:
    """A member site's public keys: Ed25519 identity (signs), X25519 sealing (receives keys)."""

    name: str
    identity: bytes
    sealing: bytes


def _key(raw: object, what: str) -> bytes:
    if not isinstance(raw, str):
        raise ManifestError(f"{what} must be a base64 string")
    try:
        value = base64.b64decode(raw, validate=True)
    except ValueError:
        raise ManifestError(f"{what} is not base64") from None
    if len(value) != 32:
        raise ManifestError(f"{what} must be a 32-byte key")
    return value


@dataclass(frozen=True)
class FederationManifest:
    """A validated manifest. `max_colluding`: how many member sites may collude with the
    coordinator while every round still hides each other site's update."""

    federation: str
    version: int
    members: Mapping[str, ManifestMember]
    modes: frozenset[Mode]
    max_colluding: int

    def __post_init__(self) -> None:
        if not _NAME.match(self.federation):
            raise ManifestError(f"federation name {self.federation!r} must match [a-z0-9_]{{1,63}}")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ManifestError("version must be an integer >= 1")
        if not 1 <= len(self.members) <= MAX_SITES:
            raise ManifestError(f"a manifest lists 1..{MAX_SITES} members")
        for name, member in self.members.items():
            if not _NAME.match(name) or member.name != name:
                raise ManifestError(f"member name {name!r} must match [a-z0-9_]{{1,63}}")
        identities = [m.identity for m in self.members.values()]
        if len(set(identities)) != len(identities):
            raise ManifestError("two members share an identity key")
        if not self.modes:
            raise ManifestError("a manifest accepts at least one mode")
        if (
            isinstance(self.max_colluding, bool)
            or not isinstance(self.max_colluding, int)
            or not 0 <= self.max_colluding < len(self.members)
        ):
            raise ManifestError(f"max_colluding must be in 0..{len(self.members) - 1}")

    # -- the canonical form -----------------------------------------------------------------

    def to_document(self) -> dict[str, object]:
        return {
            "format": MANIFEST_FORMAT,
            "federation": self.federation,
            "version": self.version,
            "modes": sorted(str(m) for m in self.modes),
            "max_colluding": self.max_colluding,
            "members": {
                name: {
                    "identity_ed25519": base64.b64encode(m.identity).decode(),
                    "sealing_x25519": base64.b64encode(m.sealing).decode(),
                }
                for name, m in sorted(self.members.items())
            },
        }

    def to_bytes(self) -> bytes:
        """The canonical JSON: what the fingerprint covers and what a site pins."""
        return json.dumps(self.to_document(), sort_keys=True, separators=(",", ":")).encode()

    @property
    def fingerprint(self) -> str:
        return "sha256:" + hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes) -> FederationManifest:
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"a manifest is at most {MAX_MANIFEST_BYTES} bytes")
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ManifestError("not a fedseal manifest (not JSON)") from None
        if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"not a fedseal manifest (format must be {MANIFEST_FORMAT!r})")
        extra = set(raw) - {"format", "federation", "version", "modes", "max_colluding", "members"}
        if extra:
            raise ManifestError(f"unknown manifest field(s): {', '.join(sorted(extra))}")
        members_raw = raw.get("members")
        if not isinstance(members_raw, dict):
            raise ManifestError("members must map site names to their keys")
        members = {}
        for name, keys in members_raw.items():
            if not isinstance(keys, dict) or set(keys) != {"identity_ed25519", "sealing_x25519"}:
                raise ManifestError(f"member {name!r} must have identity_ed25519, sealing_x25519")
            members[name] = ManifestMember(
                str(name),
                _key(keys["identity_ed25519"], f"member {name!r} identity key"),
                _key(keys["sealing_x25519"], f"member {name!r} sealing key"),
            )
        modes_raw = raw.get("modes")
        if not isinstance(modes_raw, list) or not all(isinstance(m, str) for m in modes_raw):
            raise ManifestError("modes must be a list of mode names")
        try:
            modes = frozenset(Mode(m) for m in modes_raw)
        except ValueError:
            raise ManifestError(
                f"modes must be among {', '.join(str(m) for m in Mode)}; got {modes_raw}"
            ) from None
        name = raw.get("federation")
        if not isinstance(name, str):
            raise ManifestError("federation must be a name")
        return cls(name, raw.get("version"), members, modes, raw.get("max_colluding"))  # type: ignore[arg-type]

    # -- what a round may be ----------------------------------------------------------------

    def least_threshold(self, n_sites: int) -> int:
        """The smallest Shamir threshold k a round of `n_sites` may use: k > (n + c) / 2, so
        that c colluding sites and a coordinator that lies about dropouts never reach k shares
        of both secrets of one honest site."""
        return (n_sites + self.max_colluding) // 2 + 1
