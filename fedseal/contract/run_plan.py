"""What the coordinator asks every site to do in a run: the model, LoRA shape and round budget.

Read from the config record of each message, validated here so a malformed message is refused
with a clear reason rather than crashing deep inside training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fedseal.contract.errors import ContractError
from fedseal.contract.wire import Key

__all__ = ["AdapterKind", "RunPlan", "RunPlanError"]


class AdapterKind(StrEnum):
    """Which parameters train and travel (docs/privacy.md, "The training regime").

    `head`: a linear head over the frozen base model's cached sentence embeddings (the CPU
    default under DP); `lora`: LoRA on the attention layers plus the classification head, through
    the whole base model (the GPU default). The strings go on the wire: never rename.
    """

    HEAD = "head"
    LORA = "lora"


class RunPlanError(ContractError):
    """A message whose run plan is missing or out of range."""


@dataclass(frozen=True)
class RunPlan:
    """The model, per-round training budget and planned rounds every site of the run shares."""

    base_model: str
    labels: tuple[str, ...]
    lora_rank: int
    lora_alpha: float
    lora_dropout: float
    seed: int
    steps: int
    learning_rate: float
    max_length: int
    rounds: int
    adapter: AdapterKind = AdapterKind.LORA

    @classmethod
    def from_config(cls, config: Any) -> RunPlan:
        """Build from a Flower ConfigRecord (or any mapping)."""
        try:
            labels = json.loads(str(config[Key.LABELS]))
            plan = cls(
                base_model=str(config[Key.BASE_MODEL]),
                labels=tuple(str(label) for label in labels),
                lora_rank=int(config[Key.LORA_RANK]),
                lora_alpha=float(config[Key.LORA_ALPHA]),
                lora_dropout=float(config[Key.LORA_DROPOUT]),
                seed=int(config[Key.SEED]),
                steps=int(config[Key.STEPS]),
                learning_rate=float(config[Key.LEARNING_RATE]),
                max_length=int(config[Key.MAX_LENGTH]),
                rounds=int(config[Key.ROUNDS]),
                adapter=AdapterKind(str(config[Key.ADAPTER])),
            )
        except (KeyError, TypeError, ValueError, OverflowError, RecursionError) as exc:
            reason = "labels nested too deeply" if isinstance(exc, RecursionError) else exc
            raise RunPlanError(f"malformed run plan in message: {reason}") from None
        if not isinstance(labels, list):
            raise RunPlanError("malformed run plan in message: labels must be a JSON list")
        if len(plan.labels) < 2 or len(set(plan.labels)) != len(plan.labels):
            raise RunPlanError("a run needs at least two distinct labels")
        if not 1 <= plan.steps <= 1_000_000 or not 0 < plan.learning_rate < 1:
            raise RunPlanError("steps or learning rate out of range")
        if not 4 <= plan.max_length <= 512 or not 1 <= plan.lora_rank <= 256:
            raise RunPlanError("max_length or LoRA rank out of range")
        if not 1 <= plan.rounds <= 100_000:
            raise RunPlanError("planned rounds out of range")
        return plan

    def to_config(self) -> dict[str, Any]:
        """The config-record fields that carry this plan."""
        return {
            Key.BASE_MODEL: self.base_model,
            Key.LABELS: json.dumps(list(self.labels)),
            Key.LORA_RANK: self.lora_rank,
            Key.LORA_ALPHA: self.lora_alpha,
            Key.LORA_DROPOUT: self.lora_dropout,
            Key.SEED: self.seed,
            Key.STEPS: self.steps,
            Key.LEARNING_RATE: self.learning_rate,
            Key.MAX_LENGTH: self.max_length,
            Key.ROUNDS: self.rounds,
            Key.ADAPTER: str(self.adapter),
        }
