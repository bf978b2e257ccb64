"""Which Flower node is which site.

Flower knows nodes by random ids; fedseal knows sites by name. New nodes are asked who they are
(a light `query.identify` message) before they are sampled. Two nodes claiming the same site
name are both kept out: one of them is an impostor or a stale process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedseal.contract.limits import DEFAULT_CONTROL_BYTES, MessageTooLarge, check_size, record_size
from fedseal.contract.wire import PROTOCOL_VERSION, Key, MessageType, RecordName

__all__ = ["SiteDirectory", "SiteInfo"]

log = logging.getLogger("fedseal.coordinator")


@dataclass(frozen=True)
class SiteInfo:
    """A site as it introduced itself."""

    name: str
    node_id: int
    train_examples: int
    test_examples: int
    adapter_size: int | None = None
    layout_digest: str | None = None


class SiteDirectory:
    """The identified sites of this run, by name."""

    def __init__(
        self,
        grid: Grid,
        *,
        identify_timeout_s: float = 120.0,
        identify_fields: dict | None = None,
    ) -> None:
        self._grid = grid
        self._fields = dict(identify_fields or {})
        self._timeout = identify_timeout_s
        self._by_name: dict[str, SiteInfo] = {}
        self._seen_nodes: set[int] = set()
        self._conflicts: set[str] = set()
        self._recovered: list[tuple[str, str, bytes]] = []

    @property
    def sites(self) -> dict[str, SiteInfo]:
        return dict(self._by_name)

    def node_ids(self) -> dict[str, int]:
        return {name: info.node_id for name, info in self._by_name.items()}

    def take_recovered(self) -> list[tuple[str, str, bytes]]:
        """(site, statement JSON, signature) that sites sent back with their identity since the
        last call: statements whose train reply may have been lost (a restarted site, a
        restarted coordinator). The registry records those it lacks."""
        taken, self._recovered = self._recovered, []
        return taken

    def connected(self) -> dict[str, SiteInfo]:
        """Identified sites whose node is still connected."""
        online = set(self._grid.get_node_ids())
        return {n: i for n, i in self._by_name.items() if i.node_id in online}

    def refresh(self) -> list[SiteInfo]:
        """Identify nodes that connected since the last call; return the newly known sites."""
        new_nodes = sorted(set(self._grid.get_node_ids()) - self._seen_nodes)
        if not new_nodes:
            return []
        messages = [
            Message(
                RecordDict(
                    {
                        RecordName.CONFIG: ConfigRecord(
                            {Key.PROTOCOL_VERSION: PROTOCOL_VERSION, **self._fields}
                        )
                    }
                ),
                dst_node_id=node,
                message_type=MessageType.IDENTIFY,
            )
            for node in new_nodes
        ]
        added: list[SiteInfo] = []
        for reply in self._grid.send_and_receive(messages, timeout=self._timeout):
            node = reply.metadata.src_node_id
            self._seen_nodes.add(node)
            if reply.has_error():
                log.warning("node %s could not identify itself: %s", node, reply.error.reason)
                continue
            try:
                check_size("identify", record_size(reply.content), DEFAULT_CONTROL_BYTES)
            except MessageTooLarge as exc:
                log.warning("node %s: identity refused: %s", node, exc)
                continue
            try:
                result = reply.content.config_records[RecordName.RESULT]
                info = SiteInfo(
                    name=str(result[Key.SITE]),
                    node_id=node,
                    train_examples=int(result[Key.TRAIN_EXAMPLES]),
                    test_examples=int(result[Key.TEST_EXAMPLES]),
                    adapter_size=_optional_int(result.get(Key.ADAPTER_SIZE)),
                    layout_digest=_optional_str(result.get(Key.LAYOUT_DIGEST)),
                )
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                log.warning("node %s sent a malformed identity: %s", node, exc)
                continue
            admitted = self._admit(info)
            if admitted:
                self._recovered.extend(_recovered(info.name, result))
            added.extend(admitted)
        return added

    def _admit(self, info: SiteInfo) -> list[SiteInfo]:
        if info.name in self._conflicts:
            return []
        current = self._by_name.get(info.name)
        if current is not None and current.node_id != info.node_id:
            if current.node_id in set(self._grid.get_node_ids()):
                log.error("two connected nodes claim site %s; excluding both", info.name)
                self._conflicts.add(info.name)
                del self._by_name[info.name]
                return []
            log.info("site %s reconnected as node %s", info.name, info.node_id)
        self._by_name[info.name] = info
        log.info("site %s joined (%d training records)", info.name, info.train_examples)
        return [info]

    def wait_for(
        self, count: int, timeout_s: float, *, report: Callable[[str], None] = log.info
    ) -> dict[str, SiteInfo]:
        """Identify nodes until `count` sites are connected or `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.refresh()
            connected = self.connected()
            if len(connected) >= count or time.monotonic() >= deadline:
                return connected
            report(f"waiting for sites: {len(connected)} of {count} connected")
            time.sleep(2.0)


def _optional_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def _recovered(site: str, result: ConfigRecord) -> list[tuple[str, str, bytes]]:
    """The kept statements an identity reply carries; malformed lists are ignored whole."""
    statements = result.get(Key.RECOVERED, [])
    signatures = result.get(Key.RECOVERED_SIGNATURES, [])
    if not isinstance(statements, list) or not isinstance(signatures, list):
        return []
    if len(statements) != len(signatures):
        log.warning(
            "site %s sent %d statements with %d signatures", site, len(statements), len(signatures)
        )
        return []
    return [
        (site, str(text), bytes(signature))
        for text, signature in zip(statements, signatures, strict=True)
        if isinstance(text, str) and isinstance(signature, bytes | bytearray)
    ]
