"""The contract's one exception root: anything read off the wire or the ledger that is malformed."""

from __future__ import annotations

__all__ = ["ContractError"]


class ContractError(ValueError):
    """A message field, run plan, codec payload, manifest or key file that cannot be used."""
