"""The model a run's adapter kind trains, and the site's records as that model reads them.

One place for both, so the site worker, the demo's single-site baselines and the benchmarks
build the same model and inputs for a run plan.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fedseal.client.training import FeatureInputs, TokenInputs, TrainingInputs
from fedseal.contract.run_plan import AdapterKind, RunPlan
from fedseal.models.data.types import TextExamples

__all__ = ["adapter_inputs", "build_adapter_model", "weight_decay_for"]


def build_adapter_model(plan: RunPlan, device: torch.device | str) -> tuple[torch.nn.Module, Any]:
    """(model, tokenizer) for the plan: the LoRA classifier with its tokenizer, or the head
    adapter (no tokenizer: it reads cached embeddings). Identical on every site."""
    if plan.adapter is AdapterKind.HEAD:
        from fedseal.models.features import build_feature_head

        return build_feature_head(plan.base_model, len(plan.labels), device), None
    from fedseal.models.base_models import load_tokenizer
    from fedseal.models.lora import LoraSettings, build_lora_classifier

    settings = LoraSettings(rank=plan.lora_rank, alpha=plan.lora_alpha, dropout=plan.lora_dropout)
    model = build_lora_classifier(plan.base_model, len(plan.labels), settings, device, plan.seed)
    return model, load_tokenizer(plan.base_model)


def adapter_inputs(
    plan: RunPlan,
    tokenizer: Any,
    examples: TextExamples,
    cache_dir: Path,
    device: torch.device | str,
    progress: Callable[[int, int], None] | None = None,
) -> TrainingInputs:
    """`examples` as the plan's model reads them: token ids (LoRA), or their embeddings by the
    frozen base model (head), computed once and kept in `cache_dir` (the site's own state)."""
    if plan.adapter is AdapterKind.HEAD:
        from fedseal.models.features import cached_features

        features = cached_features(
            cache_dir, plan.base_model, examples.texts, plan.max_length, device, progress
        )
        return FeatureInputs(features, examples.labels)
    return TokenInputs(tokenizer, examples, plan.max_length)


def weight_decay_for(plan: RunPlan) -> float:
    """AdamW's weight decay: none for the zero-initialised head, AdamW's default for LoRA."""
    return 0.0 if plan.adapter is AdapterKind.HEAD else 0.01
