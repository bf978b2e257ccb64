"""What a site knows of a run once it has applied one of its aggregates, kept beside the run's
global adapter: the run plan, the mode, and each applied round's digest and scores.

The global adapter file holds numbers and their layout only; to export it in the ecosystem's
format (`export`) the site must also know the base model, labels and LoRA shape it was trained
for, how many rounds were planned, and what the apply messages said about the round. The record
is rewritten (atomically) after every applied aggregate; it holds nothing secret.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedseal.contract.run_plan import RunPlan, RunPlanError
from fedseal.contract.wire import Key

__all__ = ["AppliedRound", "RunRecord", "RunRecords", "keep_applied_safely"]

log = logging.getLogger("fedseal.client")

_FILE = "run.json"
_FORMAT = "fedseal-site-run/1"


_SCORES = (
    Key.EVAL_ACCURACY,
    Key.EVAL_AUC,
    Key.EVAL_EXAMPLES,
    Key.GLOBAL_ACCURACY,
    Key.GLOBAL_AUC,
    Key.GLOBAL_EXAMPLES,
)

Fields = dict[str, Any]


@dataclass(frozen=True)
class AppliedRound:
    """One round whose aggregate the site applied, as the apply message and reply said.

    `sampled` lists the sites the round sampled when the message names them (the he modes);
    `scores` are the site's metrics of the new global adapter (its own test records, and the
    global test set when it was asked to score it).
    """

    number: int
    digest: str
    sampled: tuple[str, ...]
    scores: dict[str, float]


@dataclass(frozen=True)
class RunRecord:
    """A run seen from one site: the Flower run id it is kept under, the registry's run id the
    coordinator named, the plan, the mode and the applied rounds (oldest first)."""

    run_id: str
    registry_run_id: int | None
    plan: RunPlan
    mode: str
    rounds: tuple[AppliedRound, ...]
    updated: float

    @property
    def last(self) -> AppliedRound:
        return self.rounds[-1]


class RunRecords:
    """`<state_dir>/runs/<flower run>/run.json`, one per run the site applied an aggregate of."""

    def __init__(self, state_dir: Path) -> None:
        self.folder = Path(state_dir) / "runs"

    def path(self, run_id: int | str) -> Path:
        return self.folder / str(run_id) / _FILE

    def keep_applied(
        self,
        run_id: int | str,
        fields: Mapping[str, Any],
        result: Mapping[str, Any],
        metrics: Mapping[str, Any],
    ) -> RunRecord:
        """Add the round an apply message asked for and its reply confirmed."""
        plan = RunPlan.from_config(fields)
        previous = self.load(run_id)
        kept = [] if previous is None else list(previous.rounds)
        number = int(result[Key.APPLIED_ROUND])
        sampled = fields.get(Key.SAMPLED)
        applied = AppliedRound(
            number=number,
            digest=str(result[Key.ADAPTER_DIGEST]),
            sampled=tuple(sorted(str(s) for s in json.loads(sampled))) if sampled else (),
            scores={str(k): float(metrics[k]) for k in _SCORES if k in metrics},
        )
        rounds = tuple([r for r in kept if r.number != number] + [applied])
        registry_run = fields.get(Key.RUN_ID)
        record = RunRecord(
            run_id=str(run_id),
            registry_run_id=None if registry_run is None else int(registry_run),
            plan=plan,
            mode=str(fields.get(Key.MODE, "")),
            rounds=tuple(sorted(rounds, key=lambda r: r.number)),
            updated=time.time(),
        )
        self._write(record)
        return record

    def load(self, run_id: int | str) -> RunRecord | None:
        """The run's record, None when the site applied no aggregate of it (or kept none)."""
        path = self.path(run_id)
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("format") != _FORMAT:
                raise ValueError(f"not a {_FORMAT} file")
            return RunRecord(
                run_id=str(raw["run_id"]),
                registry_run_id=raw.get("registry_run_id"),
                plan=RunPlan.from_config(raw["plan"]),
                mode=str(raw["mode"]),
                rounds=tuple(
                    AppliedRound(
                        number=int(r["number"]),
                        digest=str(r["digest"]),
                        sampled=tuple(str(s) for s in r["sampled"]),
                        scores={str(k): float(v) for k, v in r["scores"].items()},
                    )
                    for r in raw["rounds"]
                ),
                updated=float(raw["updated"]),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RunPlanError) as exc:
            raise ValueError(f"run record {path} is damaged: {exc}") from None

    def runs(self) -> list[str]:
        """Run ids with a record, the most recently applied last."""
        found: list[tuple[float, str]] = []
        for path in self.folder.glob(f"*/{_FILE}") if self.folder.is_dir() else []:
            try:
                record = self.load(path.parent.name)
            except ValueError:
                continue
            if record is not None and record.rounds:
                found.append((record.updated, record.run_id))
        return [run for _, run in sorted(found)]

    def _write(self, record: RunRecord) -> None:
        path = self.path(record.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "format": _FORMAT,
            "run_id": record.run_id,
            "registry_run_id": record.registry_run_id,
            "plan": record.plan.to_config(),
            "mode": record.mode,
            "rounds": [
                {
                    "number": r.number,
                    "digest": r.digest,
                    "sampled": list(r.sampled),
                    "scores": r.scores,
                }
                for r in record.rounds
            ],
            "updated": record.updated,
        }
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)


def keep_applied_safely(
    state_dir: Path, run_id: int, fields: Fields, result: Fields, metrics: Fields
) -> None:
    """Record an applied aggregate's run in `RunRecords` for a later export.

    A record that cannot be written is logged and the round goes on: the aggregate is applied
    either way, and only a later export needs the record.
    """
    try:
        RunRecords(state_dir).keep_applied(run_id, fields, result, metrics)
    except (OSError, ValueError, KeyError, TypeError, RunPlanError) as exc:
        log.warning("run %s: the run record for export was not kept: %s", run_id, exc)
