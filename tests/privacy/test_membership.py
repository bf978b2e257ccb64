"""The membership-inference statistics on scores whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, norm

from fedseal.privacy.membership import auc, empirical_epsilon, membership_audit


def _scores(shift: float, n: int = 2000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    return generator.normal(shift, 1.0, n), generator.normal(0.0, 1.0, n)


def test_auc_is_the_mann_whitney_statistic_with_ties() -> None:
    members = np.array([0.9, 0.5, 0.5, 0.3, 0.8, 0.1])
    others = np.array([0.5, 0.2, 0.2, 0.7, 0.1])
    u = mannwhitneyu(members, others).statistic
    assert auc(members, others) == pytest.approx(u / (len(members) * len(others)))


def _gdp_epsilon(mu: float, delta: float) -> float:
    """ε of μ-GDP at δ (Dong, Roth and Su 2019), by bisection."""

    def delta_of(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - np.exp(eps) * norm.cdf(-eps / mu - mu / 2)

    low, high = 0.0, 50.0
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if delta_of(middle) > delta else (low, middle)
    return high


def test_no_signal_is_indistinguishable_and_proves_no_epsilon() -> None:
    result = membership_audit(*_scores(0.0), delta=1e-5)
    assert result.indistinguishable
    assert abs(result.auc - 0.5) < 0.03
    assert result.epsilon_lower < 0.3


def test_a_leaking_model_is_caught_and_bounded_below() -> None:
    result = membership_audit(*_scores(2.0), delta=1e-5)
    assert not result.indistinguishable and result.auc_low > 0.85
    # two unit Gaussians two apart are exactly 2-GDP: a sound lower bound stays below the ε
    # that 2-GDP has at this δ, and 2,000 records each side already prove a good part of it
    assert 2.0 < result.epsilon_lower < _gdp_epsilon(2.0, 1e-5)


def test_the_bound_never_exceeds_what_perfect_separation_allows() -> None:
    members, others = np.arange(100.0, 200.0), np.arange(0.0, 100.0)
    bound = empirical_epsilon(members, others, delta=1e-5)
    # 50 checked records each side with no errors: Clopper–Pearson keeps each rate ≥ ~7 %
    assert 1.5 < bound < 3.5


def test_too_few_records_or_non_finite_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 10"):
        membership_audit(np.ones(5), np.ones(50), delta=1e-5)
    with pytest.raises(ValueError, match="finite"):
        membership_audit(np.r_[np.ones(20), np.nan], np.ones(50), delta=1e-5)
