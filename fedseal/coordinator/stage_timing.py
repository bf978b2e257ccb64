"""Where a round's time goes, stage by stage, and which stage a running round is in.

Every stage the coordinator sends (`messaging.stream_stage`) is timed while a round is being
recorded (`recording`): the coordinator's wait (first message pushed → last reply, or the
timeout), the sites' own work on it (each reply's `work-seconds`, measured inside the site's
worker) and what remains of each site's reply time, Flower's share (delivery through the
SuperLink and SuperNode, and the ClientApp process the SuperNode starts per message).

The figures go to the run's summary in the coordinator's state directory,
`STATE/runs/<run>/stages.json` (one entry per round), and the stage a round is in to
`STATE/runs/<run>/progress.json`, rewritten as sites answer: `fl-coordinator status`,
`start-run --wait` and `fl-demo` read both. Nothing here is secret: stage names, site counts
and seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedseal.contract.wire import MessageType

__all__ = [
    "ProgressWatch",
    "RoundTimings",
    "StageClock",
    "StageTiming",
    "format_stages",
    "read_progress",
    "read_stage_summary",
    "recording",
    "run_folder",
]

_PROGRESS = "progress.json"
_STAGES = "stages.json"


@dataclass(frozen=True)
class StageTiming:
    """One stage of one round: the coordinator's wait split into the sites' work and Flower's."""

    stage: str  # MessageType.word
    sites: int
    answered: int
    wait_s: float  # first message pushed → last reply (or the stage's timeout)
    work_s: float  # the slowest answering site's own time on the stage
    flower_s: float  # median over answering sites of (reply time − the site's own work)

    @property
    def other_s(self) -> float:
        """The wait not explained by the slowest site's reply (polling, stragglers' gaps)."""
        return max(0.0, self.wait_s - self.work_s - self.flower_s)


@dataclass
class RoundTimings:
    """The stages of one round as they end, and where live progress is written."""

    round_number: int
    folder: Path | None
    stages: list[StageTiming] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def progress(self, stage: str, answered: int, sites: int) -> None:
        if self.folder is not None:
            _write_json(
                self.folder / _PROGRESS,
                {
                    "round": self.round_number,
                    "stage": stage,
                    "answered": answered,
                    "sites": sites,
                    "round_seconds": round(time.monotonic() - self.started, 1),
                    "updated": time.time(),
                },
            )

    def summary(self) -> dict[str, Any]:
        return {
            "round": self.round_number,
            "seconds": round(time.monotonic() - self.started, 3),
            "stages": [asdict(s) for s in self.stages],
        }


_current: ContextVar[RoundTimings | None] = ContextVar("fedseal_round_timings", default=None)


@contextlib.contextmanager
def recording(round_number: int, folder: Path | None) -> Iterator[RoundTimings]:
    """Time every stage sent inside the block; on exit, append the round to `stages.json`."""
    timings = RoundTimings(round_number, folder)
    token = _current.set(timings)
    try:
        yield timings
    finally:
        _current.reset(token)
        if folder is not None:
            rounds = [r for r in read_stage_summary(folder) if r.get("round") != round_number]
            _write_json(folder / _STAGES, [*rounds, timings.summary()])
            timings.progress("done", 0, 0)


class StageClock:
    """Times one stage: created when its messages are pushed, told of each reply."""

    def __init__(self, message_type: str, sites: int) -> None:
        self.stage = MessageType(message_type).word
        self.sites = sites
        self.started = time.monotonic()
        self.latency: dict[str, float] = {}
        self.work: dict[str, float] = {}
        self._round = _current.get()
        self._report(0)

    def answered(self, site: str, metrics: Mapping[str, float]) -> None:
        self.latency[site] = time.monotonic() - self.started
        work = metrics.get("work-seconds")
        if work is not None and 0 <= work <= self.latency[site]:
            self.work[site] = float(work)
        self._report(len(self.latency))

    def failed(self, site: str) -> None:
        """A reply that was refused still arrived: it counts as answered for progress."""
        self.latency.setdefault(site, time.monotonic() - self.started)
        self._report(len(self.latency))

    def ended(self) -> StageTiming:
        wait = time.monotonic() - self.started
        flower = [self.latency[s] - w for s, w in self.work.items()]
        timing = StageTiming(
            stage=self.stage,
            sites=self.sites,
            answered=len(self.latency),
            wait_s=round(wait, 3),
            work_s=round(max(self.work.values(), default=0.0), 3),
            flower_s=round(statistics.median(flower), 3) if flower else 0.0,
        )
        if self._round is not None:
            self._round.stages.append(timing)
        return timing

    def _report(self, answered: int) -> None:
        if self._round is not None:
            self._round.progress(self.stage, answered, self.sites)


def _write_json(path: Path, value: Any) -> None:
    """Atomically: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(value, out)
    os.replace(name, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None


def read_progress(folder: Path) -> dict[str, Any] | None:
    """The running round's stage and answers (None before the first stage or once finished)."""
    value = _read_json(folder / _PROGRESS)
    if not isinstance(value, dict) or value.get("stage") == "done":
        return None
    return value


def read_stage_summary(folder: Path) -> list[dict[str, Any]]:
    """The recorded rounds' stage timings, oldest first."""
    value = _read_json(folder / _STAGES)
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


def format_stages(rounds: list[dict[str, Any]]) -> str:
    """Per stage, the mean over rounds: wait, sites' work, Flower, other; then the round."""
    if not rounds:
        return "no stage timings recorded"
    by_stage: dict[str, list[dict[str, Any]]] = {}
    for entry in rounds:
        for stage in entry.get("stages", []):
            by_stage.setdefault(str(stage.get("stage")), []).append(stage)
    lines = [
        f"{'stage':<12} {'rounds':>6} {'wait s':>7} {'sites s':>7} {'Flower s':>8} {'other s':>7}"
    ]
    for name, entries in by_stage.items():
        wait = statistics.mean(float(e.get("wait_s", 0)) for e in entries)
        work = statistics.mean(float(e.get("work_s", 0)) for e in entries)
        flower = statistics.mean(float(e.get("flower_s", 0)) for e in entries)
        other = max(0.0, wait - work - flower)
        lines.append(
            f"{name:<12} {len(entries):>6} {wait:>7.2f} {work:>7.2f} {flower:>8.2f} {other:>7.2f}"
        )
    seconds = statistics.mean(float(r.get("seconds", 0)) for r in rounds)
    lines.append(f"{'round':<12} {len(rounds):>6} {seconds:>7.2f}")
    return "\n".join(lines)


def run_folder(state: str | Path, run_id: int) -> Path:
    """Where run `run_id`'s summary lives in the coordinator's state directory."""
    return Path(state) / "runs" / str(run_id)


class ProgressWatch:
    """Reports a running round's stage and answers each time they change (`report` a line)."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self.report = report
        self._last: tuple[Any, ...] | None = None

    def check(self, folder: Path) -> None:
        progress = read_progress(folder)
        if progress is None:
            return
        key = (progress.get("round"), progress.get("stage"), progress.get("answered"))
        if key != self._last:
            self._last = key
            self.report(
                f"round {progress.get('round')}: {progress.get('stage')}, "
                f"{progress.get('answered')} of {progress.get('sites')} sites answered "
                f"({float(progress.get('round_seconds', 0)):.0f} s into the round)"
            )
