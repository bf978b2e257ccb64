"""Decrypted aggregates equal the sum of the quantised inputs exactly, with or without dropouts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from secagg_harness import DROP_STAGES

from fedseal.secure_agg import errors as errors_
from fedseal.secure_agg.errors import InsufficientSurvivors
from fedseal.secure_agg.params import Mode


def _check(outcome) -> None:
    np.testing.assert_array_equal(outcome.aggregate.sums, outcome.expected_sums)
    assert outcome.aggregate.total_weight == outcome.expected_weight
    assert outcome.aggregate.contributors == outcome.contributors


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("n_sites", [3, 5, 10])
def test_no_dropout_every_mode(federation, mode, n_sites):
    fed = federation(n_sites, mode)
    outcome = fed.run_round(1)
    _check(outcome)
    assert outcome.contributors == tuple(fed.ids)
    mean = outcome.aggregate.mean()
    assert mean.shape == (fed.params.vector_length,)
    assert np.all(np.abs(mean) <= fed.params.clip + 1 / fed.params.scale)


@pytest.mark.parametrize("mode", [Mode.PLAIN, Mode.HE])
@pytest.mark.parametrize("n_sites", [3, 5, 10])
def test_dropped_uploads_plain_and_he(federation, mode, n_sites):
    fed = federation(n_sites, mode)
    k = fed.params.threshold
    for dropped in range(1, n_sites - k + 1):
        outcome = fed.run_round(10 + dropped, drops={"upload": set(fed.ids[-dropped:])})
        _check(outcome)
        assert len(outcome.contributors) == n_sites - dropped


def _he_ss_cases():
    for n_sites in (3, 5, 10):
        k = n_sites // 2 + 1
        for stage in DROP_STAGES:
            for dropped in range(1, n_sites - k + 1):
                yield n_sites, stage, dropped


@pytest.mark.parametrize(("n_sites", "stage", "dropped"), list(_he_ss_cases()))
def test_he_ss_dropouts_at_each_stage(federation, n_sites, stage, dropped):
    fed = federation(n_sites, Mode.HE_SS)
    # drop sites spread over the id order, so signs of pairwise masks differ among them
    victims = set(fed.ids[1::2][:dropped]) if dropped <= n_sites // 2 else set(fed.ids[:dropped])
    outcome = fed.run_round(100 + dropped, drops={stage: victims})
    _check(outcome)
    if stage in ("advertise", "share", "upload"):
        assert set(outcome.contributors) == set(fed.ids) - victims
    else:  # uploaded before dropping: their update is in the aggregate
        assert set(outcome.contributors) == set(fed.ids)


def test_he_ss_dropouts_spread_over_all_stages(federation):
    fed = federation(10, Mode.HE_SS)  # k = 6: four sites may drop in total
    for round_no, combo in enumerate(itertools.combinations(DROP_STAGES, 4)):
        drops = {stage: {fed.ids[2 * i + 1]} for i, stage in enumerate(combo)}
        _check(fed.run_round(200 + round_no, drops=drops))


def test_every_survivor_decrypts_the_same_aggregate(federation):
    fed = federation(5, Mode.HE_SS)
    outcomes = [
        fed.run_round(300, drops={"upload": {"site-01"}}, decrypt_as=s)
        for s in ("site-00", "site-03")
    ]
    for outcome in outcomes:
        _check(outcome)


@pytest.mark.parametrize("stage", ["advertise", "share", "upload", "ack", "release"])
def test_below_threshold_aborts(federation, stage):
    fed = federation(5, Mode.HE_SS)  # k = 3
    with pytest.raises(InsufficientSurvivors):
        fed.run_round(400, drops={stage: {"site-00", "site-02", "site-04"}})


def test_more_sites_than_planned_refused(federation):
    fed = federation(3, Mode.HE)
    with pytest.raises(errors_.ConfigurationError):
        fed.info(1, sampled=[*fed.ids, "site-99"])
