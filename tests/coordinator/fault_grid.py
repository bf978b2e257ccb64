"""An in-process grid whose sites can be killed at a protocol stage and restarted later.

A killed site handles the message it was killed at (its state on disk changes: round keys made,
budget charged, aggregate applied) and dies before its reply leaves, the worst moment for the
coordinator. A restarted site is a new `SiteService` from the same config and state directory
on a new Flower node, as a restarted `fl-client` is.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from flwr.app import Message
from inprocess_federation import InProcessGrid

from fedseal.client.site_config import load_site_config
from fedseal.client.site_keys import load_site_keys
from fedseal.client.site_service import SiteService
from fedseal.contract.wire import Key, RecordName

__all__ = ["CoordinatorKilled", "crashing_grid", "fault_grid"]


def fault_grid(kills: dict[str, tuple[int, str]], sites_dir: Path) -> type[InProcessGrid]:
    """A grid class killing `site` when it handles message type `kind` in round `number`
    (`kills[site] = (number, kind)`); `restart_dead()` brings the killed sites back."""

    class FaultGrid(InProcessGrid):
        def __post_init__(self) -> None:
            super().__post_init__()
            self.dead: set[str] = set()
            self.killed: list[tuple[str, int, str]] = []

        def deliver(self, message: Message) -> Message | None:
            site = self.site_of[message.metadata.dst_node_id]
            if site in self.dead:
                return None
            kind = message.metadata.message_type
            config = message.content.config_records[RecordName.CONFIG]
            number = int(config.get(Key.ROUND, 0))
            if kills.get(site) == (number, kind):
                self._handle(site, kind, message)  # handled, then killed before replying
                self.dead.add(site)
                self.killed.append((site, number, kind))
                return None
            return super().deliver(message)

        def get_node_ids(self) -> Iterable[int]:
            return [n for n in super().get_node_ids() if self.site_of[n] not in self.dead]

        def restart_dead(self) -> None:
            for site in sorted(self.dead):
                state_dir = self.services[site].config.site.state_dir
                self.services[site] = SiteService(
                    load_site_config(sites_dir / f"{site}.toml"), load_site_keys(site, state_dir)
                )
                node = max(self.site_of) + 1
                self.node_of[site] = node
                self.site_of[node] = site
            self.dead.clear()

    return FaultGrid


class CoordinatorKilled(BaseException):
    """Stands for SIGKILL: a BaseException, so no `except Exception` in the ServerApp records
    anything on the way out (the run stays `running`, the round in flight stays open)."""


def crashing_grid(number: int, kind: str) -> type[InProcessGrid]:
    """A grid whose coordinator dies just before it sends message type `kind` of round `number`
    (the replies it already holds die with it)."""

    class CrashingGrid(InProcessGrid):
        def push_messages(self, messages: Iterable[Message]) -> list[str]:
            messages = list(messages)
            for message in messages:
                config = message.content.config_records[RecordName.CONFIG]
                if (int(config.get(Key.ROUND, 0)), message.metadata.message_type) == (
                    number,
                    kind,
                ):
                    raise CoordinatorKilled(f"coordinator killed before {kind} of round {number}")
            return super().push_messages(messages)

    return CrashingGrid
