"""DP-SGD on a site's adapter: Poisson sampling, per-example clipping, Gaussian noise.

The head adapter on cached embeddings clips in closed form (`head_clipping`, no per-example
gradient tensors: a DP step costs about what a plain one does). Any other adapter goes through
Opacus: its `PrivacyEngine.make_private` wraps the PEFT model for this call only (its hooks are
removed at the end, so the next round can wrap the same model again) and turns the optimizer into
a `DPOptimizer`. Only LoRA matrices and the head are trainable, so only they get per-example
gradients; the frozen base is never touched. The engine's own accountant is not used: the event
this call released is returned, and the site's `AccountantStore` composes it with everything else.

Batch membership and noise come from a `SecureRandom` (`secure_noise`: a ChaCha20 keystream
under a key drawn from the OS for every call), never from a torch generator: on the Opacus path
its `DPOptimizer` is replaced by `_SecureNoiseDPOptimizer`, which adds the same noise from it.
The round's public seed (which the coordinator knows) only drives dropout: a sampler or noise
seeded from it would let the coordinator subtract the noise and see which records were used.
"""

from __future__ import annotations

import copy
import math
import secrets
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from transformers import PreTrainedTokenizerBase

from fedseal.client.training import (
    FeatureInputs,
    TokenInputs,
    TrainingInputs,
    TrainSettings,
    adamw_on_trainable,
    rng_devices,
)
from fedseal.models.data.types import TextExamples
from fedseal.models.features import FeatureHead
from fedseal.privacy.events import DpEvent

from .head_clipping import clipped_head_gradient_sum, has_closed_form
from .secure_noise import SecureRandom
from .settings import DpSettings

__all__ = ["DpTrainResult", "poisson_sample_rate", "train_dp_on", "train_steps_dp"]


@dataclass(frozen=True)
class DpTrainResult:
    """What one call to `train_steps_dp` did, and the privacy event it released.

    `mean_loss` is over the non-empty batches (NaN if every batch was empty); `steps` counts
    every noisy step, empty batches included, and equals `event.steps`. `release_id` is random
    per call: pass it to `AccountantStore.record`, which then refuses a second training of a
    round already charged.
    """

    steps: int
    mean_loss: float
    examples_seen: int
    seconds: float
    event: DpEvent
    empty_batches: int
    release_id: str
    optimizer_state: dict[str, Any] | None = None
    """The optimizer's moments after the last step: computed from the released noisy gradients
    only (post-processing), so a site may keep them for its next round at no privacy cost."""


def poisson_sample_rate(batch_size: int, num_records: int) -> float:
    """q = batch_size / n (capped at 1): each record joins each batch with probability q."""
    if num_records < 1 or batch_size < 1:
        raise ValueError("batch_size and num_records must be >= 1")
    return min(1.0, batch_size / num_records)


def _poisson_batch(n: int, sample_rate: float, rng: SecureRandom) -> torch.Tensor:
    """Indices of the records that join this batch, each independently with probability q."""
    return torch.nonzero(rng.bernoulli(n, sample_rate)).flatten()


