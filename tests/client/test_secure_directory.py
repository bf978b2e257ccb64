"""A site reads the directory of enrolled keys of a large federation at every he+ss stage."""

from __future__ import annotations

import os

from fedseal.client.secure_stages import SecureSite, encode_directory
from fedseal.client.site_keys import SitePublicKeys
from fedseal.wire import Key


def test_a_site_reads_the_directory_of_a_thousand_sites() -> None:
    keys = {
        f"site-{i:04d}": SitePublicKeys(f"site-{i:04d}", os.urandom(32), os.urandom(32))
        for i in range(1000)
    }
    fields = {Key.DIRECTORY: encode_directory(keys)}
    assert len(fields[Key.DIRECTORY]) > 100_000  # ~110 characters a site
    directory = SecureSite.identity_directory(fields)
    assert directory == {site: k.identity for site, k in keys.items()}
