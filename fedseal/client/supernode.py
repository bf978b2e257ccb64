"""Starting the Flower SuperNode that carries a site's ClientApp.

The SuperNode starts a fresh ClientApp process per message; those processes inherit the
environment set here (offline model loading, one torch thread per site, telemetry off). It runs
only fedseal's own ClientApp: any other app bundle is refused before Flower installs it
(`fedseal.client.app_pin`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from fedseal.cli_support import with_own_scripts
from fedseal.client.errors import SiteError
from fedseal.client.site_config import SiteConfig

__all__ = [
    "SUPERNODE_MODULE",
    "CoordinatorUnreachable",
    "SupernodeExit",
    "free_local_port",
    "run_supernode",
    "supernode_command",
    "supernode_environment",
    "wait_for_coordinator",
]


class CoordinatorUnreachable(SiteError, ConnectionError):
    """The coordinator's address did not accept a connection within the allowed time."""


def wait_for_coordinator(
    host: str,
    port: int,
    timeout_s: float,
    *,
    interval_s: float = 2.0,
    report: Callable[[str], None] = print,
) -> None:
    """Try to open a TCP connection until it works or `timeout_s` has passed.

    Reports each failed attempt so a person watching knows the site is waiting, not hung.
    """
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while True:
        attempt += 1
        try:
            with socket.create_connection((host, port), timeout=min(5.0, timeout_s)):
                return
        except OSError as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CoordinatorUnreachable(
                    f"coordinator at {host}:{port} unreachable after {timeout_s:g} s "
                    f"({attempt} attempts; last: {exc.strerror or exc})"
                ) from None
            report(
                f"waiting for coordinator at {host}:{port} (attempt {attempt}: "
                f"{exc.strerror or exc}; giving up in {remaining:.0f} s)"
            )
            time.sleep(min(interval_s, max(remaining, 0.0)))


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (for the SuperNode's local runtime API)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SUPERNODE_MODULE = "fedseal.client.supernode_main"
"""`python -m` this: flower-supernode running only fedseal's own app, from a warm executor."""


def _toml_string(value: str) -> str:
    # A JSON string literal is a valid TOML basic string for the characters paths contain.
    return json.dumps(value)


def supernode_command(config: SiteConfig, runtime_port: int) -> list[str]:
    """The SuperNode command line for this site: `flower-supernode`'s options, run through
    `fedseal.client.supernode_main`, so that the SuperNode runs only fedseal's own ClientApp,
    refuses any other app bundle the coordinator sends, and starts each ClientApp warm
    (docs/decisions.md)."""
    node_config = f"site={_toml_string(config.site.name)} config={_toml_string(str(config.path))}"
    command = [
        sys.executable,
        "-m",
        SUPERNODE_MODULE,
        "--superlink",
        config.coordinator.address,
        "--node-config",
        node_config,
        "--port",
        str(runtime_port),
        "--max-wait-time",
        str(int(config.coordinator.connect_timeout_s)),
    ]
    if config.coordinator.insecure:
        command.append("--insecure")
    else:
        assert config.coordinator.root_certificates is not None
        command += ["--root-certificates", str(config.coordinator.root_certificates)]
    if config.coordinator.auth_key is not None:
        command += ["--auth-supernode-private-key", str(config.coordinator.auth_key)]
    return command


def supernode_environment(config: SiteConfig) -> dict[str, str]:
    """Environment for the SuperNode and the ClientApp processes it starts."""
    env = with_own_scripts(dict(os.environ))
    threads = str(config.training.threads)
    env.update(
        {
            "FLWR_TELEMETRY_ENABLED": "0",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "FEDSEAL_TORCH_THREADS": threads,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.setdefault("FLWR_HOME", str(config.site.state_dir / "flwr-home"))
    return env


@dataclass
class SupernodeExit:
    """How the SuperNode ended, and whether the SuperLink refused to let this site in."""

    code: int
    refusal: str | None = None
    """Why the SuperLink refused the site (node authentication), or None."""


# Flower's API error codes that mean "this SuperNode is not let in" (flwr 1.41, HTTP 412):
# FLEET_NODE_ACTIVATION_FAILED (its key is not registered: never enrolled, or revoked) and the
# SuperLink's node authentication being on while the site presents no key.
_REFUSALS = {
    "[code: 2004]": "its SuperNode key is not registered with the federation (not enrolled yet, "
    "or revoked); ask the operator to enrol keys/node-auth.pub (docs/operations.md)",
    "[code: 2001]": "the federation requires SuperNode authentication; set [coordinator] "
    "auth_key to the key `fl-client enroll` made and have the operator enrol its .pub",
}
_FATAL_BANNER = "Exit Code:"


class _OutputRelay:
    """Copies the SuperNode's output to stderr, holding back Flower's fatal-exit banner.

    The banner is several lines meant for Flower developers; when it only says the site was
    refused, fl-client replaces it with one line of its own. Any other banner is passed on.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.held: list[str] = []
        self._stream = stream
        self._thread = threading.Thread(target=self._pump, name="supernode-output", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self._stream:
            if self.held or _FATAL_BANNER in line:
                self.held.append(line)
            else:
                sys.stderr.write(line)
                sys.stderr.flush()

    def finish(self) -> str | None:
        """Wait for the output to end; return the refusal reason, or pass the banner on."""
        self._thread.join(timeout=10)
        banner = "".join(self.held)
        for marker, reason in _REFUSALS.items():
            if marker in banner:
                return reason
        sys.stderr.write(banner)
        sys.stderr.flush()
        return None


def run_supernode(config: SiteConfig) -> SupernodeExit:
    """Run the SuperNode in the foreground until it exits; Ctrl-C and SIGTERM stop it cleanly."""
    command = supernode_command(config, free_local_port())
    process = subprocess.Popen(
        command,
        env=supernode_environment(config),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
    )
    assert process.stdout is not None
    relay = _OutputRelay(process.stdout)

    def _forward(signum: int, _frame: object) -> None:
        if process.poll() is None:
            process.send_signal(signum)

    previous = {sig: signal.signal(sig, _forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                code = process.wait()
                return SupernodeExit(code, relay.finish())
            except KeyboardInterrupt:
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