class _SecureNoiseDPOptimizer(DPOptimizer):
    """Opacus' flat-clipping `DPOptimizer` with its Gaussian noise drawn from a `SecureRandom`.

    `add_noise` is Opacus' own (p.grad = summed_grad + N(0, (σC)²), with its processed-flag
    checks); clipping, the mean over the expected batch and the step are inherited unchanged.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, rng: SecureRandom, **kwargs: Any):
        super().__init__(optimizer, **kwargs)
        self.rng = rng

    def add_noise(self) -> None:
        std = self.noise_multiplier * self.max_grad_norm
        for p in self.params:
            _check_processed_flag(p.summed_grad)
            summed = p.summed_grad
            noise = self.rng.normal(summed.shape, std, summed.device, summed.dtype)
            p.grad = (summed + noise).view_as(p)
            _mark_as_processed(p.summed_grad)


def train_steps_dp(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: TextExamples,
    settings: TrainSettings,
    dp: DpSettings,
    noise_multiplier: float,
    device: torch.device | str,
) -> DpTrainResult:
    """`train_dp_on` for a LoRA classifier over texts."""
    if len(examples) == 0:
        raise ValueError("no training examples")
    inputs = TokenInputs(tokenizer, examples, settings.max_length)
    return train_dp_on(model, inputs, settings, dp, noise_multiplier, device)


def train_dp_on(
    model: torch.nn.Module,
    inputs: TrainingInputs,
    settings: TrainSettings,
    dp: DpSettings,
    noise_multiplier: float,
    device: torch.device | str,
    optimizer_state: dict[str, Any] | None = None,
) -> DpTrainResult:
    """Run `settings.steps` DP-SGD steps (AdamW on the noisy gradient) on the trainable parameters.

    Every step is charged, including steps whose Poisson batch came out empty: those skip the
    forward pass but still add noise and still step the optimizer, as the accounting assumes.
    The model must have been moved to `device` before PEFT wrapped it (opacus #820); a trainable
    tensor that did not change raises `RuntimeError` rather than passing silently.
    """
    n = inputs.n
    if n == 0:
        raise ValueError("no training examples")
    if not dp.enabled:
        raise ValueError("DP is disabled in these settings; use train_steps")
    event = DpEvent(noise_multiplier, poisson_sample_rate(settings.batch_size, n), settings.steps)
    params, optimizer = adamw_on_trainable(model, settings, optimizer_state)
    before = [p.detach().clone() for p in params]
    step = _closed_form_steps if has_closed_form(model, inputs) else _opacus_steps
    # batch membership and noise from a SecureRandom: a fresh key for every call
    steps = _DpSteps(model, inputs, settings, dp, event, optimizer, torch.device(device))
    start = time.perf_counter()
    losses, seen, empty = step(steps, SecureRandom())
    seconds = time.perf_counter() - start
    stuck = sum(bool(torch.equal(old, p.detach())) for old, p in zip(before, params, strict=True))
    if stuck:
        raise RuntimeError(
            f"{stuck} of {len(params)} trainable tensors did not change under DP-SGD: was the "
            "model moved to its device after PEFT wrapped it (opacus #820)?"
        )
    return DpTrainResult(
        steps=event.steps,
        mean_loss=float(np.mean(losses)) if losses else math.nan,
        examples_seen=seen,
        seconds=seconds,
        event=event,
        empty_batches=empty,
        release_id=secrets.token_hex(16),
        optimizer_state=copy.deepcopy(optimizer.state_dict()),
    )


_StepLog = tuple[list[float], int, int]
"""The non-empty batches' losses, the records seen, the empty batches."""


@dataclass(frozen=True)
class _DpSteps:
    """What both ways of taking the call's DP-SGD steps read."""

    model: torch.nn.Module
    inputs: TrainingInputs
    settings: TrainSettings
    dp: DpSettings
    event: DpEvent
    optimizer: torch.optim.Optimizer
    target: torch.device


def _opacus_steps(steps: _DpSteps, rng: SecureRandom) -> _StepLog:
    """DP-SGD through Opacus' per-example gradient hooks (any adapter, LoRA included)."""
    model, inputs, settings, dp = steps.model, steps.inputs, steps.settings, steps.dp
    event, optimizer, target = steps.event, steps.optimizer, steps.target
    n = inputs.n
    params = [p for p in model.parameters() if p.requires_grad]
    # make_private needs a loader for its bookkeeping only; batches are sampled below with q.
    index_loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.arange(n)), batch_size=settings.batch_size
    )
    was_training = model.training
    model.train()  # Opacus refuses to wrap a model in eval mode
    try:
        with warnings.catch_warnings():
            # about torch's generator, which draws none of this call's noise (see below)
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant="rdp")
            private_model, engine_optimizer, _ = engine.make_private(
                module=model,
                optimizer=optimizer,
                data_loader=index_loader,
                noise_multiplier=event.noise_multiplier,
                max_grad_norm=dp.max_grad_norm,
                poisson_sampling=False,
                grad_sample_mode="hooks",
            )
        if type(engine_optimizer) is not DPOptimizer:
            raise TypeError(f"Opacus returned a {type(engine_optimizer).__name__}")
    except BaseException:
        model.train(was_training)
        raise
    # The engine's optimizer would draw its noise from torch's generator: the same optimizer,
    # noise from `rng`. The mean over a Poisson batch divides by its EXPECTED size q·n, not the
    # drawn size. (The engine's accountant hook is dropped with it: that accountant is unused.)
    dp_optimizer = _SecureNoiseDPOptimizer(
        engine_optimizer.original_optimizer,
        rng=rng,
        noise_multiplier=event.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        expected_batch_size=event.sample_rate * n,
        loss_reduction=engine_optimizer.loss_reduction,
    )
    losses: list[float] = []
    seen = 0
    empty = 0
    try:
        with torch.random.fork_rng(devices=rng_devices(target)), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            torch.manual_seed(settings.seed)  # dropout only
            for _ in range(event.steps):
                chosen = _poisson_batch(n, event.sample_rate, rng)
                dp_optimizer.zero_grad(set_to_none=True)
                if chosen.numel() == 0:
                    # HF BERT cannot run an empty batch: give the optimizer empty per-example
                    # gradients so it still adds noise and steps.
                    for p in params:
                        p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
                    empty += 1
                else:
                    loss = inputs.loss(private_model, chosen, target)
                    loss.backward()
                    losses.append(float(loss.detach()))
                    seen += int(chosen.numel())
                dp_optimizer.step()
    finally:
        dp_optimizer.zero_grad(set_to_none=True)
        private_model._close()  # remove Opacus' hooks so the next round can wrap the model again
        model.train(was_training)
    return losses, seen, empty


