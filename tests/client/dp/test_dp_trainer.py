"""DP-SGD with Opacus on the real MiniLM + LoRA model: the adapter moves, the base never does."""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.optimizers import DPOptimizer

from fedseal.client.dp import trainer as dp_trainer
from fedseal.client.dp.accountant_store import AccountantStore
from fedseal.client.dp.budget import check_round
from fedseal.client.dp.settings import DpSettings
from fedseal.client.dp.trainer import poisson_sample_rate, train_steps_dp
from fedseal.client.training import TrainSettings
from fedseal.models.adapter import adapter_to_vector
from fedseal.models.base_models import DEFAULT_BASE_MODEL, load_tokenizer
from fedseal.models.data import load_federated_dataset
from fedseal.models.lora import LoraSettings, build_lora_classifier
from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.accounting import epsilon_of
from fedseal.privacy.events import DpEvent

torch.set_num_threads(1)

DELTA = 1e-5
DP = DpSettings(epsilon=50.0, delta=DELTA, noise_multiplier=1.0, max_grad_norm=1.0)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(DEFAULT_BASE_MODEL)


@pytest.fixture(scope="module")
def examples():
    return load_federated_dataset("heart", 2, seed=0).sites["cleveland"].train.subset(range(48))


def _model():
    return build_lora_classifier(DEFAULT_BASE_MODEL, 2, LoraSettings(), "cpu", seed=0)


def _frozen(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


def test_sample_rate_is_batch_over_records() -> None:
    assert poisson_sample_rate(32, 600) == 32 / 600
    assert poisson_sample_rate(32, 10) == 1.0
    with pytest.raises(ValueError):
        poisson_sample_rate(0, 10)


def test_rounds_move_the_adapter_never_the_base_and_compose_in_the_store(
    tokenizer, examples, tmp_path, monkeypatch
) -> None:
    """Three rounds on one model (one Opacus wrapper per call): LoRA and head change every
    round, frozen weights never; per-example gradients exist only for trainable tensors; the
    store's ε after the rounds is the accountant's ε for ALL their steps."""
    model = _model()
    frozen = _frozen(model)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    seen_with_grad_sample: list[set[int]] = []
    original_pre_step = DPOptimizer.pre_step

    def spy(self, *args, **kwargs):
        seen_with_grad_sample.append(
            {id(p) for p in model.parameters() if getattr(p, "grad_sample", None) is not None}
        )
        return original_pre_step(self, *args, **kwargs)

    monkeypatch.setattr(DPOptimizer, "pre_step", spy)
    store = AccountantStore.open(tmp_path)
    settings = TrainSettings(steps=2, batch_size=8, learning_rate=1e-3, max_length=16, seed=3)
    accountant = RDPAccountant()
    for number in (1, 2, 3):
        before = adapter_to_vector(model)
        result = train_steps_dp(model, tokenizer, examples, settings, DP, 1.0, "cpu")
        after = adapter_to_vector(model)
        assert np.all(after != before), "every LoRA and head value moves under noise"
        assert result.steps == 2 and result.event == DpEvent(1.0, 8 / 48, 2)
        assert math.isfinite(result.mean_loss) and result.examples_seen > 0
        assert store.record(
            result.event, run_id=1, round_number=number, release_id=result.release_id
        )
        for _ in range(result.steps):
            accountant.step(noise_multiplier=1.0, sample_rate=8 / 48)
        assert store.spent_epsilon(DELTA) == pytest.approx(accountant.get_epsilon(DELTA))
    for name, value in model.named_parameters():
        if not value.requires_grad:
            assert torch.equal(value.detach(), frozen[name]), name
        assert not hasattr(value, "grad_sample"), "Opacus' attributes are removed after a call"
    assert seen_with_grad_sample and all(ids == trainable for ids in seen_with_grad_sample)
    last_round = epsilon_of([DpEvent(1.0, 8 / 48, 2)], DELTA, Accountant.RDP)
    assert store.spent_epsilon(DELTA) > last_round


def test_empty_poisson_batches_still_add_noise_and_are_charged(
    tokenizer, examples, monkeypatch
) -> None:
    """An empty batch skips the forward pass (HF BERT cannot run it) but still takes the
    noisy step, so the adapter moves and the step is counted in the event."""
    model = _model()
    monkeypatch.setattr(
        dp_trainer, "_poisson_batch", lambda n, q, generator: torch.zeros(0, dtype=torch.long)
    )
    before = adapter_to_vector(model)
    settings = TrainSettings(steps=2, batch_size=8, learning_rate=1e-3, max_length=16, seed=0)
    result = train_steps_dp(model, tokenizer, examples, settings, DP, 1.0, "cpu")
    assert result.empty_batches == 2 and result.examples_seen == 0
    assert math.isnan(result.mean_loss)
    assert result.event.steps == 2
    assert np.all(adapter_to_vector(model) != before)


def test_a_declined_round_trains_nothing(tokenizer, examples, tmp_path) -> None:
    """The wiring a site follows: check first; an exhausted budget means no training call."""
    store = AccountantStore.open(tmp_path)
    tight = DpSettings(epsilon=1.0, delta=DELTA, noise_multiplier=1.0)
    planned = DpEvent(1.0, poisson_sample_rate(8, len(examples)), 50)
    decision = check_round(store, planned, tight, run_id=1, round_number=1)
    assert not decision.allowed and decision.reason == "budget exhausted"
    assert store.charges == ()


def test_refuses_disabled_settings_and_empty_data(tokenizer, examples) -> None:
    model = _model()
    model.eval()
    settings = TrainSettings(steps=1, batch_size=8, max_length=16)
    off = DpSettings(epsilon=1.0, delta=DELTA, noise_multiplier=1.0, enabled=False)
    with pytest.raises(ValueError, match="disabled"):
        train_steps_dp(model, tokenizer, examples, settings, off, 1.0, "cpu")
    with pytest.raises(ValueError, match="no training examples"):
        train_steps_dp(model, tokenizer, examples.subset([]), settings, DP, 1.0, "cpu")
    assert not model.training  # the caller's mode is left alone
    result = train_steps_dp(model, tokenizer, examples, settings, DP, 1.0, "cpu")
    assert not model.training and result.steps == 1  # an eval-mode model still trains


def test_an_adapter_that_does_not_move_is_an_error(tokenizer, examples, monkeypatch) -> None:
    """The silent failure of opacus #820 (LoRA weights never updated) becomes loud."""
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, closure=None: None)
    settings = TrainSettings(steps=1, batch_size=8, max_length=16)
    with pytest.raises(RuntimeError, match="opacus #820"):
        train_steps_dp(_model(), tokenizer, examples, settings, DP, 1.0, "cpu")
