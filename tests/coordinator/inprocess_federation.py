"""A whole federation in one process: the real ServerApp logic against real site workers.

`InProcessGrid` stands in for Flower's Grid: it hands each message to the addressed site's real
`SiteService` (real model, real training, real TenSEAL, real signatures) and returns the reply as
a Flower Message. Every reply the coordinator handles passes through `replies_seen`, and hooks let
a test tamper with a site's reply or take a site offline at a given stage. The processes and
sockets of a real deployment are covered by tests/e2e; this harness makes protocol checks fast.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import tomli_w
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from trust_support import pin_everywhere

from fedseal.client.site_config import load_site_config
from fedseal.client.site_keys import create_site_keys
from fedseal.client.site_service import SiteService
from fedseal.contract.wire import MessageType, RecordName
from fedseal.coordinator import messaging, server_app
from fedseal.coordinator.run_settings import RunSettings, default_run_config
from fedseal.models.data import load_site_data, scenario_site_names
from fedseal.registry import Registry, open_registry
from fedseal.registry.ledger_key import create_ledger_key

__all__ = ["InProcessGrid", "Outcome", "run_inprocess", "virtual_time"]


@contextmanager
def virtual_time() -> Iterator[None]:
    """Stage timeouts on a virtual clock: waiting for a site that never answers (offline,
    killed) takes no real time, the coordinator's polling is otherwise unchanged."""
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    original = messaging.POLLING
    messaging.POLLING = dataclasses.replace(original, clock=lambda: now[0], sleep=sleep)
    try:
        yield
    finally:
        messaging.POLLING = original


Tamper = Callable[[str, str, dict[str, Any]], dict[str, Any] | None]


@dataclass
class InProcessGrid:
    """Delivers messages to site services in this process."""

    services: dict[str, SiteService]
    run_id: int
    tamper: Tamper | None = None
    offline_at: dict[str, str] = field(default_factory=dict)  # site -> message type
    replies_seen: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.node_of = {site: index + 101 for index, site in enumerate(sorted(self.services))}
        self.site_of = {node: site for site, node in self.node_of.items()}
        self.offline: set[str] = set()
        self.run = SimpleNamespace(run_id=self.run_id)
        self.queued: dict[str, Message] = {}
        self._message_ids = itertools.count(1)
        TaskIdentity.run_id = self.run_id
        TaskIdentity.node_id = 1
        TaskIdentity.task_id = 1

    def get_node_ids(self) -> Iterable[int]:
        return [node for site, node in self.node_of.items() if site not in self.offline]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Queue each message for its site, as the SuperLink does; the site handles it when
        the coordinator pulls its reply."""
        ids = []
        for message in messages:
            message_id = f"{self.run_id}-{next(self._message_ids)}"
            message.metadata.__dict__["_message_id"] = message_id  # as Flower's grid sets it
            self.queued[message_id] = message
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        """The replies to those of `message_ids` whose site answers (each is handled once)."""
        replies = []
        for message_id in message_ids:
            message = self.queued.pop(message_id, None)
            if message is None:
                continue
            reply = self.deliver(message)
            if reply is not None:
                replies.append(reply)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))

    def deliver(self, message: Message) -> Message | None:
        """The addressed site's reply, or None when it is offline (it never answers)."""
        site = self.site_of[message.metadata.dst_node_id]
        kind = message.metadata.message_type
        if self.offline_at.get(site) == kind:
            self.offline.add(site)
        if site in self.offline:
            return None
        reply = self._handle(site, kind, message)
        self.replies_seen.append(reply)
        return reply

    def _handle(self, site: str, kind: str, message: Message) -> Message:
        service = self.services[site]
        fields = dict(message.content.config_records[RecordName.CONFIG].items())
        try:
            result, metrics = service.handle(MessageType(kind), self.run_id, fields)
        except Exception as exc:
            return Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=message)
        if self.tamper is not None:
            changed = self.tamper(site, kind, dict(result))
            if changed is not None:
                result = changed
        records = RecordDict({RecordName.RESULT: ConfigRecord(result)})
        if metrics:
            records[RecordName.METRICS] = MetricRecord(metrics)
        return Message(records, reply_to=message)


