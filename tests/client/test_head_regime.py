"""The DP training regime: the head adapter moves under DP-SGD, calibration never overspends,
and a DP site without enough validation records is refused in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedseal.client.dp.calibration import calibrate_noise
from fedseal.client.dp.settings import DpSettings
from fedseal.client.dp.trainer import train_dp_on
from fedseal.client.training import FeatureInputs, TrainSettings, evaluate_on, train_on
from fedseal.models.adapter import adapter_layout, adapter_to_vector
from fedseal.models.features import FeatureHead, cached_features
from fedseal.privacy.accountant_kind import Accountant
from fedseal.privacy.accounting import epsilon_of
from fedseal.privacy.events import DpEvent

FL_CLIENT = str(Path(sys.executable).with_name("fl-client"))


def _inputs(n: int = 600, width: int = 16, classes: int = 3) -> FeatureInputs:
    generator = np.random.default_rng(0)  # test data, nothing secret
    labels = generator.integers(0, classes, n)
    centres = generator.normal(size=(classes, width))
    features = centres[labels] + 0.3 * generator.normal(size=(n, width))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return FeatureInputs(features.astype(np.float32), labels)


def test_head_adapter_moves_and_learns_under_dp() -> None:
    inputs = _inputs()
    head = FeatureHead(16, 3)
    assert [name for name, _ in adapter_layout(head).entries] == [
        "classifier.bias",
        "classifier.weight",
    ]
    before = adapter_to_vector(head)
    assert not before.any()  # zero-initialised: every site starts from the same head
    dp = DpSettings(epsilon=8.0, delta=1e-5, target_epsilon=8.0)
    run = TrainSettings(steps=30, batch_size=200, learning_rate=0.1, weight_decay=0.0)
    result = train_dp_on(head, inputs, run, dp, 1.0, "cpu")
    after = adapter_to_vector(head)
    assert np.abs(after - before).min() > 0  # every coordinate moved
    assert result.event.steps == 30 and result.optimizer_state is not None
    assert evaluate_on(head, inputs, "cpu").accuracy > 0.8
    # the kept optimizer moments load into the next round's optimizer
    again = train_dp_on(head, inputs, run, dp, 1.0, "cpu", optimizer_state=result.optimizer_state)
    assert again.optimizer_state["state"][0]["step"] > result.optimizer_state["state"][0]["step"]
    plain = train_on(FeatureHead(16, 3), inputs, run, "cpu")
    assert plain.steps == 30


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    q=st.floats(0.02, 0.6),
    steps=st.integers(20, 400),
    accountant=st.sampled_from([Accountant.PRV, Accountant.RDP]),
)
def test_calibration_at_epsilon_one_never_overspends(
    q: float, steps: int, accountant: Accountant
) -> None:
    sigma = calibrate_noise(
        [], target_epsilon=1.0, delta=1e-5, sample_rate=q, steps=steps, accountant=accountant
    )
    assert epsilon_of([DpEvent(sigma, q, steps)], 1e-5, accountant) <= 1.0


def test_feature_cache_is_reused_and_bound_to_the_texts(tmp_path: Path) -> None:
    texts = ("Cholera due to Vibrio cholerae", "Fracture of the left femur", "Type 2 diabetes")
    first = cached_features(tmp_path, "minilm-l6", texts, 32)
    assert first.shape == (3, 384) and np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)
    files = list(tmp_path.iterdir())
    assert len(files) == 1
    assert np.array_equal(cached_features(tmp_path, "minilm-l6", texts, 32), first)
    files[0].write_bytes(b"not safetensors")  # a damaged file is recomputed, never trusted
    assert np.allclose(cached_features(tmp_path, "minilm-l6", texts, 32), first, atol=1e-6)
    other = cached_features(tmp_path, "minilm-l6", texts[:2], 32)
    assert other.shape == (2, 384) and len(list(tmp_path.iterdir())) == 2


def _dp_site(folder: Path, batch: int, validation: str | None) -> Path:
    rows = "text,label\n" + "".join(f"note {i},{'a' if i % 2 else 'b'}\n" for i in range(40))
    for name in ("train", "test"):
        (folder / f"{name}.csv").write_text(rows, encoding="utf-8")
    extra = ""
    if validation is not None:
        (folder / "val.csv").write_text(validation, encoding="utf-8")
        extra = 'validation_path = "val.csv"\n'
    path = folder / "site.toml"
    path.write_text(
        f"""
[site]
name = "clinic"
state_dir = "state"
device = "cpu"

[coordinator]
address = "127.0.0.1:9"

[data]
source = "csv"
train_path = "train.csv"
test_path = "test.csv"
{extra}
[training]
batch_size = {batch}

[dp]
epsilon = 1.0
target_epsilon = 1.0
""",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("validation", "batch", "expected"),
    [
        (None, 8, "no validation records"),
        ("text,label\nnote x,a\nnote y,b\n", 8, "2 validation records"),
    ],
)
def test_dp_site_without_enough_validation_is_refused(
    tmp_path: Path, validation: str | None, batch: int, expected: str
) -> None:
    path = _dp_site(tmp_path, batch, validation)
    result = subprocess.run(
        [FL_CLIENT, "--site", "clinic", "--config", str(path), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("fl-client: error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_dp_site_with_enough_validation_passes_the_check(tmp_path: Path) -> None:
    rows = "text,label\n" + "".join(f"held {i},{'a' if i % 2 else 'b'}\n" for i in range(10))
    path = _dp_site(tmp_path, 8, rows)
    result = subprocess.run(
        [FL_CLIENT, "--site", "clinic", "--config", str(path), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "10 validation" in result.stdout + result.stderr
