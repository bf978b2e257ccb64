"""Membership inference against a trained model: the attack's AUC and the ε it proves.

A DP guarantee says no test can tell a training record from a record that was left out better
than ε allows. This module measures how well one standard test does — a threshold on a
per-record score (the model's loss, or its confidence in the true label; higher score = "member")
— from the scores of records that were trained on (members) and of records of the same
distribution that were not (non-members):

- the attack's ROC AUC (0.5 = no better than a coin), with a bootstrap confidence interval;
- an empirical lower bound on ε (Jagielski et al. 2020, "Auditing Differentially Private
  Machine Learning"; Nasr et al. 2021): any (ε, δ)-DP mechanism forces every threshold test
  to satisfy FPR + e^ε·FNR ≥ 1 − δ and FNR + e^ε·FPR ≥ 1 − δ, so a test's error rates, bounded
  above with Clopper–Pearson intervals, bound ε below. The threshold is chosen on one half of the
  records and the bound is evaluated on the other half, so the choice does not inflate it.

A lower bound is evidence, not a proof of privacy: a weak attack gives a small bound whatever
the model. It is a check that the noise the sites signed for is not contradicted by an attack.
The bootstrap resamples with NumPy's generator: nothing here is secret.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import beta, rankdata

__all__ = ["MembershipAudit", "auc", "empirical_epsilon", "membership_audit"]


@dataclass(frozen=True)
class MembershipAudit:
    """One attack's result on one model; `as_fields()` is what a site signs and shows."""

    attack: str
    members: int
    non_members: int
    auc: float
    auc_low: float
    auc_high: float
    epsilon_lower: float  # at `confidence`, for `delta`
    delta: float
    confidence: float

    def as_fields(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def indistinguishable(self) -> bool:
        """The attack does no better than chance within its confidence interval."""
        return self.auc_low <= 0.5 <= self.auc_high


def auc(members: np.ndarray, non_members: np.ndarray) -> float:
    """P(member score > non-member score) + ½·P(tie): the Mann–Whitney form of the ROC AUC."""
    ranks = rankdata(np.concatenate([members, non_members]))
    n_m, n_n = len(members), len(non_members)
    return float((ranks[:n_m].sum() - n_m * (n_m + 1) / 2) / (n_m * n_n))


def _bootstrap_auc(
    members: np.ndarray, non_members: np.ndarray, resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    generator = np.random.default_rng(seed)
    values = [
        auc(
            members[generator.integers(0, len(members), len(members))],
            non_members[generator.integers(0, len(non_members), len(non_members))],
        )
        for _ in range(resamples)
    ]
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _upper(errors: int, trials: int, confidence: float) -> float:
    """One-sided Clopper–Pearson upper bound on an error rate."""
    if errors >= trials:
        return 1.0
    return float(beta.ppf(confidence, errors + 1, trials - errors))


def _epsilon_from_rates(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> np.ndarray:
    """The smallest ε consistent with tests of these error rates (0 where none is excluded)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        one = np.log((1 - delta - fpr) / fnr)
        other = np.log((1 - delta - fnr) / fpr)
    bounds = np.stack([np.zeros_like(one), one, other])
    bounds[~np.isfinite(bounds)] = 0.0
    return np.asarray(bounds.max(axis=0))


def _errors(
    members: np.ndarray, non_members: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(false positives, false negatives) of "member when score ≥ t" for every t."""
    false_pos = len(non_members) - np.searchsorted(np.sort(non_members), thresholds, "left")
    false_neg = np.searchsorted(np.sort(members), thresholds, "left")
    return false_pos, false_neg


def empirical_epsilon(
    members: np.ndarray, non_members: np.ndarray, *, delta: float, confidence: float = 0.95
) -> float:
    """A lower bound on ε at `confidence`: the threshold chosen on the even-indexed records,
    its error rates bounded (Clopper–Pearson; both at once by a union bound) on the odd ones."""
    choose_m, check_m = members[0::2], members[1::2]
    choose_n, check_n = non_members[0::2], non_members[1::2]
    thresholds = np.unique(np.concatenate([choose_m, choose_n]))
    fp, fn = _errors(choose_m, choose_n, thresholds)
    point = _epsilon_from_rates(fp / len(choose_n), fn / len(choose_m), delta)
    threshold = thresholds[int(np.argmax(point))]
    fp, fn = _errors(check_m, check_n, np.array([threshold]))
    each = 1 - (1 - confidence) / 2  # both bounds hold together with probability ≥ confidence
    fpr = _upper(int(fp[0]), len(check_n), each)
    fnr = _upper(int(fn[0]), len(check_m), each)
    return float(_epsilon_from_rates(np.array([fpr]), np.array([fnr]), delta)[0])


def membership_audit(
    members: np.ndarray,
    non_members: np.ndarray,
    *,
    delta: float,
    attack: str = "loss-threshold",
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> MembershipAudit:
    """The attack's AUC with its bootstrap interval and the empirical ε lower bound.

    `members` and `non_members` are per-record attack scores, higher meaning "member" (for the
    loss attack: the negative loss). Both need at least 10 records.
    """
    members = np.asarray(members, dtype=np.float64)
    non_members = np.asarray(non_members, dtype=np.float64)
    if len(members) < 10 or len(non_members) < 10:
        raise ValueError("a membership audit needs at least 10 members and 10 non-members")
    if not (np.isfinite(members).all() and np.isfinite(non_members).all()):
        raise ValueError("attack scores must be finite")
    low, high = _bootstrap_auc(members, non_members, resamples, confidence, seed)
    return MembershipAudit(
        attack=attack,
        members=len(members),
        non_members=len(non_members),
        auc=auc(members, non_members),
        auc_low=low,
        auc_high=high,
        epsilon_lower=empirical_epsilon(members, non_members, delta=delta, confidence=confidence),
        delta=delta,
        confidence=confidence,
    )
