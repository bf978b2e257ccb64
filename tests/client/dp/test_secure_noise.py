"""DP-SGD's noise and batch draws come from `SecureRandom` (a ChaCha20 keystream keyed from the
OS): right distribution, independent of torch's and numpy's global generators, and added with
the expected spread by both DP paths (the head adapter's closed form and Opacus)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from fedseal.client.dp import trainer as dp_trainer
from fedseal.client.dp.head_clipping import has_closed_form
from fedseal.client.dp.secure_noise import SecureRandom
from fedseal.client.dp.settings import DpSettings
from fedseal.client.dp.trainer import train_dp_on
from fedseal.client.training import FeatureInputs, TrainSettings
from fedseal.models.features import FeatureHead

try:
    from scipy import stats
except ImportError:  # scipy is not a dependency of fedseal: the moment checks still run
    stats = None

DRAWS = 200_000
WIDTH, CLASSES, RECORDS, BATCH = 16, 4, 200, 20
SIGMA, CLIP = 1000.0, 1.0
"""σ·C dwarfs the clipped sum (norm <= records in the batch · C): p.grad · qn is the noise."""


def test_normals_are_standard_normal() -> None:
    z = SecureRandom().normal((DRAWS,), 1.0, "cpu", torch.float64).numpy()
    # standard errors: mean 0.0022, std 0.0016, kurtosis 0.011
    assert abs(z.mean()) < 0.02
    assert abs(z.std() - 1.0) < 0.015
    assert abs(np.mean(z**4) - 3.0) < 0.15
    assert np.isfinite(z).all()
    if stats is not None:
        assert stats.kstest(z, "norm").pvalue > 1e-6


def test_normals_take_std_shape_dtype_and_device() -> None:
    rng = SecureRandom()
    drawn = rng.normal((3, 7), 2.5, torch.device("cpu"), torch.float32)  # odd count: 21
    assert drawn.shape == (3, 7) and drawn.dtype == torch.float32 and drawn.device.type == "cpu"
    scaled = rng.normal(torch.Size([DRAWS]), 2.5, "cpu", torch.float64)
    assert abs(float(scaled.std()) / 2.5 - 1.0) < 0.015
    assert torch.equal(rng.normal((2, 2), 0.0), torch.zeros(2, 2))
    assert rng.normal((0, 5), 1.0).shape == (0, 5)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="std"):
            rng.normal((2,), bad)


def test_uniforms_are_53_bit_in_the_half_open_unit_interval() -> None:
    u = SecureRandom().uniform(DRAWS)
    assert u.dtype == torch.float64 and u.shape == (DRAWS,)
    assert float(u.min()) > 0.0 and float(u.max()) <= 1.0
    scaled = u * 2.0**53
    assert torch.equal(scaled, scaled.round())  # multiples of 2**-53
    assert len(torch.unique(u)) == DRAWS
    assert abs(float(u.mean()) - 0.5) < 0.005  # standard error 0.00065
    if stats is not None:
        assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-6


def test_coins_take_their_probability_and_q_one_keeps_every_record() -> None:
    rng = SecureRandom()
    for p in (0.001, 0.1, 0.5, 0.9):
        share = float(rng.bernoulli(DRAWS, p).double().mean())
        assert abs(share - p) < 6 * math.sqrt(p * (1 - p) / DRAWS) + 1e-9
    assert not rng.bernoulli(1000, 0.0).any() and rng.bernoulli(1000, 1.0).all()
    assert rng.bernoulli(0, 0.5).shape == (0,)
    assert torch.equal(dp_trainer._poisson_batch(50, 1.0, rng), torch.arange(50))
    for bad in (-0.1, 1.1, math.nan):
        with pytest.raises(ValueError, match="p must be"):
            rng.bernoulli(3, bad)


def test_two_instances_draw_different_streams() -> None:
    first, second = SecureRandom(), SecureRandom()
    assert first.random_bytes(64) != second.random_bytes(64)
    assert not torch.equal(first.normal((64,)), second.normal((64,)))
    assert first.random_bytes(64) != first.random_bytes(64)  # and the stream moves on


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_repeat_its_parents_stream() -> None:
    rng = SecureRandom()
    rng.random_bytes(16)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next 32 bytes and leave without pytest's teardown
        try:
            os.write(write, rng.random_bytes(32))
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 32)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != rng.random_bytes(32)


def _inputs() -> FeatureInputs:
    generator = np.random.default_rng(3)  # test data, nothing secret
    features = generator.normal(size=(RECORDS, WIDTH)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return FeatureInputs(features, generator.integers(0, CLASSES, RECORDS))


def _model(path: str) -> torch.nn.Module:
    """The head adapter (closed form), or a bare Linear that `has_closed_form` sends to Opacus."""
    model = (
        FeatureHead(WIDTH, CLASSES) if path == "closed form" else torch.nn.Linear(WIDTH, CLASSES)
    )
    assert has_closed_form(model, _inputs()) == (path == "closed form")
    return model


def _noise_per_step(model: torch.nn.Module, monkeypatch, steps: int) -> list[torch.Tensor]:
    """The gradient AdamW stepped on, times the expected batch qn, at every step of one call."""
    seen: list[torch.Tensor] = []
    original = torch.optim.AdamW.step

    def spy(self, closure=None):
        grads = [p.grad.detach().flatten() for g in self.param_groups for p in g["params"]]
        seen.append(torch.cat(grads) * BATCH)
        return original(self, closure)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    settings = TrainSettings(steps=steps, batch_size=BATCH, learning_rate=1e-3, weight_decay=0.0)
    dp = DpSettings(epsilon=1.0, delta=1e-5, noise_multiplier=SIGMA, max_grad_norm=CLIP)
    result = train_dp_on(model, _inputs(), settings, dp, SIGMA, "cpu")
    assert result.event.sample_rate * RECORDS == pytest.approx(BATCH)
    assert result.examples_seen > 0
    monkeypatch.setattr(torch.optim.AdamW, "step", original)
    return seen


@pytest.mark.filterwarnings("ignore:Full backward hook")
@pytest.mark.parametrize("path", ["closed form", "opacus"])
def test_a_dp_step_adds_noise_of_std_sigma_c_over_the_expected_batch(path, monkeypatch) -> None:
    steps = 100
    seen = _noise_per_step(_model(path), monkeypatch, steps)
    assert len(seen) == steps
    noise = torch.cat(seen).double()  # 6,800 values: the std's standard error is 0.9 %
    assert abs(float(noise.mean())) < 0.1 * SIGMA * CLIP
    assert abs(float(noise.std()) / (SIGMA * CLIP) - 1.0) < 0.1


@pytest.mark.filterwarnings("ignore:Full backward hook")
@pytest.mark.parametrize("path", ["closed form", "opacus"])
def test_global_seeds_and_torch_generators_play_no_part(path, monkeypatch) -> None:
    """The same global seed twice gives different noise; torch's samplers are never called;
    torch's and numpy's global generator states are left exactly as they were."""
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(torch.cat(_noise_per_step(_model(path), monkeypatch, 3)))
    assert not torch.equal(runs[0], runs[1])

    model = _model(path)  # its initialisation may use torch's generator: not DP randomness

    def refuse(*args, **kwargs):
        raise AssertionError("a torch generator was asked for DP randomness")

    for name in ("normal", "randn", "rand", "randint", "randperm", "bernoulli"):
        monkeypatch.setattr(torch, name, refuse)
    monkeypatch.setattr(torch.Tensor, "normal_", refuse)
    monkeypatch.setattr(torch.Tensor, "uniform_", refuse)
    monkeypatch.setattr(torch, "Generator", refuse)
    torch_state = torch.random.get_rng_state()
    numpy_state = np.random.get_state()
    _noise_per_step(model, monkeypatch, 3)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1])
    assert after[2:] == numpy_state[2:]


def test_drawing_leaves_global_generators_alone() -> None:
    torch_state = torch.random.get_rng_state()
    numpy_state = np.random.get_state()
    rng = SecureRandom()
    rng.normal((1000,), 3.0)
    rng.uniform(1000)
    rng.bernoulli(1000, 0.3)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])
