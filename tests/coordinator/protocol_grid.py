"""Real sites' protocol stages, without a model, behind a stand-in for Flower's Grid.

`ProtocolGrid` hands each message to the addressed site's real `SecureSite` (real keys, BFV,
Shamir, signatures) when the coordinator pulls its reply, as the SuperLink queues a message until
the site answers it. Replies come back from `pull_messages` as a list, as from Flower's grid.
A train message is answered with the update `update(site)` gives; `hostile` may rewrite any
reply. `on_push` and `on_pushed` are told of each stage the coordinator sends, before and after
it is queued (to probe the coordinator between stages); the message types in `answer_at_push`
are answered when queued, as sites that all replied before the coordinator pulls.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from trust_support import pin_everywhere, trust_of

from fedseal.client.site_keys import create_site_keys
from fedseal.client.stages.secure import SecureSite
from fedseal.contract.update_codec import encode_update
from fedseal.contract.wire import Key, MessageType, RecordName
from fedseal.coordinator.protocols import (
    AggregationProtocol,
    HeAggregation,
    PlainFedAvg,
    RunContext,
    SecureAggregation,
)
from fedseal.coordinator.site_directory import SiteInfo
from fedseal.secure_agg.params import SPARSE_ABOVE

__all__ = ["Hostile", "ProtocolGrid", "Update", "protocol_federation"]

Hostile = Callable[[str, str, dict[str, Any]], dict[str, Any]]
Update = Callable[[str], tuple[np.ndarray, int]]  # site -> (its update, its example count)


class ProtocolGrid:
    """Hands each message to the addressed site's real `SecureSite`; no model, no training."""

    def __init__(
        self, sites: dict[str, SecureSite], mode: str, *, run_id: int, update: Update
    ) -> None:
        self.sites = sites
        self.mode = mode
        self.run_id = run_id
        self.update = update
        self.node_of = {site: 11 + i for i, site in enumerate(sorted(sites))}
        self.site_of = {node: site for site, node in self.node_of.items()}
        self.hostile: Hostile | None = None
        self.on_push: Callable[[str], None] | None = None
        self.on_pushed: Callable[[str], None] | None = None
        self.answer_at_push: set[str] = set()
        self.answers: dict[str, dict[str, Any]] = {}
        self.upload_sizes: list[int] = []
        self.queued: dict[str, Message] = {}
        self._message_ids = itertools.count(1)
        self.run = SimpleNamespace(run_id=run_id)
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = 1
        TaskIdentity.task_id = 1

    def get_node_ids(self) -> list[int]:
        return list(self.site_of)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        messages = list(messages)
        kind = messages[0].metadata.message_type if messages else ""
        if self.on_push is not None:
            self.on_push(kind)
        ids = []
        for message in messages:
            message_id = f"m{next(self._message_ids)}"
            message.metadata.__dict__["_message_id"] = message_id  # as Flower's grid sets it
            self.queued[message_id] = message
            if kind in self.answer_at_push:
                self.answers[message_id] = self._result(message)
            ids.append(message_id)
        if self.on_pushed is not None:
            self.on_pushed(kind)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        """The replies to those of `message_ids` still queued, each made when it is pulled
        (an answer made at push time is copied, as a reply arrives over the network)."""
        replies = []
        for message_id in message_ids:
            message = self.queued.pop(message_id, None)
            if message is None:
                continue
            answer = self.answers.pop(message_id, None)
            result = self._result(message) if answer is None else _copied(answer)
            records = RecordDict({RecordName.RESULT: ConfigRecord(result)})
            replies.append(Message(records, reply_to=message))
        return replies

    def _result(self, message: Message) -> dict[str, Any]:
        site = self.site_of[message.metadata.dst_node_id]
        kind = message.metadata.message_type
        fields = dict(message.content[RecordName.CONFIG])
        result = {Key.SITE: site, **self._answer(site, kind, fields)}
        if self.hostile is not None:
            result = self.hostile(site, kind, result)
        return result

    def _answer(self, site: str, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        secure = self.sites[site]
        if kind == MessageType.IDENTIFY:
            return {}
        if kind == MessageType.TRAIN:
            delta, weight = self.update(site)
            if self.mode == "plain":
                upload = encode_update(delta * np.float32(weight))
            else:
                upload, _ = secure.prepare_upload(self.run_id, fields, delta, weight)
            self.upload_sizes.append(len(upload))
            reply = {
                Key.ROUND: fields[Key.ROUND],
                Key.START_DIGEST: "d0",
                Key.UPDATE: upload,
                Key.NUM_EXAMPLES: weight,
            }
            release = (
                secure.release_with_upload(self.run_id, fields) if self.mode == "he+ss" else None
            )
            if release:
                reply[Key.SHARE_RELEASE] = release  # as the site's train stage sends it
            return reply
        return getattr(secure, kind.split(".")[-1])(self.run_id, fields)


def _copied(result: dict[str, Any]) -> dict[str, Any]:
    """A fresh copy of every bytes value, as if just received."""

    def copy(value: Any) -> Any:
        if isinstance(value, bytes):
            return bytes(bytearray(value))
        if isinstance(value, list):
            return [copy(v) for v in value]
        return value

    return {key: copy(value) for key, value in result.items()}


def protocol_federation(
    tmp: Path,
    names: Sequence[str],
    mode: str,
    *,
    run_id: int,
    adapter: int,
    update: Update,
    train_examples: int = 10,
    clip: float = 1.0,
    sparse_above: int = SPARSE_ABOVE,
    neighbours: int = 0,
    key_rounds: int = 1,
    grid_class: type[ProtocolGrid] | None = None,
    max_colluding: int = 0,
) -> tuple[ProtocolGrid, AggregationProtocol]:
    """Sites `names` with fresh keys, and the coordinator's protocol for `mode` after its run
    start (the key ceremony in the he modes); `sparse_above` and `neighbours` as the run
    settings of those names, `key_rounds` the he+ss key batch's rounds; `grid_class` a
    `ProtocolGrid` that injects faults; `max_colluding` what the run plans for (the sites pin
    a manifest allowing none)."""
    sites: dict[str, SecureSite] = {}
    bundles = {}
    all_keys = {name: create_site_keys(name, tmp / name)[0] for name in names}
    pin_everywhere(all_keys, {name: tmp / name for name in names})
    for name in names:
        keys = all_keys[name]
        sites[name] = SecureSite(keys, tmp / name, trust_of(name, tmp / name))
        bundles[name] = keys.public().to_bundle()
    grid = (grid_class or ProtocolGrid)(sites, mode, run_id=run_id, update=update)
    protocols: dict[str, type[AggregationProtocol]] = {
        "he+ss": SecureAggregation,
        "he": HeAggregation,
        "plain": PlainFedAvg,
    }
    protocol = protocols[mode]()
    protocol.prepare_run(
        grid,  # type: ignore[arg-type]
        RunContext(
            run_id=run_id,
            sites={s: SiteInfo(s, grid.node_of[s], train_examples, 5, adapter) for s in names},
            enrolled_keys=bundles,
            clip=clip,
            timeout_s=5.0,
            sparse_above=sparse_above,
            neighbours=neighbours,
            max_colluding=max_colluding,
            key_rounds=key_rounds,
        ),
    )
    return grid, protocol
