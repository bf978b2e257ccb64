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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from fedseal.cli_support import with_own_scripts
from fedseal.coordinator.errors import CoordinatorError

__all__ = [
    "CONNECTION_NAME",
    "FlwrAnswer",
    "SubmitError",
    "flower_run_log",
    "flower_run_status",
    "flwr_environment",
    "run_flwr_json",
    "submit_run",
    "write_flwr_home",
]

CONNECTION_NAME = "fedseal"


class SubmitError(CoordinatorError, RuntimeError):
    """`flwr run` did not accept the run."""


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
    """The environment for Flower's commands and processes: this FLWR_HOME, telemetry off."""
    env = with_own_scripts(dict(os.environ))
    env.update({"FLWR_HOME": str(flwr_home), "FLWR_TELEMETRY_ENABLED": "0"})
    return env


def _flwr_executable() -> str:
    return shutil.which("flwr") or str(Path(sys.executable).with_name("flwr"))


@dataclass(frozen=True)
class FlwrAnswer:
    """What a `flwr ... --format json` command answered: its exit code, JSON and raw output."""

    returncode: int
    answer: dict[str, Any]
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and bool(self.answer.get("success", False))


def run_flwr_json(args: list[str], flwr_home: Path, *, timeout_s: float) -> FlwrAnswer:
    """Run `flwr ARGS --format json` against FLWR_HOME; the JSON it printed (flwr prints other
    lines before it). Raises subprocess.TimeoutExpired and OSError for the caller to word."""
    done = subprocess.run(
        [_flwr_executable(), *args, "--format", "json"],
        env=flwr_environment(flwr_home),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    output = done.stdout.strip()
    start = output.find("{")
    answer: dict[str, Any] = {}
    if start >= 0:
        try:
            parsed = json.loads(output[start:])
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            answer = parsed
    return FlwrAnswer(done.returncode, answer, output, done.stderr)


def submit_run(app_folder: Path, flwr_home: Path, *, timeout_s: float = 120.0) -> int:
    """Submit the app; returns Flower's run id (the run then proceeds on the SuperLink)."""
    try:
        done = run_flwr_json(
            ["run", str(app_folder), CONNECTION_NAME], flwr_home, timeout_s=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise SubmitError(f"`flwr run` did not answer within {timeout_s:g} s") from None
    except OSError as exc:
        raise SubmitError(f"cannot run `flwr run`: {exc}") from None
    if not done.ok or "run-id" not in done.answer:
        detail = (
            done.answer.get("error-message")
            or (done.stderr or done.stdout).strip().splitlines()[-1:]
        )
        raise SubmitError(f"`flwr run` failed: {detail}")
    return int(done.answer["run-id"])


def flower_run_status(
    flower_run_id: int, flwr_home: Path, *, timeout_s: float = 30.0
) -> str | None:
    """Flower's own status text of a run (e.g. ``finished:failed``), or None if it is unknown.

    The registry, not this, is the truth about rounds; this only tells whether the ServerApp that
    drives a run is still alive (``running``) or has ended (``finished:...``).
    """
    try:
        done = run_flwr_json(["ls", "--run-id", str(flower_run_id)], flwr_home, timeout_s=timeout_s)
    except (subprocess.TimeoutExpired, OSError):
        return None
    runs = done.answer.get("runs")
    if not isinstance(runs, list) or not runs or not isinstance(runs[0], dict):
        return None
    return str(runs[0].get("status"))


def flower_run_log(flower_run_id: int, flwr_home: Path, *, timeout_s: float = 30.0) -> str | None:
    """The ServerApp's log of a run as the SuperLink holds it (`flwr log RUN --show`), or None
    if the SuperLink did not give it: the coordinator's own lines live only there."""
    try:
        done = subprocess.run(
            [_flwr_executable(), "log", str(flower_run_id), CONNECTION_NAME, "--show"],
            env=flwr_environment(flwr_home),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (subprocess.TimeoutExpired, OSError):
        return None
    return done.stdout if done.returncode == 0 and done.stdout.strip() else None
