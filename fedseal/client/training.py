"""Plain (non-private) local training and evaluation of a LoRA classifier on a site's texts.

Used by the site's ClientApp and by the solo baseline. Training is budgeted in optimizer steps, not
epochs: on a CPU the demo's cost is steps. Tokenising and batching are separate helpers so a
differentially private trainer can reuse them with its own sampler and optimizer.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from fedseal.models.data.types import TextExamples
from fedseal.models.metrics import accuracy, roc_auc

__all__ = [
    "EvalResult",
    "FeatureInputs",
    "TokenInputs",
    "TrainResult",
    "TrainSettings",
    "TrainingInputs",
    "adamw_on_trainable",
    "batch_indices",
    "classifier_logits",
    "evaluate",
    "evaluate_on",
    "rng_devices",
    "tokenize",
    "train_on",
    "train_steps",
]


def _check_int(name: str, value: int, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")


@dataclass(frozen=True)
class TrainSettings:
    """One round of local training. Vary `seed` per round so rounds see different batches."""

    steps: int
    batch_size: int = 32
    learning_rate: float = 5e-4
    max_length: int = 32
    seed: int = 0
    weight_decay: float = 0.01
    """AdamW's decoupled weight decay (its default); the head adapter trains with none."""

    def __post_init__(self) -> None:
        _check_int("steps", self.steps, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("max_length", self.max_length, 2, 512)
        _check_int("seed", self.seed, 0, 2**63 - 1)
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, int | float):
            raise ValueError(f"learning_rate must be a number, got {lr!r}")
        if not (math.isfinite(lr) and 0 < lr <= 1):
            raise ValueError(f"learning_rate must be in (0, 1], got {lr}")
        wd = self.weight_decay
        if isinstance(wd, bool) or not isinstance(wd, int | float) or not 0 <= wd < 1:
            raise ValueError(f"weight_decay must be a number in [0, 1), got {wd!r}")


@dataclass(frozen=True)
class TrainResult:
    """What one call to `train_steps` did."""

    steps: int
    mean_loss: float
    examples_seen: int
    seconds: float
    optimizer_state: dict[str, Any] | None = None
    """The optimizer's moments after the last step, for `train_on(optimizer_state=...)`."""


@dataclass(frozen=True)
class EvalResult:
    """Loss, accuracy and ROC AUC (NaN when fewer than two classes are present) over `n` texts."""

    loss: float
    accuracy: float
    auc: float
    n: int


