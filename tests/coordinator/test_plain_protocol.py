"""Plain FedAvg maths and round bookkeeping helpers."""

from __future__ import annotations

import numpy as np

from fedseal.coordinator.protocols import PlainFedAvg, protocol_for_mode
from fedseal.coordinator.protocols.plain import RunningSum
from fedseal.coordinator.round_loop import RunState, _sample


def test_running_sum_is_weighted_fedavg() -> None:
    rng = np.random.default_rng(0)
    updates = [rng.normal(size=50).astype(np.float32) for _ in range(4)]
    weights = [10, 20, 30, 40]
    running = RunningSum()
    for delta, n in zip(updates, weights, strict=True):
        running.add(delta * n, n)
    expected = sum(d * n for d, n in zip(updates, weights, strict=True)) / sum(weights)
    assert running.weight == 100
    np.testing.assert_allclose(running.total / running.weight, expected, rtol=1e-6)


def test_modes_are_explicit() -> None:
    assert isinstance(protocol_for_mode("plain"), PlainFedAvg)
    assert protocol_for_mode("he+ss").mode == "he+ss"
    assert protocol_for_mode("he").mode == "he"
    try:
        protocol_for_mode("he-lite")
    except ValueError as exc:
        assert "he-lite" in str(exc)
    else:  # pragma: no cover - the point of the test
        raise AssertionError("an unknown mode must not fall back to another")


def test_sampling_takes_all_or_a_subset_without_repeats() -> None:
    sites = [f"s{i}" for i in range(10)]
    assert _sample(sites, 0, 1, 1) == sorted(sites)
    chosen = _sample(sites, 4, 1, 1)
    assert len(chosen) == len(set(chosen)) == 4 and set(chosen) <= set(sites)


def test_catchup_lists_missed_rounds_in_order() -> None:
    state = RunState(run_id=1, flower_run_id=2, aggregates={1: b"a", 2: b"b", 3: b"c"})
    state.applied["x"] = 1
    assert state.catchup_for("x") == ([2, 3], [b"b", b"c"])
    assert state.catchup_for("new") == ([1, 2, 3], [b"a", b"b", b"c"])