def _closed_form_steps(steps: _DpSteps, rng: SecureRandom) -> _StepLog:
    """DP-SGD on the head adapter: the same sampling, clipping, noise and mean as Opacus'
    optimizer, with the clipped sum in closed form (`head_clipping`)."""
    model, inputs, dp = steps.model, steps.inputs, steps.dp
    event, optimizer, target = steps.event, steps.optimizer, steps.target
    assert isinstance(model, FeatureHead) and isinstance(inputs, FeatureInputs)
    n = inputs.n
    layer = model.classifier
    expected_batch = event.sample_rate * n
    std = event.noise_multiplier * dp.max_grad_norm
    tensors = (layer.weight, layer.bias)
    sizes = [t.numel() for t in tensors]
    losses: list[float] = []
    seen = 0
    empty = 0
    try:
        for _ in range(event.steps):
            chosen = _poisson_batch(n, event.sample_rate, rng)
            optimizer.zero_grad(set_to_none=True)
            if chosen.numel() == 0:
                weight = torch.zeros_like(layer.weight)
                bias = torch.zeros_like(layer.bias)
                empty += 1
            else:
                clipped = clipped_head_gradient_sum(model, inputs, chosen, target, dp.max_grad_norm)
                weight, bias = clipped.weight, clipped.bias
                losses.append(clipped.mean_loss)
                seen += int(chosen.numel())
            # one draw for both tensors: a draw's fixed cost is a tenth of a step
            drawn = rng.normal((sum(sizes),), std, target, weight.dtype).split(sizes)
            for param, total, noise in zip(tensors, (weight, bias), drawn, strict=True):
                param.grad = (total + noise.view_as(total)) / expected_batch
            optimizer.step()
    finally:
        optimizer.zero_grad(set_to_none=True)
    return losses, seen, empty