def tokenize(
    tokenizer: PreTrainedTokenizerBase, examples: TextExamples, max_length: int
) -> dict[str, torch.Tensor]:
    """Token ids, attention mask and labels for all examples, padded to `max_length`."""
    encoded = tokenizer(
        list(examples.texts),
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return {
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "labels": torch.from_numpy(np.asarray(examples.labels, dtype=np.int64).copy()),
    }


def batch_indices(n: int, batch_size: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    """`steps` batches drawn epoch by epoch: each example once per pass, order from `seed`."""
    if n < 1:
        raise ValueError("cannot draw batches from zero examples")
    size = min(batch_size, n)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    cursor = 0
    for _ in range(steps):
        if cursor + size > n:
            order = torch.randperm(n, generator=generator)
            cursor = 0
        yield order[cursor : cursor + size]
        cursor += size


def classifier_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Forward pass; ids go first as a positional argument, as Opacus's `ew` mode requires."""
    return model(input_ids, attention_mask=attention_mask).logits


class TrainingInputs:
    """A site's records as the model reads them: `n` records, their labels, logits by index.

    The two kinds of adapter read different inputs (token ids for LoRA, cached embeddings for
    the head); the training loops, DP or not, see only this interface.
    """

    labels: torch.Tensor
    class_weights: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return int(self.labels.numel())

    def logits(
        self, model: torch.nn.Module, index: torch.Tensor, device: torch.device
    ) -> torch.Tensor:
        raise NotImplementedError

    def loss(
        self, model: torch.nn.Module, index: torch.Tensor, device: torch.device
    ) -> torch.Tensor:
        """Mean cross-entropy over the batch, each record weighted by its class weight (if any).

        The mean divides by the batch size, not the weights' sum, so every record's gradient
        is its own (what per-example clipping needs).
        """
        labels = self.labels[index].to(device)
        losses = F.cross_entropy(self.logits(model, index, device), labels, reduction="none")
        if self.class_weights is not None:
            losses = losses * self.class_weights.to(device)[labels]
        return losses.mean()


class TokenInputs(TrainingInputs):
    """Texts tokenised once, for a LoRA classifier."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        examples: TextExamples,
        max_length: int,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        data = tokenize(tokenizer, examples, max_length)
        self.input_ids = data["input_ids"]
        self.attention_mask = data["attention_mask"]
        self.labels = data["labels"]
        self.class_weights = class_weights

    def logits(
        self, model: torch.nn.Module, index: torch.Tensor, device: torch.device
    ) -> torch.Tensor:
        ids = self.input_ids[index].to(device)
        mask = self.attention_mask[index].to(device)
        return classifier_logits(model, ids, mask)


class FeatureInputs(TrainingInputs):
    """Cached embeddings of the records, for the head adapter (`fedseal.models.features`)."""

    def __init__(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        values = np.asarray(features, dtype=np.float32)
        if values.ndim != 2 or values.shape[0] != len(labels):
            raise ValueError(f"{values.shape} features for {len(labels)} labels")
        self.features = torch.from_numpy(values.copy())
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())
        self.class_weights = class_weights

    def logits(
        self, model: torch.nn.Module, index: torch.Tensor, device: torch.device
    ) -> torch.Tensor:
        return model(self.features[index].to(device))


def rng_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose RNG state `torch.random.fork_rng` must save (none on the CPU)."""
    if device.type == "cuda":
        return [device.index if device.index is not None else torch.cuda.current_device()]
    return []


def adamw_on_trainable(
    model: torch.nn.Module,
    settings: TrainSettings,
    optimizer_state: dict[str, Any] | None = None,
) -> tuple[list[torch.nn.Parameter], torch.optim.AdamW]:
    """The trainable parameters (the adapter) and an AdamW over them, with the moments of
    `optimizer_state` when the site kept them from its last round; plain and DP training
    step the same optimizer."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(
        params, lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    if optimizer_state is not None:
        optimizer.load_state_dict(copy.deepcopy(optimizer_state))
    return params, optimizer


def train_steps(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: TextExamples,
    settings: TrainSettings,
    device: torch.device | str,
) -> TrainResult:
    """`train_on` for a LoRA classifier over texts."""
    if len(examples) == 0:
        raise ValueError("no training examples")
    return train_on(model, TokenInputs(tokenizer, examples, settings.max_length), settings, device)


def train_on(
    model: torch.nn.Module,
    inputs: TrainingInputs,
    settings: TrainSettings,
    device: torch.device | str,
    optimizer_state: dict[str, Any] | None = None,
) -> TrainResult:
    """Run `settings.steps` AdamW steps on the trainable parameters only.

    Batches and dropout are drawn from `settings.seed` inside a forked RNG, so a round is
    reproducible and the caller's RNG state is left alone. A fresh optimizer is made per call:
    after aggregation the site's old moment estimates no longer match the weights.
    """
    if inputs.n == 0:
        raise ValueError("no training examples")
    target = torch.device(device)
    _params, optimizer = adamw_on_trainable(model, settings, optimizer_state)
    was_training = model.training
    model.train()
    losses: list[float] = []
    seen = 0
    start = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=rng_devices(target)):
            torch.manual_seed(settings.seed)
            batches = batch_indices(inputs.n, settings.batch_size, settings.steps, settings.seed)
            for index in batches:
                optimizer.zero_grad(set_to_none=True)
                loss = inputs.loss(model, index, target)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                seen += int(index.numel())
    finally:
        model.train(was_training)
        optimizer.zero_grad(set_to_none=True)
    return TrainResult(
        steps=len(losses),
        mean_loss=float(np.mean(losses)),
        examples_seen=seen,
        seconds=time.perf_counter() - start,
        optimizer_state=copy.deepcopy(optimizer.state_dict()),
    )


def evaluate(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: TextExamples,
    device: torch.device | str,
    batch_size: int = 64,
    max_length: int = 32,
) -> EvalResult:
    """`evaluate_on` for a LoRA classifier over texts."""
    _check_int("max_length", max_length, 2, 512)
    if len(examples) == 0:
        return evaluate_on(model, None, device, batch_size)
    return evaluate_on(model, TokenInputs(tokenizer, examples, max_length), device, batch_size)


@torch.no_grad()
def evaluate_on(
    model: torch.nn.Module,
    inputs: TrainingInputs | None,
    device: torch.device | str,
    batch_size: int = 64,
) -> EvalResult:
    """Mean cross-entropy, accuracy and ROC AUC in eval mode; the previous mode is restored."""
    _check_int("batch_size", batch_size, 1)
    n = 0 if inputs is None else inputs.n
    if inputs is None or n == 0:
        nan = float("nan")
        return EvalResult(loss=nan, accuracy=nan, auc=nan, n=0)
    target = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        chunks = []
        for start in range(0, n, batch_size):
            index = torch.arange(start, min(start + batch_size, n))
            chunks.append(inputs.logits(model, index, target).float().cpu())
    finally:
        model.train(was_training)
    logits = torch.cat(chunks)
    labels = inputs.labels
    loss = float(F.cross_entropy(logits, labels))
    probs = torch.softmax(logits, dim=-1).numpy()
    truth = labels.numpy()
    return EvalResult(
        loss=loss,
        accuracy=accuracy(truth, probs.argmax(axis=1)),
        auc=roc_auc(truth, probs),
        n=n,
    )
