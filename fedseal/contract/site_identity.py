"""A site's public identity as every party reads it, and the directory of members in messages.

Made by `fl-client --site=NAME enroll` (the private halves stay in the site's state, see
`fedseal.client.site_keys`); the operator enrols the public halves in the registry and writes them
into the federation manifest; the coordinator relays them in each stage's directory, which a site
checks entry by entry against its pinned manifest.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass

from fedseal.contract.errors import ContractError
from fedseal.contract.message_fields import MessageFieldError, field_json
from fedseal.contract.wire import Key
from fedseal.secure_agg.params import MAX_SITES

__all__ = ["SiteKeyError", "SitePublicKeys", "decode_directory", "encode_directory"]

_BUNDLE_MAGIC = b"fedseal-site-keys/v1:"


class SiteKeyError(ContractError):
    """Missing, unreadable or malformed site keys."""


@dataclass(frozen=True)
class SitePublicKeys:
    """What the operator enrols for a site: raw 32-byte public keys."""

    site: str
    identity: bytes
    sealing: bytes

    def to_bundle(self) -> bytes:
        """The bytes the registry stores for the site (both keys, self-describing)."""
        return _BUNDLE_MAGIC + self.identity + self.sealing

    @classmethod
    def from_bundle(cls, site: str, bundle: bytes) -> SitePublicKeys:
        if not bundle.startswith(_BUNDLE_MAGIC) or len(bundle) != len(_BUNDLE_MAGIC) + 64:
            raise SiteKeyError(f"site {site}: enrolled key bundle is malformed")
        body = bundle[len(_BUNDLE_MAGIC) :]
        return cls(site, body[:32], body[32:])

    def to_json(self) -> str:
        return json.dumps(
            {
                "site": self.site,
                "identity_ed25519": base64.b64encode(self.identity).decode(),
                "sealing_x25519": base64.b64encode(self.sealing).decode(),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> SitePublicKeys:
        try:
            raw = json.loads(text)
            keys = cls(
                str(raw["site"]),
                base64.b64decode(raw["identity_ed25519"], validate=True),
                base64.b64decode(raw["sealing_x25519"], validate=True),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SiteKeyError(f"not a fedseal public key file: {exc}") from None
        if len(keys.identity) != 32 or len(keys.sealing) != 32:
            raise SiteKeyError("public keys must be 32 bytes each")
        return keys


def encode_directory(keys: Mapping[str, SitePublicKeys]) -> str:
    """Enrolled public keys as JSON text, for message fields."""
    return json.dumps(
        {
            site: [base64.b64encode(k.identity).decode(), base64.b64encode(k.sealing).decode()]
            for site, k in sorted(keys.items())
        },
        separators=(",", ":"),
    )


def decode_directory(text: str) -> dict[str, SitePublicKeys]:
    """Enrolled public keys from a message field; anything malformed is `MessageFieldError`."""
    raw = field_json({Key.DIRECTORY: text}, Key.DIRECTORY)
    if not isinstance(raw, dict) or len(raw) > MAX_SITES:
        raise MessageFieldError("message field 'directory' must map site names to key pairs")
    directory = {}
    for site, pair in raw.items():
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(k, str) for k in pair)
        ):
            raise MessageFieldError(f"directory entry of {site!r} must be two base64 keys")
        try:
            identity, sealing = (base64.b64decode(k, validate=True) for k in pair)
        except ValueError:
            raise MessageFieldError(f"directory entry of {site!r} is not base64") from None
        directory[site] = SitePublicKeys(site, identity, sealing)
    return directory
