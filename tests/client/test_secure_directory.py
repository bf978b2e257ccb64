"""A site of a large federation reads a thousand-member directory and pinned manifest."""

from __future__ import annotations

import os
from pathlib import Path

from trust_support import trust_of

from fedseal.client.stages.secure import SecureSite
from fedseal.client.trust import pin_manifest
from fedseal.contract.manifest import FederationManifest, ManifestMember
from fedseal.contract.site_identity import SitePublicKeys, decode_directory, encode_directory
from fedseal.contract.wire import Key
from fedseal.secure_agg.params import Mode


def test_a_site_reads_the_directory_of_a_thousand_sites(tmp_path: Path) -> None:
    keys = {
        f"site_{i:04d}": SitePublicKeys(f"site_{i:04d}", os.urandom(32), os.urandom(32))
        for i in range(1000)
    }
    fields = {Key.DIRECTORY: encode_directory(keys)}
    assert len(fields[Key.DIRECTORY]) > 100_000  # ~110 characters a site
    assert decode_directory(fields[Key.DIRECTORY]) == keys
    members = {n: ManifestMember(n, k.identity, k.sealing) for n, k in keys.items()}
    manifest = FederationManifest("big", 1, members, frozenset({Mode.HE_SS}), 499)
    pin_manifest(tmp_path, manifest)
    site = SecureSite(None, tmp_path, trust_of("site_0000", tmp_path))
    assert site.identity_directory() == {n: k.identity for n, k in keys.items()}
    assert len(manifest.to_bytes()) < 1 << 20  # within the manifest size limit