@dataclass
class Outcome:
    registry: Registry
    grid: InProcessGrid
    run_id: int
    protocol: Any
    services: dict[str, SiteService]


def run_inprocess(
    tmp_path: Path,
    *,
    mode: str = "he+ss",
    sites: int = 3,
    rounds: int = 1,
    steps: int = 1,
    tamper: Tamper | None = None,
    offline_at: dict[str, str] | None = None,
    run_id: int = 4242,
    enroll: Iterable[str] | None = None,
    dp: dict[str, dict[str, Any]] | None = None,
    registry: Registry | None = None,
    grid_class: type[InProcessGrid] | None = None,
    resume_run: int = 0,
    run_config: dict[str, Any] | None = None,
    manifest_colluding: int = 0,
) -> Outcome:
    """Run `rounds` rounds of a tiny hospitals federation through the real round loop.

    `dp` gives sites a `[dp]` table (by site name). Calling it again with the same `tmp_path`
    and `registry` is a second run on the same sites' state (their DP history included);
    `resume_run` makes it continue that registry run. `grid_class` swaps in a grid that
    injects faults; `run_config` overrides run settings (`default_run_config`'s names); every
    site pins one manifest allowing `manifest_colluding` colluders (the run plans for 0).
    """
    names = scenario_site_names("hospitals", sites)
    services: dict[str, SiteService] = {}
    tmp_path.mkdir(parents=True, exist_ok=True)
    coordinator_state = tmp_path / "coordinator"
    if registry is None:
        ledger_key, _ = create_ledger_key(coordinator_state)
        registry = open_registry(f"sqlite:///{tmp_path / 'registry.db'}", ledger_key=ledger_key)
    all_keys = {}
    for site in names:
        state_dir = tmp_path / "state" / site
        path = tmp_path / "sites" / f"{site}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        document: dict[str, Any] = {
            "site": {"name": site, "state_dir": str(state_dir), "device": "cpu"},
            "coordinator": {"address": "127.0.0.1:1"},
            "data": {"source": "demo", "scenario": "hospitals", "num_sites": sites},
            "training": {"batch_size": 8, "max_eval_examples": 16},
            "secure_agg": {"modes": ["he", "he+ss", "plain"]},
        }
        if dp and site in dp:
            document["dp"] = dp[site]
        path.write_text(tomli_w.dumps(document), encoding="utf-8")
        keys, _ = create_site_keys(site, state_dir)
        if enroll is None or site in set(enroll):
            registry.enroll_site(site, keys.public().to_bundle())
        all_keys[site] = keys
        services[site] = SiteService(load_site_config(path), keys)
    pin_everywhere(
        all_keys, {s: tmp_path / "state" / s for s in all_keys}, max_colluding=manifest_colluding
    )
    _split, labels = load_site_data("hospitals", names[0], sites, 0)
    settings = RunSettings.from_run_config(
        default_run_config(
            database_url="sqlite://",
            scenario="hospitals",
            labels=list(labels),
            mode=mode,
            rounds=rounds,
            min_sites=sites,
            steps=steps,
            round_timeout=30.0,
            wait_for_sites=5.0,
            coordinator_state=str(coordinator_state),
            resume_run=resume_run,
            **{"max-colluding": 0, **(run_config or {})},
        )
    )
    grid = (grid_class or InProcessGrid)(
        services, run_id, tamper=tamper, offline_at=dict(offline_at or {})
    )
    captured: dict[str, Any] = {}
    original = server_app.protocol_for_mode

    def capture(selected: str) -> Any:
        captured["protocol"] = original(selected)
        return captured["protocol"]

    server_app.protocol_for_mode = capture
    try:
        with virtual_time():
            registry_run = server_app.drive_run(grid, settings, registry)
    finally:
        server_app.protocol_for_mode = original
    return Outcome(registry, grid, registry_run, captured.get("protocol"), services)
