"""What a site trusts: its pinned federation manifest and its own `[secure_agg]` policy.

Every value that decides a round's security reaches the site inside the coordinator's messages:
the directory of member keys, the custodian, the mode, the sampled set, n and k. The coordinator
may lie about each (docs/protocol.md, "Threat model"), so the site checks each against what it
pinned itself and refuses the message otherwise: it takes member keys from the manifest only,
never from the message, and logs every refusal locally.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedseal.client.errors import SiteRefusal
from fedseal.client.site_config import SecureAggPolicy
from fedseal.contract.manifest import FederationManifest, ManifestError, ManifestMember
from fedseal.contract.message_fields import field_str
from fedseal.contract.wire import Key
from fedseal.secure_agg.params import Mode, params_from_json

__all__ = [
    "PINNED_MANIFEST",
    "SiteTrust",
    "TrustRefusal",
    "load_pinned_manifest",
    "pin_manifest",
]

log = logging.getLogger("fedseal.client")

PINNED_MANIFEST = Path("trust") / "manifest.json"
"""Where, under the site's state directory, `fl-client trust` keeps the pinned manifest."""


class TrustRefusal(SiteRefusal, PermissionError):
    """A message that the site's pinned manifest or policy does not allow (one line)."""


def load_pinned_manifest(state_dir: Path) -> FederationManifest | None:
    """The manifest this site pinned, None if it pinned none; `ManifestError` if damaged."""
    path = Path(state_dir) / PINNED_MANIFEST
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ManifestError(f"pinned manifest {path} cannot be read: {exc.strerror}") from None
    try:
        return FederationManifest.from_bytes(data)
    except ManifestError as exc:
        raise ManifestError(f"pinned manifest {path} is damaged: {exc}") from None


def pin_manifest(state_dir: Path, manifest: FederationManifest) -> Path:
    """Keep `manifest` as the site's pin (atomically: a crash leaves the old pin or the new)."""
    path = Path(state_dir) / PINNED_MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as handle:
        handle.write(manifest.to_bytes())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


class SiteTrust:
    """The checks a site makes on every secure-aggregation message, from what it pinned."""

    def __init__(self, site: str, state_dir: Path, policy: SecureAggPolicy) -> None:
        self.site = site
        self.policy = policy
        self._state_dir = Path(state_dir)
        self._manifest: FederationManifest | None = None

    def refuse(self, reason: str) -> TrustRefusal:
        """Log the refusal here (the coordinator may not record it) and return the error."""
        log.warning("refused: %s", reason)
        return TrustRefusal(reason)

    # -- the pinned manifest ----------------------------------------------------------------

    @property
    def manifest(self) -> FederationManifest:
        if self._manifest is None:
            try:
                pinned = load_pinned_manifest(self._state_dir)
            except ManifestError as exc:
                raise self.refuse(str(exc)) from None
            if pinned is None:
                raise self.refuse(
                    f"site {self.site} has pinned no federation manifest; review the operator's "
                    f"and run `fl-client --site={self.site} trust FILE`"
                )
            if self.site not in pinned.members:
                raise self.refuse(f"the pinned manifest does not list this site ({self.site})")
            self._manifest = pinned
        return self._manifest

    def member(self, name: str, what: str) -> ManifestMember:
        member = self.manifest.members.get(name)
        if member is None:
            raise self.refuse(f"{what} {name!r} is not a member in the pinned manifest")
        return member

    def directory(self, fields: Mapping[str, Any], decoded: Mapping[str, Any]) -> dict[str, Any]:
        """The message's directory, checked entry by entry against the pinned members; the
        keys returned are the manifest's (`decoded` maps names to objects with `.identity` and
        `.sealing`)."""
        for name, keys in decoded.items():
            member = self.member(name, "directory entry")
            if keys.identity != member.identity or keys.sealing != member.sealing:
                raise self.refuse(f"directory keys of {name!r} differ from the pinned manifest")
        return {name: self.manifest.members[name] for name in decoded}

    def identities(self, names: list[str] | tuple[str, ...]) -> dict[str, bytes]:
        """Pinned identity keys of `names` (each must be a member)."""
        return {name: self.member(name, "site").identity for name in names}

    # -- mode ---------------------------------------------------------------------------------

    def mode(self, fields: Mapping[str, Any]) -> Mode:
        """The message's mode, if this site's policy (and, beyond plain, its manifest) allow
        it; a missing mode is refused, never read as plain."""
        raw = fields.get(Key.MODE)
        if not isinstance(raw, str):
            raise self.refuse("the message names no aggregation mode")
        try:
            mode = Mode(raw)
        except ValueError:
            raise self.refuse(f"unknown aggregation mode {raw!r}") from None
        if mode not in self.policy.modes:
            allowed = ", ".join(sorted(str(m) for m in self.policy.modes))
            raise self.refuse(f"mode {mode} is not allowed by this site's [secure_agg] ({allowed})")
        if mode is not Mode.PLAIN and mode not in self.manifest.modes:
            raise self.refuse(f"mode {mode} is not accepted by the pinned manifest")
        if Key.PROTOCOL_PARAMS in fields:
            params = params_from_json(field_str(fields, Key.PROTOCOL_PARAMS))
            if params.mode is not mode:
                raise self.refuse(f"protocol parameters say mode {params.mode}, message {mode}")
        return mode

    # -- the round ----------------------------------------------------------------------------

    def check_round(self, info: Any) -> None:
        """Sampled sites, n and k of a round (`recipe.RoundInfo`) against the pin and policy."""
        for name in info.sampled:
            self.member(name, "sampled site")
        if self.site not in info.sampled:
            raise self.refuse("this site is not in the round's sampled set")
        params = info.params
        if params.n_sites > len(self.manifest.members):
            raise self.refuse(
                f"the round is planned for {params.n_sites} sites; the manifest has "
                f"{len(self.manifest.members)} members"
            )
        if info.mode is not Mode.HE_SS:
            return
        colluding = self.manifest.max_colluding
        if len(info.sampled) < colluding + 2:
            raise self.refuse(
                f"{len(info.sampled)} sampled sites: with {colluding} colluding, the aggregate "
                "would show one honest site's update"
            )
        least = max(self.manifest.least_threshold(params.n_sites), self.policy.min_threshold)
        if params.threshold < least:
            raise self.refuse(
                f"threshold k={params.threshold} is below {least}, what this site accepts for "
                f"{params.n_sites} sites with {colluding} colluding"
            )
