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

from fedseal.contract.app_bundle import write_app
from fedseal.coordinator.errors import CoordinatorError
from fedseal.coordinator.stage_timing import ProgressWatch
from fedseal.registry import Registry, RunView

from .flower_app import SubmitError, submit_run

__all__ = [
    "CURRENT_RUN_FILE",
    "LaunchError",
    "LaunchTimeout",
    "RunLaunch",
    "current_run",
    "follow_run",
    "launch_run",
    "running_run",
    "submit_recorded",
]

CURRENT_RUN_FILE = "current-run.json"


class LaunchError(CoordinatorError, RuntimeError):
    """The run could not be submitted or followed; the message is one line."""


class LaunchTimeout(LaunchError):
    """`--wait` gave up: the run did not finish within the time allowed."""


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
    return RunLaunch(submit_recorded(state_dir, run_config, flwr_home), resumed=False)


def submit_recorded(state_dir: Path, run_config: Mapping[str, Any], flwr_home: Path) -> int:
    """Submit the run and record its Flower id in STATE/current-run.json (for restarts)."""
    app = write_app(state_dir / "app", run_config)
    try:
        flower_run_id = submit_run(app, flwr_home)
    except SubmitError as exc:
        raise LaunchError(str(exc)) from None
    path = state_dir / CURRENT_RUN_FILE
    path.write_text(json.dumps({"flower_run_id": flower_run_id}) + "\n", encoding="utf-8")
    return flower_run_id


def running_run(registry: Registry) -> RunView | None:
    """The newest registry run still `running`: one whose coordinator stopped mid-run."""
    running = [run for run in registry.list_runs() if str(run.status) == "running"]
    return running[0] if running else None


Resubmit = Callable[[int], int]
"""Submits a continuation of a registry run (its id); returns the new Flower run id."""


def follow_run(
    registry: Registry,
    flower_run_id: int,
    *,
    timeout_s: float,
    report: Callable[[str], None],
    poll_s: float = 2.0,
    flower_status: Callable[[int], str | None] | None = None,
    resubmit: Resubmit | None = None,
    max_resumes: int = 3,
    check_every_s: float = 30.0,
    summary_folder: Callable[[int], Path] | None = None,
) -> RunView:
    """Wait until the registry says the run finished, reporting each completed round.

    With `flower_status`, Flower's own view of the run is checked every `check_every_s`: a run
    that Flower says has ended while the registry still says `running` lost its coordinator
    (the SuperLink or the ServerApp died). With `resubmit`, such a run is continued from its last
    completed round, at most `max_resumes` times; without it, following it fails at once.
    With `summary_folder` (registry run id → its summary folder), the running round's stage and
    how many sites have answered it are reported as they change.
    """
    watch = ProgressWatch(report)
    deadline = time.monotonic() + timeout_s
    reported = -1
    announced = False
    resumes = 0
    last_check = time.monotonic()
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
            if summary_folder is not None:
                watch.check(summary_folder(run.id))
        now = time.monotonic()
        if flower_status is not None and now - last_check >= check_every_s:
            last_check = now
            status = flower_status(flower_run_id)
            if status is not None and status.startswith("finished"):
                run = _settled(registry, flower_run_id, poll_s)
                if run is not None and str(run.status) != "running":
                    continue  # it finished normally after all; reported on the next pass
                if run is None:
                    raise LaunchError(
                        f"Flower run {flower_run_id} ended ({status}) before the coordinator "
                        "recorded it in the registry; see the SuperLink's log"
                    )
                if resubmit is None or resumes >= max_resumes:
                    raise LaunchError(
                        f"run {run.id} lost its coordinator (Flower run {flower_run_id} "
                        f"{status}) after {run.rounds_completed} rounds; continue it with "
                        "`fl-coordinator start-run --resume`"
                    )
                resumes += 1
                report(
                    f"run {run.id} lost its coordinator (Flower run {flower_run_id} {status}) "
                    f"after {run.rounds_completed} rounds; continuing it (attempt {resumes} of "
                    f"{max_resumes})"
                )
                flower_run_id = resubmit(run.id)
                report(f"submitted Flower run {flower_run_id} to continue run {run.id}")
                announced, reported = False, -1
        if now > deadline:
            raise LaunchTimeout(f"Flower run {flower_run_id} did not finish within {timeout_s:g} s")
        time.sleep(poll_s)


def _settled(registry: Registry, flower_run_id: int, wait_s: float) -> RunView | None:
    """The registry's view of the run a moment after Flower said it ended (final writes land)."""
    time.sleep(wait_s)
    return registry.find_flower_run(flower_run_id)
