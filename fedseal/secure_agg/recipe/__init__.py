"""One round of secure aggregation, for `client/` and `coordinator/` to call: modes behind one API.

The pipeline is the same in every mode::

    site_prepare_upload -> aggregator_sum -> aggregator_unmask -> site_decrypt_aggregate

``plain`` sums quantised residues in the clear, ``he`` sums BFV ciphertexts, ``he+ss`` sums BFV
ciphertexts of SecAgg-masked vectors and needs the key stages first::

    site_advertise -> collect_adverts -> site_share_keys -> collect_envelopes
    -> (upload, sum) -> site_consistency -> collect_acks -> site_release_shares -> (unmask)

or, in a round where no site may drop out (`unanimous`), with the release beside the upload::

    ... -> (site_prepare_upload + site_release_unanimous, sum) -> (unmask)

A function given inputs of another mode raises `ConfigurationError`: there is no silent fallback
to a weaker mode. A bad message from one site raises a `SecureAggError` (or is listed in a
``rejected`` mapping) without disturbing what was already accepted, so the round goes on without it.
Below the threshold ``k`` of survivors, `InsufficientSurvivors`: abort the round, apply nothing.
"""

from __future__ import annotations

from .aggregator import (
    ShareBook,
    UploadSum,
    adverts_for,
    aggregator_sum,
    aggregator_unmask,
    collect_acks,
    collect_adverts,
    collect_envelopes,
)
from .ceremony import (
    aggregator_load_context,
    custodian_public_context,
    custodian_seal_federation_key,
    site_open_federation_key,
)
from .round import Directory, RoundInfo, SiteIdentity, unanimous
from .site import (
    Aggregate,
    PreparedUpload,
    SiteRound,
    site_advertise,
    site_consistency,
    site_decrypt_aggregate,
    site_prepare_upload,
    site_release_shares,
    site_release_unanimous,
    site_share_keys,
)

__all__ = [
    "Aggregate",
    "Directory",
    "PreparedUpload",
    "RoundInfo",
    "ShareBook",
    "SiteIdentity",
    "SiteRound",
    "UploadSum",
    "adverts_for",
    "aggregator_load_context",
    "aggregator_sum",
    "aggregator_unmask",
    "collect_acks",
    "collect_adverts",
    "collect_envelopes",
    "custodian_public_context",
    "custodian_seal_federation_key",
    "site_advertise",
    "site_consistency",
    "site_decrypt_aggregate",
    "site_open_federation_key",
    "site_prepare_upload",
    "site_release_shares",
    "site_release_unanimous",
    "site_share_keys",
    "unanimous",
]
