from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch

from fedseal.client.training import (
    EvalResult,
    TrainSettings,
    batch_indices,
    evaluate,
    tokenize,
    train_steps,
)
from fedseal.models.adapter import adapter_to_vector, load_vector_into_adapter
from fedseal.models.base_models import DEFAULT_BASE_MODEL, load_tokenizer
from fedseal.models.data import TextExamples, load_federated_dataset
from fedseal.models.lora import LoraSettings, build_lora_classifier

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(DEFAULT_BASE_MODEL)


@pytest.fixture(scope="module")
def heart():
    return load_federated_dataset("heart", 2, seed=0)


def _model(num_labels: int = 2):
    return build_lora_classifier(DEFAULT_BASE_MODEL, num_labels, LoraSettings(), "cpu", seed=0)


@pytest.mark.parametrize(
    "kwargs",
    [{"steps": 0}, {"steps": 2, "batch_size": 0}, {"steps": 2, "learning_rate": 0},
     {"steps": 2, "learning_rate": float("inf")}, {"steps": 2, "max_length": 1},
     {"steps": 2, "seed": -1}, {"steps": 1.5}],
)  # fmt: skip
def test_train_settings_validation(kwargs) -> None:
    with pytest.raises(ValueError):
        TrainSettings(**kwargs)


def test_batches_are_seeded_and_cover_each_epoch() -> None:
    first = [b.tolist() for b in batch_indices(10, 4, 5, seed=3)]
    assert first == [b.tolist() for b in batch_indices(10, 4, 5, seed=3)]
    assert first != [b.tolist() for b in batch_indices(10, 4, 5, seed=4)]
    assert all(len(b) == 4 for b in first)
    assert len(set(first[0] + first[1])) == 8  # no repeat within an epoch
    assert [len(b) for b in batch_indices(3, 32, 2, seed=0)] == [3, 3]
    with pytest.raises(ValueError):
        list(batch_indices(0, 4, 1, seed=0))


def test_tokenize_pads_and_truncates(tokenizer) -> None:
    examples = TextExamples(("short", "a much longer text " * 20), np.array([0, 1]))
    data = tokenize(tokenizer, examples, max_length=16)
    assert data["input_ids"].shape == data["attention_mask"].shape == (2, 16)
    assert data["attention_mask"][0].sum() < 16 and data["attention_mask"][1].sum() == 16
    assert data["labels"].tolist() == [0, 1]


def test_training_moves_only_the_adapter_and_is_reproducible(tokenizer, heart) -> None:
    model = _model()
    start = adapter_to_vector(model)
    frozen_before = {
        n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad
    }
    settings = TrainSettings(steps=3, batch_size=8, learning_rate=1e-3, max_length=24, seed=5)
    torch.manual_seed(11)
    expected_draw = torch.rand(2)
    torch.manual_seed(11)
    result = train_steps(model, tokenizer, heart.sites["cleveland"].train, settings, "cpu")
    assert torch.equal(torch.rand(2), expected_draw)  # caller's RNG untouched

    assert result.steps == 3 and result.examples_seen == 24
    assert math.isfinite(result.mean_loss) and result.seconds > 0
    after = adapter_to_vector(model)
    lora_b = [n for n, p in model.named_parameters() if ".lora_B." in n]
    assert lora_b and not np.array_equal(start, after)
    params = dict(model.named_parameters())
    assert all(params[n].abs().sum() > 0 for n in lora_b)  # B starts at zero and must move
    for name, before in frozen_before.items():
        assert torch.equal(params[name], before), f"frozen weight {name} changed"
    assert all(p.grad is None for p in model.parameters())

    load_vector_into_adapter(model, start)
    train_steps(model, tokenizer, heart.sites["cleveland"].train, settings, "cpu")
    assert adapter_to_vector(model).tobytes() == after.tobytes()


def test_evaluate_reports_metrics_and_restores_mode(tokenizer, heart) -> None:
    model = _model()
    model.train()
    test = heart.sites["hungary"].test
    result = evaluate(model, tokenizer, test, "cpu", batch_size=32, max_length=24)
    assert isinstance(result, EvalResult) and result.n == len(test)
    assert 0.0 <= result.accuracy <= 1.0 and 0.0 <= result.auc <= 1.0
    assert math.isfinite(result.loss)
    assert model.training
    again = evaluate(model, tokenizer, test, "cpu", batch_size=7, max_length=24)
    assert again.accuracy == result.accuracy and again.auc == pytest.approx(result.auc)
    model.eval()
    evaluate(model, tokenizer, test, "cpu", max_length=24)
    assert not model.training
    empty = evaluate(model, tokenizer, TextExamples((), np.array([], np.int64)), "cpu")
    assert empty.n == 0 and math.isnan(empty.accuracy)


def test_a_few_steps_learn_the_hospital_task(tokenizer) -> None:
    ds = load_federated_dataset("hospitals", 2, seed=0)
    site = ds.sites["hospital_a"]
    model = _model(num_labels=ds.num_labels)
    eval_part = site.test.subset(range(64))
    before = evaluate(model, tokenizer, eval_part, "cpu", max_length=24)
    settings = TrainSettings(steps=6, batch_size=16, learning_rate=3e-3, max_length=24)
    result = train_steps(model, tokenizer, site.train.subset(range(800)), settings, "cpu")
    after = evaluate(model, tokenizer, eval_part, "cpu", max_length=24)
    assert after.loss < before.loss
    assert after.accuracy > before.accuracy
    assert result.mean_loss < before.loss
