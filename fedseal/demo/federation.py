"""A federation of real local processes: a SuperLink, one `fl-client` per site, one run.

fl-demo drives one of these; the end-to-end tests drive it too, so what the tests exercise is
exactly what the demo runs (including killing a site in the middle of a run).
"""

from __future__ import annotations

import shutil
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedseal.contract.app_bundle import write_app
from fedseal.contract.manifest import FederationManifest, ManifestMember, minority
from fedseal.contract.node_auth_key import NODE_AUTH_KEY, make_node_auth_key, public_key_path
from fedseal.coordinator.flower_app import (
    CONNECTION_NAME,
    flower_run_log,
    flower_run_status,
    flwr_environment,
    submit_run,
    write_flwr_home,
)
from fedseal.coordinator.node_auth import NodeAuthError, register_node, unregister_node
from fedseal.coordinator.pki import CA_CERT, SERVER_CERT, SERVER_KEY, init_pki
from fedseal.demo.processes import ProcessGroup
from fedseal.demo.site_configs import write_demo_site_configs
from fedseal.registry import Registry, RoundView, RunView
from fedseal.secure_agg.params import Mode

__all__ = ["FederationError", "LocalFederation", "free_port"]


class FederationError(RuntimeError):
    """The local federation could not start or its run could not finish."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def executable(name: str) -> str:
    """A console script of this environment (works whether or not it is on PATH)."""
    return shutil.which(name) or str(Path(sys.executable).with_name(name))


@dataclass
class LocalFederation:
    """One run of a demo scenario as local processes under `workdir`."""

    workdir: Path
    scenario: str
    sites: list[str]
    registry: Registry
    seed: int = 0
    port: int = 0
    batch_size: int | dict[str, int] = 32
    """Every site's `training.batch_size`, or one per site."""
    max_eval_examples: int = 0
    dp: dict[str, dict[str, Any]] | None = None
    """Each site's `[dp]` table for its config; None: the sites train without DP."""
    tls: bool = False
    """TLS and SuperNode authentication, as in the compose stack (docs/operations.md)."""
    mode: str = "he+ss"
    """The run's aggregation mode: every site's `[secure_agg]` allows it (and he+ss)."""
    max_colluding: int = -1
    """The manifest's collusion bound; -1: a minority, (sites - 1) // 2."""
    processes: ProcessGroup = field(init=False)
    flower_run_id: int | None = field(init=False, default=None)
    node_ids: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = self.workdir.resolve()
        self.port = self.port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.state_root = self.workdir / "state"
        self.pki_dir = self.workdir / "pki"
        ca: Path | None = None
        if self.tls:
            init_pki(self.pki_dir, names=("localhost", "127.0.0.1"))
            ca = self.pki_dir / CA_CERT
        self.flwr_home = write_flwr_home(
            self.workdir / "flwr", self.address, insecure=not self.tls, root_certificates=ca
        )
        self.processes = ProcessGroup(self.workdir / "logs")
        self.site_configs = write_demo_site_configs(
            self.workdir / "sites",
            sites=self.sites,
            scenario=self.scenario,
            seed=self.seed,
            coordinator=self.address,
            state_root=self.state_root,
            batch_size=self.batch_size,
            max_eval_examples=self.max_eval_examples,
            modes=None if self.mode == "he+ss" else ["he+ss", self.mode],
            dp=self.dp,
            root_certificates=ca,
        )

    def enroll_sites(self) -> None:
        """What the operator does for each site: `fl-client enroll`, then register its keys.

        With TLS, each site's SuperNode key is made too; it is registered with the SuperLink by
        `register_node_keys` once the SuperLink runs.
        """
        from fedseal.client.site_keys import create_site_keys

        members = {}
        for site in self.sites:
            keys, _made = create_site_keys(site, self.state_root / site)
            self.registry.enroll_site(site, keys.public().to_bundle())
            public = keys.public()
            members[site] = ManifestMember(site, public.identity, public.sealing)
            if self.tls:
                make_node_auth_key(self.node_auth_key(site))
        self.pin_manifest(members)

    def pin_manifest(self, members: dict[str, ManifestMember]) -> FederationManifest:
        """The demo plays every site's operator: write the manifest and pin it at each site
        (a real site reviews it and compares the fingerprint first: `fl-client trust`)."""
        from fedseal.client.trust import pin_manifest

        colluding = minority(len(members)) if self.max_colluding < 0 else self.max_colluding
        modes = frozenset({Mode.HE_SS, Mode(self.mode)})
        manifest = FederationManifest("demo", 1, members, modes, colluding)
        (self.workdir / "manifest.json").write_bytes(manifest.to_bytes())
        for site in members:
            pin_manifest(self.state_root / site, manifest)
        return manifest

    def node_auth_key(self, site: str) -> Path:
        """The site's SuperNode authentication key (private; `.pub` beside it)."""
        path = self.state_root / site / "keys" / NODE_AUTH_KEY
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def register_node_keys(self, sites: list[str] | None = None) -> dict[str, int]:
        """`flwr supernode register` each site's public key (TLS only); node ids by site."""
        node_ids: dict[str, int] = {}
        for site in self.sites if sites is None else sites:
            public = public_key_path(self.node_auth_key(site))
            try:
                node_ids[site] = register_node(public, CONNECTION_NAME, site, self.flwr_home)
            except NodeAuthError as exc:
                raise FederationError(f"site {site}: {exc}") from None
        self.node_ids.update(node_ids)
        return node_ids

    def revoke_site(self, site: str, reason: str) -> None:
        """What `fl-coordinator revoke` does: the registry event, then Flower forgets the key."""
        self.registry.revoke_site(site, reason=reason)
        if site in self.node_ids:
            try:
                unregister_node(self.node_ids.pop(site), CONNECTION_NAME, self.flwr_home)
            except NodeAuthError as exc:
                raise FederationError(f"site {site}: {exc}") from None

    def environment(self) -> dict[str, str]:
        env = flwr_environment(self.flwr_home)
        env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        return env

    def start_superlink(self, timeout_s: float = 60.0) -> None:
        superlink = self.processes.start(
            "superlink",
            [
                executable("flower-superlink"),
                *self._superlink_security(),
                "--disable-runtime-dependency-installation",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            env=self.environment(),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not superlink.alive():
                raise FederationError(f"the SuperLink exited: {superlink.log_tail(1)}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        raise FederationError(f"the SuperLink did not open port {self.port} in {timeout_s:g} s")

    def _superlink_security(self) -> list[str]:
        """TLS + node authentication + a state database (as in compose), or plain HTTP."""
        if not self.tls:
            return ["--insecure"]
        state = self.workdir / "superlink"
        state.mkdir(parents=True, exist_ok=True)
        return [
            f"--ssl-ca-certfile={self.pki_dir / CA_CERT}",
            f"--ssl-certfile={self.pki_dir / SERVER_CERT}",
            f"--ssl-keyfile={self.pki_dir / SERVER_KEY}",
            "--enable-supernode-auth",
            f"--database={state / 'state.db'}",
        ]

    def start_site(self, site: str) -> None:
        self.processes.start(
            f"site-{site}",
            [executable("fl-client"), "--site", site, "--config", str(self.site_configs[site])],
            env=self.environment(),
        )

    def stop_site(self, site: str, *, kill: bool = False) -> None:
        """Stop a site's fl-client and its SuperNode (SIGKILL when `kill`, as in a crash)."""
        import signal

        self.processes.stop(
            f"site-{site}",
            grace_s=0.0 if kill else 10.0,
            sig=signal.SIGKILL if kill else signal.SIGTERM,
        )

    def submit(self, run_config: Mapping[str, Any]) -> int:
        app_folder = write_app(self.workdir / "app", run_config)
        self.flower_run_id = submit_run(app_folder, self.flwr_home)
        return self.flower_run_id

    def run_record(self) -> RunView | None:
        """The registry's record of the submitted run, once the ServerApp has created it."""
        if self.flower_run_id is None:
            return None
        for run in self.registry.list_runs():
            if run.flower_run_id == str(self.flower_run_id):
                return run
        return None

    def flower_status(self) -> str | None:
        """Flower's own status text of the run (e.g. finished:failed), or None if unknown."""
        if self.flower_run_id is None:
            return None
        return flower_run_status(self.flower_run_id, self.flwr_home)

    def wait(
        self,
        timeout_s: float,
        *,
        on_rounds: Callable[[list[RoundView]], None] | None = None,
        on_note: Callable[[str], None] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> RunView:
        """Poll the registry until the run finishes; fail fast when the SuperLink or run dies.
        `on_progress` gets the registry run id on every poll (to report the running stage)."""
        started = time.monotonic()
        last_flower_check = started
        noted: set[str] = set()
        while True:
            run = self.run_record()
            if run is not None:
                if on_rounds is not None:
                    on_rounds(self.registry.rounds(run.id))
                if str(run.status) != "running":
                    return run
                if on_progress is not None:
                    on_progress(run.id)
            for child in self.processes.dead():
                if child.name == "superlink":
                    raise FederationError(f"the SuperLink exited: {child.log_tail(1)}")
                if child.name not in noted and on_note is not None:
                    noted.add(child.name)
                    on_note(f"{child.name} exited: {child.log_tail(1)}")
            now = time.monotonic()
            if now - last_flower_check > 15:
                last_flower_check = now
                status = self.flower_status()
                if status and status.startswith("finished"):
                    time.sleep(3)
                    run = self.run_record()
                    if run is None or str(run.status) == "running":
                        raise FederationError(
                            f"the coordinator's run ended ({status}) without completing in the "
                            f"registry; see {self.processes.log_dir}/superlink.log"
                        )
            if now - started > timeout_s:
                raise FederationError(f"the run did not finish within {timeout_s:g} s")
            time.sleep(1.0)

    def stop(self) -> None:
        """Save the coordinator's log beside the others, then stop every process."""
        self.save_coordinator_log()
        self.processes.stop_all()

    def save_coordinator_log(self) -> Path | None:
        """`logs/coordinator.log`: the ServerApp's output, which Flower keeps in the SuperLink
        (its process writes nothing to the SuperLink's log); None while there is none."""
        superlink = self.processes.children.get("superlink")
        if self.flower_run_id is None or superlink is None or not superlink.alive():
            return None
        text = flower_run_log(self.flower_run_id, self.flwr_home)
        if text is None:
            return None
        path = self.processes.log_dir / "coordinator.log"
        path.write_text(text, encoding="utf-8")
        return path
