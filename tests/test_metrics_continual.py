"""Continual summaries against values computed by hand on hand-built R matrices."""

import math

import numpy as np
import pytest

from cldf.metrics import (
    average_after_each,
    backward_transfer,
    continual_summary,
    final_average,
    forgetting,
    forgetting_after_each,
    matrices_from_cells,
    unseen_average,
)

# R[i][j]: after training experience i, tested on experience j.
R = np.array(
    [
        [0.90, 0.60, 0.50],
        [0.80, 0.95, 0.70],
        [0.70, 0.85, 0.90],
    ]
)


def test_summaries_of_hand_built_matrix():
    # seen averages: 0.9; (0.8 + 0.95) / 2; (0.7 + 0.85 + 0.9) / 3
    assert average_after_each(R) == pytest.approx([0.9, 0.875, 2.45 / 3])
    assert final_average(R) == pytest.approx(2.45 / 3)
    # after 1: j=0: 0.9 - 0.8; after 2: j=0: max(0.9, 0.8) - 0.7 = 0.2, j=1: 0.95 - 0.85 = 0.1
    assert forgetting_after_each(R)[1:] == pytest.approx([0.1, 0.15])
    assert math.isnan(forgetting_after_each(R)[0])
    assert forgetting(R) == pytest.approx(0.15)
    # ((0.7 - 0.9) + (0.85 - 0.95)) / 2
    assert backward_transfer(R) == pytest.approx(-0.15)
    # cells above the diagonal: 0.6, 0.5, 0.7
    assert unseen_average(R) == pytest.approx(0.6)
    summary = continual_summary(R.tolist())
    assert summary["average"] == pytest.approx(2.45 / 3)
    assert summary["bwt"] == pytest.approx(-0.15)


def test_forgetting_ignores_scores_from_before_training_on_the_experience():
    r = R.copy()
    r[0, 1] = 0.99  # unseen-generator score higher than after training on it
    # j=1 still forgets 0.95 - 0.85 (not 0.99 - 0.85): only rows i >= j count.
    assert forgetting(r) == pytest.approx(0.15)
    assert unseen_average(r) == pytest.approx((0.99 + 0.5 + 0.7) / 3)


def test_nan_cells_are_skipped():
    r = R.copy()
    r[2, 0] = np.nan  # e.g. a single-class test set
    assert final_average(r) == pytest.approx((0.85 + 0.9) / 2)
    assert forgetting(r) == pytest.approx(0.1)
    assert backward_transfer(r) == pytest.approx(-0.1)


def test_single_experience_has_no_forgetting_or_unseen():
    r = np.array([[0.8]])
    assert final_average(r) == pytest.approx(0.8)
    assert math.isnan(forgetting(r))
    assert math.isnan(backward_transfer(r))
    assert math.isnan(unseen_average(r))


def test_non_square_matrix_is_rejected():
    with pytest.raises(ValueError, match=r"square .* got \(2, 3\)"):
        final_average(R[:2])


def test_matrices_from_per_cell_predictions():
    cells = {
        (0, 0): {"auc": 0.9, "eer": 0.1},
        (0, 1): {"auc": 0.6, "eer": 0.4},
        (1, 1): {"auc": 0.8, "eer": 0.2},
    }
    matrices = matrices_from_cells(cells, 2)
    np.testing.assert_array_equal(matrices["auc"], [[0.9, 0.6], [np.nan, 0.8]])
    np.testing.assert_array_equal(matrices["eer"], [[0.1, 0.4], [np.nan, 0.2]])
    with pytest.raises(ValueError, match=r"cell \(train 2, test 0\) is outside a stream of 2"):
        matrices_from_cells({(2, 0): {"auc": 0.5}}, 2)
