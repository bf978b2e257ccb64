"""The key ceremony at the start of an encrypted run (`he`, `he+ss`).

The custodian site (the first participant by name) makes the run's BFV key, seals it to every
participant and returns a signed parameters-only context. The coordinator checks the signature,
keeps only that context (`is_private()` is False: it never holds a secret key) and relays each
sealed key to its site. The run goes on with the sites that installed the key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flwr.serverapp import Grid

from fedseal.contract.limits import ReplyLimits
from fedseal.contract.message_fields import field_bytes, field_bytes_list, field_str_list
from fedseal.contract.wire import Key, MessageType
from fedseal.coordinator.messaging import StageResult, stream_stage
from fedseal.coordinator.protocols.base import RunContext
from fedseal.secure_agg import bfv, recipe
from fedseal.secure_agg.errors import SecureAggError
from fedseal.secure_agg.messages import Signed
from fedseal.secure_agg.params import ProtocolParams

__all__ = ["FederationKey", "key_ceremony"]

log = logging.getLogger("fedseal.coordinator")


@dataclass(frozen=True)
class FederationKey:
    """What the ceremony leaves the coordinator: the public context and who holds the key."""

    context: Any
    """The run's BFV context without its secret key: enough to add ciphertexts, not to open."""
    holders: list[str]
    """The participants that hold the key (by name), the custodian included."""


def key_ceremony(
    grid: Grid,
    run: RunContext,
    participants: list[str],
    *,
    fields: Mapping[str, Any],
    params: ProtocolParams,
    identities: dict[str, bytes],
    limits: ReplyLimits,
) -> FederationKey:
    """Have the custodian make the run's key and every other participant install it.

    `fields` go in every message (run, mode, parameters, directory); `identities` are the
    participants' identity keys the custodian's signature is checked against. A custodian that
    fails stops the run (a RuntimeError); another site that fails is left out of it.
    """
    custodian = participants[0]
    nodes = {s: run.sites[s].node_id for s in participants}

    def stage(message_type: str, configs: dict[str, dict[str, Any]]) -> StageResult:
        return stream_stage(
            grid, message_type, configs, nodes, run.timeout_s, limits.for_message_type(message_type)
        ).collect()

    keygen = stage(MessageType.KEYGEN, {custodian: dict(fields)})
    reply = keygen.replies.get(custodian)
    if reply is None:
        reason = keygen.failed.get(custodian, "no reply")
        raise RuntimeError(f"key ceremony: custodian {custodian} failed: {reason}")
    try:
        context = recipe.aggregator_load_context(
            Signed.from_bytes(field_bytes(reply.result, Key.PUBLIC_CONTEXT, max_len=limits.keygen)),
            custodian_id=custodian,
            directory=identities,
            run_id=str(run.run_id),
            params=params.bfv,
        )
        sealed_sites = field_str_list(reply.result, Key.SEALED_SITES)
        sealed_keys = field_bytes_list(
            reply.result, Key.SEALED_KEYS, max_len=bfv.max_context_bytes(params.bfv) * 2
        )
        sealed = dict(zip(sealed_sites, sealed_keys, strict=True))
    except (SecureAggError, KeyError, ValueError) as exc:
        raise RuntimeError(f"key ceremony: custodian {custodian}'s reply refused: {exc}") from None
    if context.is_private():  # never hold a secret key
        raise RuntimeError("key ceremony: the public context holds a secret key")
    others = {
        site: {**fields, Key.CUSTODIAN: custodian, Key.SEALED_KEY: bytes(sealed[site])}
        for site in participants
        if site != custodian and site in sealed
    }
    installed = stage(MessageType.INSTALL, others)
    for site, reason in installed.failed.items():
        log.error("key ceremony: site %s could not install the key: %s", site, reason)
    holders = sorted([custodian, *installed.replies])
    log.info("key ceremony done: custodian %s, %d sites hold the key", custodian, len(holders))
    return FederationKey(context, holders)
