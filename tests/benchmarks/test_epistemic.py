"""benchmarks.epistemic's ranking metrics against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.epistemic import auroc, ranks, spearman


def test_ranks_order_values_and_break_ties_by_position() -> None:
    np.testing.assert_array_equal(ranks(np.array([3.0, 1.0, 2.0, 1.0])), [3, 0, 2, 1])


def test_spearman_is_one_for_any_increasing_map_and_minus_one_reversed() -> None:
    x = np.array([0.1, 5.0, 2.0, 3.0, -1.0])
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert spearman(x, -(x**3)) == pytest.approx(-1.0)
    # One swapped neighbour pair of 5: rho = 1 - 6 * 2 / (5 * 24) = 0.9.
    assert spearman(np.arange(5.0), np.array([0.0, 2.0, 1.0, 3.0, 4.0])) == pytest.approx(0.9)


def test_auroc_counts_positive_negative_pairs_ordered_right() -> None:
    positive = np.array([True, True, False, False, False])
    assert auroc(np.array([5.0, 4.0, 3.0, 2.0, 1.0]), positive) == 1.0
    assert auroc(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), positive) == 0.0
    # Pairs (pos, neg) with pos above: 5 > {3, 2, 1}, 2.5 > {2, 1}: 5 of 6.
    assert auroc(np.array([5.0, 2.5, 3.0, 2.0, 1.0]), positive) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="positives and negatives"):
        auroc(np.ones(3), np.zeros(3, dtype=bool))
