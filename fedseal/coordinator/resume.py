"""Continuing a run whose coordinator (ServerApp, SuperLink) was stopped mid-run.

The registry is the truth about where the run was. A restarted coordinator is a new Flower run,
and every ledger statement is bound to its Flower run id, so the continuation is a new registry
run that names the one it continues (`resumes_run` in its config); the interrupted run is finished
as `aborted` (a chained `run_finished` event naming its successor) and the round that was in
flight is closed as `aborted`. Round numbers continue after the last one the interrupted run
started, up to the planned number, so a site is never asked to train a round it was already
charged for, and the sites' DP calibration still covers the planned rounds. The sites hold the
global adapter: they continue from the one with the digest of the last completed round.

Statements that sites signed for the interrupted round, whose replies were lost with the
coordinator, come back with the sites' identities and are recorded for the interrupted run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from fedseal.coordinator.errors import CoordinatorError
from fedseal.coordinator.protocols.base import PRIVACY_FIELDS
from fedseal.coordinator.run_settings import RunSettings
from fedseal.registry import (
    RecordNotFound,
    Registry,
    RegistryError,
    RegistryUnavailable,
    RoundStatus,
    RunStatus,
)

__all__ = ["PLAN_KEYS", "ResumeError", "Resumption", "plan_resume", "record_recovered"]

log = logging.getLogger("fedseal.coordinator")

PLAN_KEYS = (
    "scenario",
    "mode",
    "rounds",
    "base_model",
    "adapter",
    "labels",
    "lora_rank",
    "lora_alpha",
    "steps",
    "learning_rate",
    "max_length",
    "seed",
    "clip",
    "sparse_above",
    "neighbours",
)
"""Settings a continuation must share with the run it continues (the model, its training and
the shape of its secure aggregation)."""

_MAX_LINEAGE = 1000


class ResumeError(CoordinatorError, RuntimeError):
    """The named run cannot be continued; the message says why."""


@dataclass(frozen=True)
class Resumption:
    """Where an interrupted run stands, read from the registry."""

    previous_run: int
    first_round: int  # the continuation's first round number
    expected_digest: str | None  # the global adapter after the last completed round
    open_rounds: tuple[int, ...]  # round ids the interrupted run left running
    flower_runs: dict[str, int]  # Flower run id -> registry run id, the whole lineage


def plan_resume(registry: Registry, run_id: int, settings: RunSettings) -> Resumption:
    """Check that `run_id` can be continued with `settings`, and where it continues."""
    try:
        run = registry.get_run(run_id)
    except RecordNotFound:
        raise ResumeError(f"no run {run_id} in the registry to resume") from None
    if run.status is not RunStatus.RUNNING:
        raise ResumeError(
            f"run {run_id} is {run.status}: only a run whose coordinator stopped while it was "
            "running can be resumed"
        )
    mine = settings.public_summary()
    different = [k for k in PLAN_KEYS if k in run.config and run.config[k] != mine.get(k)]
    if different:
        raise ResumeError(
            f"run {run_id} was started with other settings ({', '.join(different)}); resume it "
            "with the same ones"
        )
    rounds = registry.rounds(run_id)
    first = max((r.number for r in rounds), default=int(run.config.get("first_round", 1)) - 1) + 1
    if first > settings.rounds:
        raise ResumeError(f"run {run_id} has no planned round left after round {first - 1}")
    flower_runs: dict[str, int] = {}
    expected: str | None = None
    current, seen = run, 0
    while True:
        if current.flower_run_id is not None:
            flower_runs[current.flower_run_id] = current.id
        if expected is None:
            done = [r for r in registry.rounds(current.id) if r.status == RoundStatus.COMPLETED]
            expected = done[-1].global_digest if done else None
        previous = current.config.get("resumes_run")
        seen += 1
        if not isinstance(previous, int) or seen >= _MAX_LINEAGE:
            break
        current = registry.get_run(previous)
    return Resumption(
        previous_run=run_id,
        first_round=first,
        expected_digest=expected,
        open_rounds=tuple(r.id for r in rounds if r.status == RoundStatus.RUNNING),
        flower_runs=flower_runs,
    )


def record_recovered(
    registry: Registry, statements: list[tuple[str, str, bytes]], runs: dict[str, int]
) -> int:
    """Record the kept statements sites sent back that the ledger lacks; returns how many were
    offered for a run of `runs` (recording the same statement again writes nothing)."""
    offered = 0
    for site, text, signature in statements:
        try:
            statement = json.loads(text)
            if not isinstance(statement, dict) or statement.get("site") != site:
                raise ValueError("a statement about another site")
            run_id = runs.get(str(statement.get("flower_run_id")))
            if run_id is None:
                continue
            fields = {key: statement[key] for key in PRIVACY_FIELDS}
            offered += 1
            registry.record_privacy(
                run_id=run_id,
                round_number=int(statement["round_number"]),
                site=site,
                site_signature=signature,
                **fields,
            )
        except RegistryUnavailable:
            raise
        except (RegistryError, KeyError, TypeError, ValueError) as exc:
            log.error("site %s: a kept privacy statement was refused: %s", site, exc)
    return offered
