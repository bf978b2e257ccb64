"""The run's key ceremony: the custodian makes the BFV key and seals it to each site; sites open
it; the aggregator loads the parameters-only context."""

from __future__ import annotations

from collections.abc import Mapping

import tenseal as ts
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .. import bfv, keys
from .._wire import frame, text
from ..bfv_params import BfvParams
from ..errors import (
    InvalidMessage,
)
from ..messages import (
    SealedFederationKey,
    Signed,
    Stage,
)
from ..prg import RandBytes
from .round import (
    _CEREMONY_ROUND,
    Directory,
    SiteIdentity,
)

__all__ = [
    "aggregator_load_context",
    "custodian_public_context",
    "custodian_seal_federation_key",
    "site_open_federation_key",
]


def custodian_seal_federation_key(
    context: ts.Context,
    *,
    custodian: SiteIdentity,
    run_id: str,
    recipients: Mapping[str, bytes],
    randbytes: RandBytes,
) -> dict[str, Signed]:
    """Seal the secret BFV context to each site's X25519 sealing key, signed by the custodian."""
    secret = bfv.secret_context_bytes(context)
    out = {}
    for site_id, sealing_public in sorted(recipients.items()):
        sealed = keys.seal(
            sealing_public,
            secret,
            run_id=run_id,
            recipient_id=site_id,
            randbytes=randbytes,
            context=frame(text(custodian.site_id)),
        )
        out[site_id] = Signed.create(
            custodian.identity_key,
            sender=custodian.site_id,
            stage=Stage.KEY_CEREMONY,
            body=SealedFederationKey(site_id, sealed).to_bytes(),
            run_id=run_id,
            round_no=_CEREMONY_ROUND,
        )
    return out


def site_open_federation_key(
    message: Signed,
    *,
    site_id: str,
    sealing_key: X25519PrivateKey,
    custodian_id: str,
    directory: Directory,
    run_id: str,
    params: BfvParams,
) -> bfv.SiteCipher:
    """Check the custodian's signature, open the sealed context and return this site's cipher."""
    if message.sender != custodian_id:
        raise InvalidMessage()
    body = message.verify(
        directory, run_id=run_id, round_no=_CEREMONY_ROUND, stage=Stage.KEY_CEREMONY
    )
    envelope = SealedFederationKey.from_bytes(body)
    if envelope.recipient != site_id:
        raise InvalidMessage()
    secret = keys.open_sealed(
        sealing_key,
        envelope.sealed,
        run_id=run_id,
        recipient_id=site_id,
        context=frame(text(custodian_id)),
    )
    return bfv.SiteCipher(bfv.load_secret_context(secret, params), params)


def custodian_public_context(
    context: ts.Context, *, custodian: SiteIdentity, run_id: str
) -> Signed:
    """The parameters-only context for the coordinator, signed by the custodian."""
    return Signed.create(
        custodian.identity_key,
        sender=custodian.site_id,
        stage=Stage.KEY_CEREMONY,
        body=bfv.public_context_bytes(context),
        run_id=run_id,
        round_no=_CEREMONY_ROUND,
    )


def aggregator_load_context(
    message: Signed, *, custodian_id: str, directory: Directory, run_id: str, params: BfvParams
) -> ts.Context:
    """Verify and load the coordinator's context; refuses one that holds a secret key."""
    if message.sender != custodian_id:
        raise InvalidMessage()
    body = message.verify(
        directory, run_id=run_id, round_no=_CEREMONY_ROUND, stage=Stage.KEY_CEREMONY
    )
    return bfv.load_public_context(body, params)


# --------------------------------------------------------------------------- he+ss: site side
