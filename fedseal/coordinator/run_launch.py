"""Submitting a run to the SuperLink and following it in the registry (`fl-coordinator start-run`).

The operator's coordinator job may be restarted at any moment (compose restarts it on failure), so
the Flower run id it submitted is kept in ``STATE/current-run.json`` before anything else happens:
a restarted job follows that run instead of submitting a second one, unless the registry already
says it finished.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .flower_app import SubmitError, submit_run, write_app
from .registry import Registry, RunView

__all__ = [
    "CURRENT_RUN_FILE",
    "LaunchError",
    "RunLaunch",
    "current_run",
    "follow_run",
    "launch_run",
]

CURRENT_RUN_FILE = "current-run.json"


class LaunchError(RuntimeError):
    """The run could not be submitted or followed; the message is one line."""


@dataclass(frozen=True)
class RunLaunch:
    """A run this coordinator submitted: Flower's id, and whether it was submitted just now."""

    flower_run_id: int
    resumed: bool


def current_run(state_dir: Path) -> int | None:
    """The Flower run id recorded by the last `start-run`, or None."""
    path = state_dir / CURRENT_RUN_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LaunchError(f"{path} is unreadable: {exc}") from None
    run_id = raw.get("flower_run_id") if isinstance(raw, dict) else None
    if not isinstance(run_id, int):
        raise LaunchError(f"{path} does not name a Flower run id")
    return run_id


def _unfinished(registry: Registry, flower_run_id: int) -> bool:
    run = registry.find_flower_run(flower_run_id)
    return run is None or str(run.status) == "running"


def launch_run(
    registry: Registry,
    state_dir: Path,
    run_config: Mapping[str, Any],
    flwr_home: Path,
    *,
    new: bool = False,
) -> RunLaunch:
    """Submit `run_config`, or return the recorded run when it has not finished (unless `new`)."""
    recorded = current_run(state_dir)
    if recorded is not None and not new and _unfinished(registry, recorded):
        return RunLaunch(recorded, resumed=True)
    app = write_app(state_dir / "app", run_config)
    try:
        flower_run_id = submit_run(app, flwr_home)
    except SubmitError as exc:
        raise LaunchError(str(exc)) from None
    path = state_dir / CURRENT_RUN_FILE
    path.write_text(json.dumps({"flower_run_id": flower_run_id}) + "\n", encoding="utf-8")
    return RunLaunch(flower_run_id, resumed=False)


def follow_run(
    registry: Registry,
    flower_run_id: int,
    *,
    timeout_s: float,
    report: Callable[[str], None],
    poll_s: float = 5.0,
) -> RunView:
    """Wait until the registry says the run finished, reporting each completed round."""
    deadline = time.monotonic() + timeout_s
    reported = -1
    announced = False
    while True:
        run = registry.find_flower_run(flower_run_id)
        if run is None and not announced:
            report(f"waiting for the coordinator to start Flower run {flower_run_id}")
            announced = True
        if run is not None:
            if run.rounds_completed != reported:
                reported = run.rounds_completed
                report(f"run {run.id}: {reported} of {run.rounds_planned} rounds completed")
            if str(run.status) != "running":
                return run
        if time.monotonic() > deadline:
            raise LaunchError(f"Flower run {flower_run_id} did not finish within {timeout_s:g} s")
        time.sleep(poll_s)
