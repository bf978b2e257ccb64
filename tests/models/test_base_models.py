from __future__ import annotations

import pytest
import torch

from fedseal.models.base_models import (
    BASE_MODELS,
    DEFAULT_BASE_MODEL,
    BaseModelSpec,
    UnknownBaseModel,
    get_base_model,
    load_classifier,
    load_tokenizer,
)


def test_default_model_is_registered_and_installed() -> None:
    spec = get_base_model(DEFAULT_BASE_MODEL)
    assert spec.name == DEFAULT_BASE_MODEL == "minilm-l6"
    assert (spec.folder() / "model.safetensors").is_file()
    assert spec.lora_target_modules == ("query", "value")
    assert set(BASE_MODELS) >= {"minilm-l6"}


def test_unknown_base_model_lists_known_names() -> None:
    with pytest.raises(UnknownBaseModel, match="minilm-l6") as info:
        get_base_model("gpt-17")
    assert isinstance(info.value, ValueError)
    assert "gpt-17" in str(info.value)


def test_missing_package_is_a_clear_error() -> None:
    spec = BaseModelSpec("x", "x", ("query",), "classifier", 8, package="no_such_package_xyz")
    with pytest.raises(FileNotFoundError, match="no_such_package_xyz"):
        spec.folder()


def test_tokenizer_is_cached(tokenizer) -> None:
    assert load_tokenizer(DEFAULT_BASE_MODEL) is load_tokenizer(DEFAULT_BASE_MODEL)
    assert tokenizer("chest pain")["input_ids"][0] == tokenizer.cls_token_id


def test_classifier_loads_quietly_with_requested_head(capfd) -> None:
    model = load_classifier(DEFAULT_BASE_MODEL, num_labels=5, device="cpu")
    out, err = capfd.readouterr()
    assert "newly initialized" not in out + err
    assert "LOAD REPORT" not in out + err
    assert "Loading weights" not in out + err
    assert model.config.num_labels == 5
    names = {name for name, _ in model.named_modules()}
    for target in get_base_model(DEFAULT_BASE_MODEL).lora_target_modules:
        assert f"bert.encoder.layer.0.attention.self.{target}" in names
    assert "classifier" in names
    with torch.no_grad():
        logits = model(torch.tensor([[101, 2000, 102]])).logits
    assert logits.shape == (1, 5)


@pytest.mark.parametrize("bad", [1, 0, True, 2.0])
def test_classifier_rejects_bad_label_count(bad) -> None:
    with pytest.raises((ValueError, TypeError)):
        load_classifier(DEFAULT_BASE_MODEL, num_labels=bad)
