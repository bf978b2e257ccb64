from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine

from fedseal.models.adapter import adapter_to_vector
from fedseal.models.base_models import DEFAULT_BASE_MODEL
from fedseal.models.lora import LoraSettings, build_lora_classifier, trainable_parameters


def _build(seed: int, num_labels: int = 4, settings: LoraSettings | None = None):
    lora = settings or LoraSettings()
    return build_lora_classifier(DEFAULT_BASE_MODEL, num_labels, lora, "cpu", seed)


@pytest.mark.parametrize(
    "kwargs",
    [{"rank": 0}, {"rank": 1.5}, {"alpha": 0}, {"alpha": float("nan")}, {"dropout": 1.0},
     {"dropout": -0.1}, {"rank": True}],
)  # fmt: skip
def test_lora_settings_validation(kwargs) -> None:
    with pytest.raises(ValueError):
        LoraSettings(**kwargs)


def test_same_seed_gives_identical_adapter_and_different_seed_does_not() -> None:
    a = adapter_to_vector(_build(seed=7))
    b = adapter_to_vector(_build(seed=7))
    c = adapter_to_vector(_build(seed=8))
    assert a.dtype == np.float32
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)


def test_build_leaves_the_callers_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _build(seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_only_lora_and_head_copy_are_trainable() -> None:
    model = _build(seed=0, settings=LoraSettings(rank=4))
    names = [name for name, _ in trainable_parameters(model)]
    assert names == sorted(names)
    assert all(".lora_" in n or ".modules_to_save." in n for n in names)
    assert sum(".lora_A." in n for n in names) == 12  # 6 layers x (query, value)
    assert any("classifier.modules_to_save" in n for n in names)
    for name, param in model.named_parameters():
        if "original_module" in name or "embeddings" in name or "pooler" in name:
            assert not param.requires_grad, name
    # rank 4: A is (4, 384), B is (384, 4), per query/value per layer; head 4x384 + 4
    assert sum(p.numel() for _, p in trainable_parameters(model)) == 12 * 2 * 4 * 384 + 4 * 384 + 4


def test_every_trainable_parameter_is_used_in_forward() -> None:
    model = _build(seed=0)
    model.train()
    logits = model(torch.tensor([[101, 7592, 2088, 102]])).logits
    logits.sum().backward()
    missing = [n for n, p in trainable_parameters(model) if p.grad is None]
    assert missing == []


def test_model_is_built_in_train_mode_throughout() -> None:
    model = _build(seed=0)
    assert all(module.training for module in model.modules())


@pytest.mark.filterwarnings("ignore:Secure RNG turned off")
@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_opacus_make_private_trains_the_adapter() -> None:
    model = _build(seed=0, num_labels=2)
    before = adapter_to_vector(model)
    params = [p for _, p in trainable_parameters(model)]
    optimizer = torch.optim.SGD(params, lr=0.5)
    ids = torch.randint(1000, 2000, (8, 6))
    data = torch.utils.data.TensorDataset(ids, torch.ones_like(ids), torch.randint(0, 2, (8,)))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    engine = PrivacyEngine()
    private_model, private_opt, private_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        poisson_sampling=False,
    )
    for x, mask, y in private_loader:
        private_opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(private_model(x, attention_mask=mask).logits, y)
        loss.backward()
        private_opt.step()
    after = adapter_to_vector(model)
    assert not np.array_equal(before, after)
