"""Classification metrics in plain numpy (no scikit-learn dependency on the sites).

ROC AUC is computed from average ranks (the Mann-Whitney statistic), so tied scores count one half.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "binary_auc", "roc_auc"]


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of predictions equal to the label; NaN for no examples."""
    truth = np.asarray(y_true).reshape(-1)
    pred = np.asarray(y_pred).reshape(-1)
    if truth.shape != pred.shape:
        raise ValueError(f"y_true has {truth.size} labels but y_pred has {pred.size}")
    if truth.size == 0:
        return float("nan")
    return float(np.mean(truth == pred))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # start index of each run of equal values
    boundaries = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1], True])
    starts, ends = boundaries[:-1], boundaries[1:]
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def binary_auc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of `scores` for a boolean target; NaN unless both classes are present."""
    positive = np.asarray(is_positive, dtype=bool).reshape(-1)
    score = np.asarray(scores, dtype=np.float64).reshape(-1)
    if positive.shape != score.shape:
        raise ValueError(f"{positive.size} targets but {score.size} scores")
    if not np.all(np.isfinite(score)):
        raise ValueError("scores must be finite")
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = _average_ranks(score)[positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC for integer labels.

    `scores` is either 1-D (binary: the score of class 1) or `(n, num_classes)`. With two columns
    class 1 is the positive class; with more, the result is the macro one-vs-rest mean over the
    classes present in `y_true` (NaN if fewer than two classes are present).
    """
    labels = np.asarray(y_true).reshape(-1)
    score = np.asarray(scores, dtype=np.float64)
    if score.ndim == 1:
        return binary_auc(labels == 1, score)
    if score.ndim != 2 or score.shape[0] != labels.size:
        raise ValueError(f"scores must have shape ({labels.size}, num_classes), got {score.shape}")
    num_classes = score.shape[1]
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes})")
    if num_classes == 2:
        return binary_auc(labels == 1, score[:, 1])
    present = np.unique(labels)
    if present.size < 2:
        return float("nan")
    return float(np.mean([binary_auc(labels == c, score[:, c]) for c in present]))
