"""Submitting a fedseal run to a SuperLink with `flwr run`.

fedseal's ServerApp and ClientApp are installed with the package, so the Flower App that is
submitted is only a `pyproject.toml` naming those components and carrying the run's settings.
`flwr` reads its SuperLink connections from `$FLWR_HOME/config.toml`, written here too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

__all__ = [
    "CONNECTION_NAME",
    "SubmitError",
    "flower_run_status",
    "flwr_environment",
    "submit_run",
    "write_app",
    "write_flwr_home",
]

CONNECTION_NAME = "fedseal"
SERVER_APP = "fedseal.coordinator.server_app:app"
CLIENT_APP = "fedseal.client.client_app:app"


class SubmitError(RuntimeError):
    """`flwr run` did not accept the run."""


def write_app(folder: Path, run_config: Mapping[str, Any]) -> Path:
    """A Flower App folder whose run config is `run_config`."""
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {
            "name": "fedseal-run",
            "version": "1.0.0",
            "description": "A fedseal federated LoRA fine-tuning run",
            "license": "Apache-2.0",
            "dependencies": [],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "fedseal",
                    "components": {"serverapp": SERVER_APP, "clientapp": CLIENT_APP},
                    "config": dict(run_config),
                }
            }
        },
    }
    (folder / "pyproject.toml").write_text(tomli_w.dumps(document), encoding="utf-8")
    return folder


def write_flwr_home(
    folder: Path, address: str, *, insecure: bool = True, root_certificates: Path | None = None
) -> Path:
    """A FLWR_HOME with one connection, `fedseal`, to the SuperLink at `address`."""
    folder.mkdir(parents=True, exist_ok=True)
    connection: dict[str, Any] = {"address": address, "insecure": insecure}
    if root_certificates is not None:
        connection["root-certificates"] = str(root_certificates)
    document = {"superlink": {"default": CONNECTION_NAME, CONNECTION_NAME: connection}}
    (folder / "config.toml").write_text(tomli_w.dumps(document), encoding="utf-8")
    return folder


def flwr_environment(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"FLWR_HOME": str(flwr_home), "FLWR_TELEMETRY_ENABLED": "0"})
    return env


def _flwr_executable() -> str:
    return shutil.which("flwr") or str(Path(sys.executable).with_name("flwr"))


def submit_run(app_folder: Path, flwr_home: Path, *, timeout_s: float = 120.0) -> int:
    """Submit the app; returns Flower's run id (the run then proceeds on the SuperLink)."""
    command = [_flwr_executable(), "run", str(app_folder), CONNECTION_NAME, "--format", "json"]
    try:
        done = subprocess.run(
            command,
            env=flwr_environment(flwr_home),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SubmitError(f"`flwr run` did not answer within {timeout_s:g} s") from None
    output = done.stdout.strip()
    start = output.find("{")
    try:
        answer = json.loads(output[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        answer = {}
    if done.returncode != 0 or not answer.get("success", False) or "run-id" not in answer:
        detail = answer.get("error-message") or (done.stderr or output).strip().splitlines()[-1:]
        raise SubmitError(f"`flwr run` failed: {detail}")
    return int(answer["run-id"])


def flower_run_status(
    flower_run_id: int, flwr_home: Path, *, timeout_s: float = 30.0
) -> str | None:
    """Flower's own status text of a run (e.g. ``finished:failed``), or None if it is unknown.

    The registry, not this, is the truth about rounds; this only tells whether the ServerApp that
    drives a run is still alive (``running``) or has ended (``finished:...``).
    """
    command = [_flwr_executable(), "ls", "--run-id", str(flower_run_id), "--format", "json"]
    try:
        done = subprocess.run(
            command,
            env=flwr_environment(flwr_home),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        runs = json.loads(done.stdout[done.stdout.find("{") :]).get("runs", [])
    except (subprocess.TimeoutExpired, ValueError, OSError, AttributeError):
        return None
    return str(runs[0].get("status")) if runs and isinstance(runs[0], dict) else None
