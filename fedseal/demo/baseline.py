"""The federated model against each site alone, all scored on the same global test set.

The global test set is the union of the sites' own test records (the patients or customers the
federation serves). Each site alone trains in the federation's protocol, on its own training
records only: the same adapter, rounds, steps, batch and learning rate, once with DP at the run's
ε (σ calibrated the same way, for the same δ and accountant) and once without. A federation is
worth joining when its model beats every one of these.

The demo runs every site, so it reads each site's records and their cached embeddings from the
site's own state directory (the site computed them during the run); nothing here is sent
anywhere. These single-site models are comparisons: no site would train both, so their privacy
cost is not charged to the sites' budgets.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedseal.client.adapter_model import adapter_inputs, build_adapter_model, weight_decay_for
from fedseal.client.adapter_state import GlobalAdapterStore
from fedseal.client.training import EvalResult, TrainingInputs, TrainSettings
from fedseal.contract.run_plan import RunPlan
from fedseal.models.adapter import adapter_layout, adapter_to_vector, load_vector_into_adapter
from fedseal.models.data.types import SiteSplit
from fedseal.models.metrics import accuracy, roc_auc

__all__ = [
    "SiteInputs",
    "SoloDp",
    "SoloScore",
    "federated_score",
    "load_site_inputs",
    "train_solo",
]


@dataclass(frozen=True)
class SiteInputs:
    """One site's training and test records as the run's adapter reads them."""

    site: str
    train: TrainingInputs
    test: TrainingInputs


@dataclass(frozen=True)
class SoloDp:
    """The DP settings a site alone trains with: the run's ε, the site's δ, C and accountant."""

    epsilon: float
    delta: float
    max_grad_norm: float
    accountant: str


@dataclass(frozen=True)
class SoloScore:
    site: str
    steps: int
    dp: bool
    accuracy: float
    auc: float | None
    seconds: float
    noise_multiplier: float | None = None


def load_site_inputs(
    plan: RunPlan, split: SiteSplit, state_dir: Path, device: str, tokenizer: object
) -> SiteInputs:
    """The site's train and test inputs, from the embeddings cached in its state directory."""
    cache = state_dir / "cache"
    return SiteInputs(
        split.name,
        adapter_inputs(plan, tokenizer, split.train, cache, device),
        adapter_inputs(plan, tokenizer, split.test, cache, device),
    )


def _union_score(
    model: torch.nn.Module, tests: Sequence[TrainingInputs], device: str
) -> EvalResult:
    """Score on the union of the test sets: one evaluation of all logits together (AUC is not
    an average of per-site AUCs)."""
    labels, probs = [], []
    for part in tests:
        labels.append(part.labels.numpy())
        probs.append(torch.softmax(_logits(model, part, device), dim=-1).numpy())

    truth = np.concatenate(labels)
    p = np.concatenate(probs)
    return EvalResult(
        loss=float("nan"),
        accuracy=accuracy(truth, p.argmax(axis=1)),
        auc=roc_auc(truth, p),
        n=int(truth.size),
    )


@torch.no_grad()
def _logits(model: torch.nn.Module, inputs: TrainingInputs, device: str) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        chunks = []
        for start in range(0, inputs.n, 256):
            index = torch.arange(start, min(start + 256, inputs.n))
            chunks.append(inputs.logits(model, index, torch.device(device)).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def federated_score(
    plan: RunPlan,
    state_dir: Path,
    flower_run_id: int,
    expected_digest: str,
    tests: Sequence[TrainingInputs],
    device: str,
) -> EvalResult:
    """The run's final global adapter, as the site stored it, on the global test set.

    The stored adapter must be the one the registry recorded for the last completed round.
    """
    model, _tokenizer = build_adapter_model(plan, device)
    layout = adapter_layout(model)
    stored = GlobalAdapterStore(state_dir, flower_run_id).load(layout)
    if stored is None or stored[0].digest != expected_digest:
        raise ValueError(
            f"{state_dir.name} does not hold the run's final global adapter "
            f"(registry digest {expected_digest[:12]})"
        )
    load_vector_into_adapter(model, stored[1])
    return _union_score(model, tests, device)


def train_solo(
    *,
    plan: RunPlan,
    site: SiteInputs,
    tests: Sequence[TrainingInputs],
    rounds: int,
    batch_size: int,
    seed: int,
    device: str,
    dp: SoloDp | None,
    progress: Callable[[str], None] | None = None,
) -> SoloScore:
    """Train `site`'s adapter alone in the federation's protocol (`rounds` rounds of
    `plan.steps` steps, a fresh optimizer each round) and score it on the global test set."""
    from fedseal.client.dp.calibration import calibrate_noise
    from fedseal.client.dp.settings import DpSettings
    from fedseal.client.dp.trainer import poisson_sample_rate, train_dp_on
    from fedseal.client.training import train_on

    started = time.perf_counter()
    model, _tokenizer = build_adapter_model(plan, device)
    sigma: float | None = None
    settings: DpSettings | None = None
    if dp is not None:
        sigma = calibrate_noise(
            [],
            target_epsilon=dp.epsilon,
            delta=dp.delta,
            sample_rate=poisson_sample_rate(batch_size, site.train.n),
            steps=rounds * plan.steps,
            accountant=dp.accountant,
        )
        settings = DpSettings(
            epsilon=dp.epsilon,
            delta=dp.delta,
            target_epsilon=dp.epsilon,
            max_grad_norm=dp.max_grad_norm,
            accountant=dp.accountant,
        )
    vector = adapter_to_vector(model)
    moments = None  # kept across rounds, as a site worker keeps them
    for round_number in range(1, rounds + 1):
        load_vector_into_adapter(model, vector)
        train = TrainSettings(
            steps=plan.steps,
            batch_size=batch_size,
            learning_rate=plan.learning_rate,
            max_length=plan.max_length,
            seed=seed + round_number,
            weight_decay=weight_decay_for(plan),
        )
        if settings is None or sigma is None:
            result = train_on(model, site.train, train, device, optimizer_state=moments)
        else:
            result = train_dp_on(
                model, site.train, train, settings, sigma, device, optimizer_state=moments
            )
        moments = result.optimizer_state
        vector = adapter_to_vector(model)
        if progress is not None:
            progress(f"round {round_number} of {rounds}")
    score = _union_score(model, tests, device)
    return SoloScore(
        site=site.site,
        steps=rounds * plan.steps,
        dp=dp is not None,
        accuracy=score.accuracy,
        auc=score.auc,
        seconds=time.perf_counter() - started,
        noise_multiplier=sigma,
    )
