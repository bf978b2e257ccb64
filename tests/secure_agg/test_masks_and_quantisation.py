"""PRG masks, quantisation and the masking algebra, without encryption."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from secagg_harness import BUCKETS, chi_square_critical, chi_square_uniform, rng

from fedseal.secure_agg import masking, prg, quantise
from fedseal.secure_agg.params import DEFAULT_PLAIN_MODULUS

T = DEFAULT_PLAIN_MODULUS
SEED = bytes(range(32))


# --------------------------------------------------------------------------- prg


@pytest.mark.parametrize("modulus", [T, 2**32 - 5, 2**31 + 11, 3 * 2**61 - 1, 97])
def test_masks_are_uniform_mod_t(modulus):
    mask = prg.expand_mask(
        SEED, 64_000, modulus, purpose=prg.Purpose.PAIR_MASK, run_id="r", round_no=1
    )
    assert mask.dtype == np.uint64 and int(mask.max()) < modulus
    if modulus > 2**20:
        assert chi_square_uniform(mask, modulus) < chi_square_critical(BUCKETS - 1)
    else:  # small modulus: one bucket per residue
        counts = np.bincount(mask.astype(np.int64), minlength=modulus)
        expected = mask.size / modulus
        statistic = float(((counts - expected) ** 2 / expected).sum())
        assert statistic < chi_square_critical(modulus - 1)


def test_masks_are_deterministic_and_domain_separated():
    base = {"purpose": prg.Purpose.SELF_MASK, "run_id": "r", "round_no": 1}
    a = prg.expand_mask(SEED, 1000, T, **base)
    np.testing.assert_array_equal(a, prg.expand_mask(SEED, 1000, T, **base))
    np.testing.assert_array_equal(a[:10], prg.expand_mask(SEED, 10, T, **base))  # prefix-stable
    for change in (
        {"purpose": prg.Purpose.PAIR_MASK},
        {"run_id": "s"},
        {"round_no": 2},
    ):
        other = prg.expand_mask(SEED, 1000, T, **{**base, **change})
        assert np.count_nonzero(other == a) < 5


def test_rejection_sampling_drops_biased_words():
    """A stream of words all above the largest multiple of t must be skipped, not reduced."""
    limit = (2**32 // T) * T
    words = iter([np.full(1000, 2**32 - 1, dtype="<u4").tobytes()] + [None] * 100)
    fallback = rng("reject")

    def stream(n: int) -> bytes:
        first = next(words)
        return first[:n] if first is not None and len(first) >= n else fallback(n)

    out = prg.uniform_mod(stream, 100, T)
    assert limit < 2**32 - 1
    assert int(out.max()) < T


def test_seed_length_checked():
    with pytest.raises(ValueError):
        prg.derive_stream_key(b"short", purpose=prg.Purpose.RANDOM, run_id="r", round_no=1)


# --------------------------------------------------------------------------- quantise


def test_stochastic_rounding_is_unbiased():
    values = np.full(200_000, 0.3)
    rounded = quantise.stochastic_round(values, rng("unbiased"))
    assert set(np.unique(rounded)) == {0, 1}
    assert abs(rounded.mean() - 0.3) < 0.005


def test_quantise_clips_and_counts():
    update = np.array([-3.0, -0.5, 0.0, 0.25, 2.0])
    q = quantise.quantise_weighted(update, weight=2, scale=4.0, clip=1.0, randbytes=rng("q"))
    assert q.n_clipped == 2
    np.testing.assert_array_equal(q.values, [-8, -4, 0, 2, 8])


def test_quantise_refuses_non_finite():
    with pytest.raises(ValueError):
        quantise.quantise_weighted(
            np.array([np.nan]), weight=1, scale=1.0, clip=1.0, randbytes=rng("nan")
        )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-(T - 1) // 2, (T - 1) // 2), min_size=1, max_size=50))
def test_encode_decode_centred_roundtrip(values):
    arr = np.array(values, dtype=np.int64)
    encoded = quantise.encode_mod(arr, T)
    assert int(encoded.max()) < T
    np.testing.assert_array_equal(quantise.decode_centred(encoded, T), arr)


# --------------------------------------------------------------------------- masking algebra


def _pair_seeds(ids):
    return {
        (a, b): bytes(rng("pair", min(a, b), max(a, b))(32)) for a in ids for b in ids if a != b
    }


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 8), data=st.data())
def test_masks_cancel_after_residual_removal(n, data):
    ids = [f"s{i}" for i in range(n)]
    dropped = set(data.draw(st.lists(st.sampled_from(ids), max_size=n - 1, unique=True)))
    alive = [s for s in ids if s not in dropped]
    length = 257
    inputs = {s: prg.uniform_mod(rng("x", s), length, T) for s in ids}
    self_seeds = {s: bytes(rng("b", s)(32)) for s in ids}
    pairs = _pair_seeds(ids)
    masked = {
        s: masking.mask_input(
            inputs[s],
            site_id=s,
            self_seed=self_seeds[s],
            pair_seeds={p: pairs[(s, p)] for p in ids if p != s},
            modulus=T,
            run_id="r",
            round_no=1,
        )
        for s in alive
    }
    total = sum(v.astype(object) for v in masked.values()) % T
    residual = masking.residual_mask(
        length,
        modulus=T,
        run_id="r",
        round_no=1,
        survivor_self_seeds={s: self_seeds[s] for s in alive},
        dropped_pair_seeds={(j, d): pairs[(j, d)] for j in alive for d in dropped},
    )
    unmasked = (total - residual.astype(object)) % T
    expected = sum(inputs[s].astype(object) for s in alive) % T
    np.testing.assert_array_equal(unmasked, expected)


def test_neighbour_sets_are_explicit():
    """A sparse (SecAgg+) graph works unchanged: masks only between listed neighbours."""
    ids = ["a", "b", "c", "d"]
    neighbours = {"a": ["b"], "b": ["a", "c"], "c": ["b", "d"], "d": ["c"]}
    pairs = _pair_seeds(ids)
    x = {s: np.full(50, i, dtype=np.uint64) for i, s in enumerate(ids)}
    seeds = {s: bytes(rng("nb", s)(32)) for s in ids}
    masked = [
        masking.mask_input(
            x[s],
            site_id=s,
            self_seed=seeds[s],
            pair_seeds={p: pairs[(s, p)] for p in neighbours[s]},
            modulus=T,
            run_id="r",
            round_no=1,
        )
        for s in ids
    ]
    residual = masking.residual_mask(
        50, modulus=T, run_id="r", round_no=1, survivor_self_seeds=seeds, dropped_pair_seeds={}
    )
    total = (sum(m.astype(object) for m in masked) - residual.astype(object)) % T
    assert set(total) == {0 + 1 + 2 + 3}


def test_pair_sign_is_antisymmetric():
    assert masking.pair_sign("a", "b") == -masking.pair_sign("b", "a") == 1
    with pytest.raises(ValueError):
        masking.pair_sign("a", "a")


@pytest.mark.parametrize("modulus", [T, 2**61 - 1, 97])
def test_mask_sums_match_term_by_term_reduction(modulus):
    """The masks are summed unreduced and folded mod t only when the uint64 room runs out (after
    7 terms for t = 2^61 - 1): the result is the sum reduced term by term."""
    ids = [f"s{i:02d}" for i in range(12)]
    me, length = "s05", 301
    x = prg.uniform_mod(rng("x", str(modulus)), length, modulus)
    self_seed = bytes(rng("b", me)(32))
    pairs = {p: bytes(rng("p", p)(32)) for p in ids if p != me}
    context = {"run_id": "r", "round_no": 1}

    def mask(seed, purpose):
        return prg.expand_mask(seed, length, modulus, purpose=purpose, **context).astype(object)

    expected = x.astype(object) + mask(self_seed, prg.Purpose.SELF_MASK)
    for peer, seed in pairs.items():
        expected += masking.pair_sign(me, peer) * mask(seed, prg.Purpose.PAIR_MASK)
    masked = masking.mask_input(
        x,
        site_id=me,
        self_seed=self_seed,
        pair_seeds=pairs,
        modulus=modulus,
        **context,
    )
    assert masked.dtype == np.uint64
    np.testing.assert_array_equal(masked.astype(object), expected % modulus)
    dropped = {(me, d): seed for d, seed in pairs.items()}
    residual = masking.residual_mask(
        length,
        modulus=modulus,
        survivor_self_seeds={me: self_seed},
        dropped_pair_seeds=dropped,
        **context,
    )
    np.testing.assert_array_equal(residual.astype(object), (expected - x.astype(object)) % modulus)
