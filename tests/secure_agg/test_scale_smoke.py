"""Smoke run of bench/bench_scale.py (protocol part): small rounds, all pairs and a graph."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_scale.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_scale", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_protocol_rounds_at_small_scale(bench):
    gen = np.random.default_rng(1)
    n, length = 12, 3000
    updates = {f"site-{i:03d}": gen.normal(0, 0.05, length) for i in range(n)}
    dropped = {"site-003"}
    dense = bench.Federation.make(n, length, sparse_above=n)
    sparse = bench.Federation.make(n, length, sparse_above=0, neighbours=4)
    assert dense.params.neighbours == 0 and sparse.params.neighbours == 4
    costs = {
        "dense": bench.summarise(bench.secure_round(dense, updates, dropped)),
        "sparse": bench.summarise(bench.secure_round(sparse, updates, dropped)),
        "plain": bench.summarise(bench.plaintext_round(sorted(updates), updates)),
    }
    # a neighbour graph shrinks what the key stages cost and what the coordinator keeps
    assert costs["sparse"]["keys_shares_mib"] < costs["dense"]["keys_shares_mib"]
    assert costs["sparse"]["site_received_kb"] < costs["dense"]["site_received_kb"]
    for name in ("dense", "sparse"):
        assert costs[name]["coord_received_mb"] > costs["plain"]["coord_received_mb"]
        assert costs[name]["coord_kept_mib"] < 5
    assert bench.slope([10, 100], [1.0, 100.0]) == pytest.approx(2.0)
