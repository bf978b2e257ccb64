"""Pinned manifests for tests that run sites in-process: every given site pins the same one."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fedseal.client.site_config import SecureAggPolicy
from fedseal.client.site_keys import SiteKeys
from fedseal.client.trust import SiteTrust, pin_manifest
from fedseal.contract.manifest import FederationManifest, ManifestMember
from fedseal.secure_agg.params import Mode

ALL_MODES = frozenset(Mode)


def make_manifest(
    keys: Mapping[str, SiteKeys], *, max_colluding: int = 0, modes: frozenset[Mode] = ALL_MODES
) -> FederationManifest:
    members = {}
    for name, site_keys in keys.items():
        public = site_keys.public()
        members[name] = ManifestMember(name, public.identity, public.sealing)
    return FederationManifest("test", 1, members, modes, max_colluding)


def pin_everywhere(
    keys: Mapping[str, SiteKeys], state_dirs: Mapping[str, Path], **kwargs: object
) -> FederationManifest:
    """Pin one manifest of `keys` at each site's state directory."""
    manifest = make_manifest(keys, **kwargs)  # type: ignore[arg-type]
    for name in keys:
        pin_manifest(state_dirs[name], manifest)
    return manifest


def trust_of(name: str, state_dir: Path, modes: frozenset[Mode] = ALL_MODES) -> SiteTrust:
    """A site's checks with a policy that allows `modes` (tests of the weaker modes too)."""
    return SiteTrust(name, state_dir, SecureAggPolicy(modes=modes))
