from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from fedseal.models.adapter import (
    AdapterLayout,
    InvalidAdapterFile,
    adapter_layout,
    adapter_to_vector,
    load_adapter,
    load_vector_into_adapter,
    save_adapter,
    vector_digest,
)
from fedseal.models.base_models import DEFAULT_BASE_MODEL
from fedseal.models.lora import LoraSettings, build_lora_classifier


@pytest.fixture(scope="module")
def model():
    return build_lora_classifier(DEFAULT_BASE_MODEL, 3, LoraSettings(rank=4), "cpu", seed=0)


def _layout(*sizes: int) -> AdapterLayout:
    return AdapterLayout(tuple((f"p{i:02d}", (n,)) for i, n in enumerate(sizes)))


def test_layout_is_sorted_and_matches_vector(model) -> None:
    layout = adapter_layout(model)
    names = [name for name, _ in layout.entries]
    assert names == sorted(names)
    vector = adapter_to_vector(model)
    assert vector.dtype == np.float32 and vector.ndim == 1
    assert vector.size == layout.size == 12 * 2 * 4 * 384 + 3 * 384 + 3
    assert len(layout.digest) == 64


def test_layout_digest_is_stable_across_builds(model) -> None:
    other = build_lora_classifier(DEFAULT_BASE_MODEL, 3, LoraSettings(rank=4), "cpu", seed=99)
    assert adapter_layout(other) == adapter_layout(model)
    assert adapter_layout(other).digest == adapter_layout(model).digest
    bigger = build_lora_classifier(DEFAULT_BASE_MODEL, 3, LoraSettings(rank=8), "cpu", seed=0)
    assert adapter_layout(bigger).digest != adapter_layout(model).digest
    # the digest is a pure function of names and shapes
    assert _layout(2, 3).digest == _layout(2, 3).digest != _layout(3, 2).digest


def test_layout_rejects_unsorted_or_duplicate_names() -> None:
    with pytest.raises(ValueError):
        AdapterLayout((("b", (1,)), ("a", (1,))))
    with pytest.raises(ValueError):
        AdapterLayout((("a", (1,)), ("a", (1,))))


def test_vector_round_trip_through_model(model) -> None:
    original = adapter_to_vector(model)
    replacement = np.random.default_rng(0).standard_normal(original.size).astype(np.float32)
    try:
        load_vector_into_adapter(model, replacement)
        assert np.array_equal(adapter_to_vector(model), replacement)
        # sorted order: the head comes last, its bias (3) before its weight (3 x 384)
        name = "base_model.model.classifier.modules_to_save.default.bias"
        assert [n for n, _ in adapter_layout(model).entries][-2] == name
        head_bias = dict(model.named_parameters())[name].detach().numpy()
        assert np.array_equal(head_bias, replacement[-3 - 3 * 384 : -3 * 384])
    finally:
        load_vector_into_adapter(model, original)
    assert np.array_equal(adapter_to_vector(model), original)


def test_load_vector_rejects_wrong_size_and_non_finite(model) -> None:
    size = adapter_layout(model).size
    with pytest.raises(ValueError, match="values"):
        load_vector_into_adapter(model, np.zeros(size - 1, np.float32))
    bad = np.zeros(size, np.float32)
    bad[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        load_vector_into_adapter(model, bad)
    with pytest.raises(ValueError):
        load_vector_into_adapter(model, np.zeros((2, size // 2), np.float32))


def test_vector_digest_binds_bytes_and_layout() -> None:
    layout = _layout(4)
    v = np.array([1.0, -2.0, 0.5, 0.0], np.float32)
    digest = vector_digest(v, layout)
    assert digest == vector_digest(v.copy(), layout)
    flipped = v.copy()
    flipped.view(np.uint32)[3] ^= 1  # smallest possible change
    assert vector_digest(flipped, layout) != digest
    assert vector_digest(v, AdapterLayout((("q", (4,)),))) != digest
    assert vector_digest(v.astype(np.float64), layout) == digest


def test_save_load_round_trip_is_atomic(tmp_path, model) -> None:
    layout = adapter_layout(model)
    vector = adapter_to_vector(model)
    path = tmp_path / "round" / "adapter.safetensors"
    digest = save_adapter(path, vector, layout)
    assert digest == vector_digest(vector, layout)
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind
    loaded = load_adapter(path, layout, expected_digest=digest)
    assert loaded.tobytes() == vector.tobytes()
    save_adapter(path, vector * 2, layout)  # overwrite in place
    assert np.array_equal(load_adapter(path, layout), vector * 2)


def test_tampered_or_mismatched_file_is_rejected(tmp_path) -> None:
    layout = _layout(8, 4)
    vector = np.arange(12, dtype=np.float32)
    path = tmp_path / "a.safetensors"
    save_adapter(path, vector, layout)

    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x40  # flip a bit in the last float
    tampered = tmp_path / "tampered.safetensors"
    tampered.write_bytes(bytes(raw))
    with pytest.raises(InvalidAdapterFile, match="digest"):
        load_adapter(tampered, layout)

    with pytest.raises(InvalidAdapterFile, match="layout"):
        load_adapter(path, _layout(12))

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(InvalidAdapterFile):
        load_adapter(truncated, layout)

    # a well-formed file whose metadata was rewritten to match different values
    forged = tmp_path / "forged.safetensors"
    meta = {
        "format": "fedseal-adapter-v1",
        "layout": json.dumps([]),
        "layout_digest": layout.digest,
        "vector_digest": vector_digest(vector, layout),
    }
    save_file({"adapter": vector + 1}, str(forged), metadata=meta)
    with pytest.raises(InvalidAdapterFile, match="digest"):
        load_adapter(forged, layout)

    # a consistent file that is simply not the adapter the ledger recorded
    save_adapter(forged, vector + 1, layout)
    with pytest.raises(InvalidAdapterFile, match="expected"):
        load_adapter(forged, layout, expected_digest=vector_digest(vector, layout))

    with pytest.raises(FileNotFoundError):
        load_adapter(tmp_path / "missing.safetensors", layout)


def test_save_rejects_bad_vectors(tmp_path) -> None:
    layout = _layout(3)
    with pytest.raises(ValueError):
        save_adapter(tmp_path / "x", np.zeros(4, np.float32), layout)
    with pytest.raises(ValueError):
        save_adapter(tmp_path / "x", np.array([0, np.inf, 0], np.float32), layout)
    with pytest.raises(TypeError):
        save_adapter(tmp_path / "x", [0.0, 1.0, 2.0], layout)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=5),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_save_load_round_trip_any_layout(tmp_path_factory, sizes, seed) -> None:
    layout = _layout(*sizes)
    vector = np.random.default_rng(seed).standard_normal(layout.size).astype(np.float32)
    path = tmp_path_factory.mktemp("prop") / "a.safetensors"
    save_adapter(path, vector, layout)
    assert load_adapter(path, layout).tobytes() == vector.tobytes()
