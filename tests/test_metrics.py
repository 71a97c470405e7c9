import math

import numpy as np
import pytest

from tsq.evaluation import metrics as M

# Three samples: 10 tokens correct, 20 tokens wrong, 40 tokens correct; B_max = 50.
LENS, OK, BMAX = [10, 20, 40], [True, False, True], 50


def test_acc_len_t_len_a_by_hand():
    assert M.accuracy(OK) == pytest.approx(2 / 3)
    assert M.mean_length_correct(LENS, OK) == pytest.approx(25.0)
    assert M.mean_length_all(LENS) == pytest.approx(70 / 3)
    assert math.isnan(M.mean_length_correct(LENS, [False] * 3))


def test_auc_exact_equals_hand_integral_and_closed_form():
    # integral of acc(B) over [0, 50] = (50-10)/3 + (50-40)/3 = 50/3, divided by 50
    assert M.auc(LENS, OK, BMAX) == pytest.approx(1 / 3)
    assert M.auc(LENS, OK, BMAX) == pytest.approx(M.accuracy(OK) * (1 - M.mean_length_correct(LENS, OK) / BMAX))


def test_auc_on_a_grid_by_hand():
    # acc at 0,10,20,30,40,50 = 0, 1/3, 1/3, 1/3, 2/3, 2/3; trapezoids sum to 20, / 50
    assert M.auc(LENS, OK, BMAX, budgets=[10, 20, 30, 40]) == pytest.approx(0.4)
    assert M.auc(LENS, OK, BMAX, budgets=list(range(1, 51))) == pytest.approx(1 / 3, abs=0.01)


def test_correct_response_longer_than_budget_counts_as_wrong():
    assert M.auc([60], [True], 50) == 0.0
    np.testing.assert_allclose(M.budget_curve(LENS, OK, [5, 10, 39, 40, 100]), [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3])


def test_step_stats_and_relative_change():
    steps, step_len = M.step_stats([2, 3, 4], [8, 9, 20], OK)
    assert steps == pytest.approx(3.0) and step_len == pytest.approx(28 / 6)
    assert M.relative_change(75, 100) == pytest.approx(-0.25)


def test_stepless_responses_share_and_accuracy_by_hand():
    # 5 responses, 2 with no step: one of them right -> 2/5 of the responses, half of them right
    assert M.stepless([0, 3, 0, 2, 1], [True, True, False, False, True]) == (pytest.approx(0.4), pytest.approx(0.5))
    share, acc = M.stepless([1, 2], [True, False])
    assert share == 0.0 and acc != acc  # none without a step: their accuracy is undefined (NaN)
    with pytest.raises(ValueError):
        M.stepless([0, 1], [True])


def test_mismatched_inputs_fail():
    with pytest.raises(ValueError):
        M.mean_length_correct([1, 2], [True])
    with pytest.raises(ValueError):
        M.auc(LENS, OK, 0)
