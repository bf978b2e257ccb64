"""Starting the Flower SuperNode that carries a site's ClientApp.

The SuperNode starts a fresh ClientApp process per message; those processes inherit the
environment set here (offline model loading, one torch thread per site, telemetry off).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fedseal.client.site_config import SiteConfig

__all__ = [
    "CoordinatorUnreachable",
    "free_local_port",
    "run_supernode",
    "supernode_command",
    "supernode_environment",
    "wait_for_coordinator",
]


class CoordinatorUnreachable(ConnectionError):
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


def _toml_string(value: str) -> str:
    # A JSON string literal is a valid TOML basic string for the characters paths contain.
    return json.dumps(value)


def supernode_command(config: SiteConfig, runtime_port: int) -> list[str]:
    """The flower-supernode command line for this site."""
    executable = shutil.which("flower-supernode") or str(
        Path(sys.executable).with_name("flower-supernode")
    )
    node_config = f"site={_toml_string(config.site.name)} config={_toml_string(str(config.path))}"
    command = [
        executable,
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
    return command


def supernode_environment(config: SiteConfig) -> dict[str, str]:
    """Environment for the SuperNode and the ClientApp processes it starts."""
    env = dict(os.environ)
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


def run_supernode(config: SiteConfig) -> int:
    """Run the SuperNode in the foreground until it exits; Ctrl-C and SIGTERM stop it cleanly."""
    command = supernode_command(config, free_local_port())
    process = subprocess.Popen(command, env=supernode_environment(config))

    def _forward(signum: int, _frame: object) -> None:
        if process.poll() is None:
            process.send_signal(signum)

    previous = {sig: signal.signal(sig, _forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                return process.wait()
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
