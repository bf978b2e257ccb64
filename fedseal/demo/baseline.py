"""Each site's model trained alone, for comparison with the federated model.

The same base model, LoRA shape, seed and number of local steps as in the federation, on the
site's own training records only, scored on the same global test set. A federation is worth
running when its model beats every one of these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedseal.run_plan import RunPlan

__all__ = ["SoloScore", "train_solo"]


@dataclass(frozen=True)
class SoloScore:
    site: str
    steps: int
    accuracy: float
    auc: float | None
    seconds: float


def train_solo(
    *,
    site: str,
    scenario: str,
    num_sites: int,
    data_seed: int,
    plan: RunPlan,
    steps: int,
    batch_size: int,
    cache_dir: Path | None,
) -> SoloScore:
    """Train `site`'s adapter alone for `steps` steps and score it on the global test set."""
    import time

    from fedseal.client.site_service import derive_seed, resolve_device
    from fedseal.client.training import TrainSettings, evaluate, train_steps
    from fedseal.models.base_models import load_tokenizer
    from fedseal.models.data import load_site_data
    from fedseal.models.lora import LoraSettings, build_lora_classifier

    started = time.perf_counter()
    split, global_test, _labels = load_site_data(
        scenario, site, num_sites, data_seed, cache_dir=cache_dir
    )
    device = resolve_device("auto")
    model = build_lora_classifier(
        plan.base_model,
        len(plan.labels),
        LoraSettings(rank=plan.lora_rank, alpha=plan.lora_alpha, dropout=plan.lora_dropout),
        device,
        plan.seed,
    )
    tokenizer = load_tokenizer(plan.base_model)
    settings = TrainSettings(
        steps=steps,
        batch_size=batch_size,
        learning_rate=plan.learning_rate,
        max_length=plan.max_length,
        seed=derive_seed(plan.seed, site, "solo"),
    )
    train_steps(model, tokenizer, split.train, settings, device)
    score = evaluate(model, tokenizer, global_test, device, max_length=plan.max_length)
    return SoloScore(site, steps, score.accuracy, score.auc, time.perf_counter() - started)
