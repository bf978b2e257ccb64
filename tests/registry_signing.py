"""Keys for registry tests: the coordinator's ledger key and sites that sign their statements.

The fixtures `ledger_key` and `site_signer` (tests/conftest.py) hand these out.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedseal.client.site_keys import SiteKeys
from fedseal.contract import ledger_codec
from fedseal.registry import Registry


class SiteSigner:
    """Site key pairs made on demand: enrols them and signs privacy statements with them."""

    def __init__(self) -> None:
        self._keys: dict[str, SiteKeys] = {}

    def keys(self, site: str) -> SiteKeys:
        if site not in self._keys:
            self.rekey(site)
        return self._keys[site]

    def rekey(self, site: str) -> SiteKeys:
        """New keys for the site (enrol them to make them count)."""
        self._keys[site] = SiteKeys(site, Ed25519PrivateKey.generate(), X25519PrivateKey.generate())
        return self._keys[site]

    def bundle(self, site: str) -> bytes:
        return self.keys(site).public().to_bundle()

    def enroll(self, registry: Registry, *sites: str) -> None:
        for site in sites:
            registry.enroll_site(site, self.bundle(site))

    def signed(
        self,
        registry: Registry,
        *,
        run_id: int,
        round_number: int,
        site: str,
        update_digest: str = "",
        flower_run_id: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """`Registry.record_privacy`'s keyword arguments, signed by the site as it would.

        `fields` are the report's (status, mechanism, ε figures, budget); the Flower run id
        is the run's unless given.
        """
        if flower_run_id is None:
            flower_run_id = registry.get_run(run_id).flower_run_id
        statement = {
            "site": site,
            "flower_run_id": flower_run_id,
            "round_number": round_number,
            "update_digest": update_digest,
            **fields,
        }
        signature = ledger_codec.sign_statement(self.keys(site).identity, statement)
        return {
            "run_id": run_id,
            "round_number": round_number,
            "site": site,
            "update_digest": update_digest,
            "site_signature": signature,
            **fields,
        }
