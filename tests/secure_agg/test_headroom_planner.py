"""The planner picks a scale whose worst case cannot wrap, and refuses configurations that could."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tenseal.sealapi as sealapi
from hypothesis import given, settings
from hypothesis import strategies as st

from fedseal.secure_agg import recipe
from fedseal.secure_agg.errors import ConfigurationError, WrapAroundRisk
from fedseal.secure_agg.params import (
    HE_STANDARD_MAX_COEFF_BITS,
    BfvParams,
    Mode,
    ProtocolParams,
    plan,
)


def test_security_table_matches_seal():
    for n, bits in HE_STANDARD_MAX_COEFF_BITS.items():
        assert sealapi.CoeffModulus.MaxBitCount(n, sealapi.SEC_LEVEL_TYPE.TC128) == bits


def test_default_bfv_is_128_bit_secure_and_batching():
    p = BfvParams()
    assert sum(p.coeff_mod_bit_sizes) <= HE_STANDARD_MAX_COEFF_BITS[p.poly_modulus_degree]
    assert p.plain_modulus % (2 * p.poly_modulus_degree) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"coeff_mod_bit_sizes": (60, 60)},  # 120 > 109 bits for N = 4096
        {"coeff_mod_bit_sizes": (54,)},  # no special prime
        {"plain_modulus": 1073643523},  # not prime
        {"plain_modulus": 1032193 + 2 * 8192 - 1},  # not 1 mod 2N
        {"poly_modulus_degree": 3000},
        {"coeff_mod_bit_sizes": (30, 55)},  # data prime barely above t
    ],
)
def test_bfv_params_refused(kwargs):
    with pytest.raises(ConfigurationError):
        BfvParams(**kwargs)


@settings(max_examples=200, deadline=None)
@given(
    clip=st.floats(1e-3, 1e3),
    max_weight=st.integers(1, 100_000),
    n_sites=st.integers(2, 1000),
)
def test_planned_scale_never_wraps(clip, max_weight, n_sites):
    try:
        params = plan(
            vector_length=10, clip=clip, max_weight=max_weight, n_sites=n_sites, mode=Mode.PLAIN
        )
    except WrapAroundRisk as exc:
        assert str(n_sites) in str(exc)
        return
    t = params.bfv.plain_modulus
    worst = n_sites * math.ceil(max_weight * clip * params.scale)
    assert worst <= (t - 1) // 2
    assert n_sites * max_weight <= (t - 1) // 2
    # and it is the largest power of two that fits: doubling it would risk a wrap
    doubled = n_sites * math.ceil(max_weight * clip * params.scale * 2)
    assert doubled > (t - 1) // 2


def test_impossible_configuration_names_the_numbers():
    with pytest.raises(WrapAroundRisk) as info:
        plan(vector_length=10, clip=1.0, max_weight=10**7, n_sites=100)
    message = str(info.value)
    assert "100" in message and "10000000" in message and str(BfvParams().plain_modulus) in message


def test_explicit_scale_that_could_wrap_is_refused():
    with pytest.raises(WrapAroundRisk):
        plan(vector_length=10, clip=1.0, max_weight=100, n_sites=10, scale=2.0**20)


@pytest.mark.parametrize("threshold", [1, 5, 11])
def test_threshold_must_be_a_majority(threshold):
    with pytest.raises(ConfigurationError, match="threshold"):
        plan(vector_length=10, clip=1.0, max_weight=10, n_sites=10, threshold=threshold)


def test_noise_budget_checked():
    small = BfvParams(coeff_mod_bit_sizes=(40, 55))  # ~5 bits of fresh budget at t = 2^30
    with pytest.raises(ConfigurationError, match="noise"):
        plan(vector_length=10, clip=1.0, max_weight=10, n_sites=10, bfv=small)
    # plain mode does not encrypt, so the same BFV parameters are fine there
    plan(vector_length=10, clip=1.0, max_weight=10, n_sites=10, bfv=small, mode=Mode.PLAIN)


def test_worst_case_inputs_do_not_wrap(federation):
    """Every site at the maximum weight and every coordinate at +clip, then at -clip."""
    fed = federation(10, Mode.PLAIN, vector_length=64, max_weight=1000)
    params: ProtocolParams = fed.params
    for sign in (1.0, -1.0):
        info = fed.info(1)
        total = recipe.UploadSum(info, directory=fed.directory)
        for s in fed.ids:
            total.add(
                recipe.site_prepare_upload(
                    info,
                    fed.identities[s],
                    np.full(params.vector_length, sign * params.clip * 1.5),
                    weight=params.max_weight,
                    randbytes=lambda n: bytes(n),
                ).message
            )
        message, _ = recipe.aggregator_unmask(info, total)
        aggregate = recipe.site_decrypt_aggregate(info, message)
        expected = sign * 10 * math.ceil(params.max_weight * params.clip * params.scale)
        assert np.all(aggregate.sums == expected)
        assert aggregate.total_weight == 10 * params.max_weight
        np.testing.assert_allclose(aggregate.mean(), sign * params.clip, rtol=1e-6)


def test_threshold_for_colluding_sites():
    from fedseal.secure_agg.params import default_threshold

    assert default_threshold(10) == 6
    assert default_threshold(10, max_colluding=3) == 7  # 2k > n + c
    assert default_threshold(9, max_colluding=2) == 6
    for n in range(2, 40):
        for c in range(n):
            try:
                k = default_threshold(n, c)
            except ConfigurationError:
                assert (n + c) // 2 + 1 > n
                continue
            assert 2 * k > n + c and 2 * (k - 1) <= n + c and k <= n
    with pytest.raises(ConfigurationError):
        plan(vector_length=10, clip=1.0, max_weight=10, n_sites=10, threshold=6, max_colluding=2)
    assert (
        plan(vector_length=10, clip=1.0, max_weight=10, n_sites=9, max_colluding=3).threshold == 7
    )
