from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedseal.models.metrics import accuracy, binary_auc, roc_auc


def _pairwise_auc(pos: np.ndarray, scores: np.ndarray) -> float:
    p, n = scores[pos], scores[~pos]
    wins = sum((a > b) + 0.5 * (a == b) for a in p for b in n)
    return wins / (len(p) * len(n))


def test_accuracy_hand_cases() -> None:
    assert accuracy(np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2])) == 0.75
    assert math.isnan(accuracy(np.array([]), np.array([])))
    with pytest.raises(ValueError):
        accuracy(np.array([0, 1]), np.array([0]))


def test_binary_auc_hand_cases() -> None:
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert roc_auc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert roc_auc(y, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert roc_auc(y, np.full(4, 0.5)) == 0.5  # all tied
    # one tie between a positive and a negative counts one half: (1 + 0.5 + 1 + 1) / 4
    assert roc_auc(y, np.array([0.1, 0.5, 0.5, 0.9])) == 0.875
    two_columns = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    assert roc_auc(y, two_columns) == 0.75
    assert math.isnan(roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_multiclass_macro_one_vs_rest_over_present_classes() -> None:
    y = np.array([0, 1, 2, 2])
    scores = np.array(
        [[0.8, 0.1, 0.1, 0.0], [0.1, 0.8, 0.1, 0.0], [0.3, 0.3, 0.4, 0.0], [0.6, 0.1, 0.3, 0.0]]
    )
    # class 0: pos score .8 vs .1 .3 .6 -> 1; class 1: .8 vs .1 .3 .1 -> 1;
    # class 2: pos .4 .3 vs neg .1 .1 -> 1; class 3 absent from y -> ignored
    assert roc_auc(y, scores) == 1.0
    scores[3] = [0.1, 0.1, 0.05, 0.75]  # class 2's positive .05 now loses to .1 and .1
    # class 0: .8 vs .1 .3 .1 -> 1; class 1: 1; class 2: pos .4 .05 vs .1 .1 -> 2/4
    assert roc_auc(y, scores) == pytest.approx((1 + 1 + 0.5) / 3)
    with pytest.raises(ValueError):
        roc_auc(np.array([0, 5]), scores[:2])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(min_value=0, max_value=5)), min_size=2, max_size=30
    )
)
def test_binary_auc_matches_pairwise_definition(rows) -> None:
    pos = np.array([r[0] for r in rows])
    scores = np.array([r[1] for r in rows], dtype=float)
    result = binary_auc(pos, scores)
    if pos.all() or not pos.any():
        assert math.isnan(result)
    else:
        assert result == pytest.approx(_pairwise_auc(pos, scores))
