"""Bootstrap intervals over problems (tsq/evaluation/intervals.py), against hand-computed values."""

import math

import numpy as np
import pandas as pd
import pytest

from tsq.evaluation.intervals import (
    Interval,
    bootstrap_ratio,
    paired_bootstrap_ratio,
    per_problem_sums,
    seed_aware_interval,
)

SAMPLES = pd.DataFrame(
    {
        "problem_id": ["p1", "p1", "p2", "p2"],
        "correct": [True, False, True, True],
        "n_tokens": [10, 20, 30, 50],
        "n_steps": [2, 4, 3, 5],
        "step_tokens": [8, 16, 27, 45],
    }
)


@pytest.mark.parametrize(
    "metric, num, den, pooled",
    [
        ("acc", [1, 2], [2, 2], 3 / 4),
        ("len_a", [30, 80], [2, 2], 110 / 4),
        ("len_t", [10, 80], [1, 2], 90 / 3),  # tokens of correct samples over correct samples
        ("step_len", [8, 72], [2, 8], 80 / 10),  # step tokens of correct samples over their steps
    ],
)
def test_sums_per_problem_and_the_pooled_ratio(metric, num, den, pooled):
    sums = per_problem_sums(SAMPLES, metric)
    assert sums["num"].tolist() == num and sums["den"].tolist() == den
    interval = bootstrap_ratio(sums, n_boot=200)
    assert interval.estimate == pytest.approx(pooled) and interval.low <= pooled <= interval.high


def test_problems_that_all_agree_leave_no_uncertainty():
    sums = pd.DataFrame({"num": [3.0] * 10, "den": [4.0] * 10}, index=[f"p{i}" for i in range(10)])
    assert bootstrap_ratio(sums) == Interval(0.75, 0.75, 0.75)


def test_paired_difference_of_a_row_with_itself_and_of_a_constant_shift():
    sums = per_problem_sums(SAMPLES, "len_a")
    assert paired_bootstrap_ratio(sums, sums) == Interval(0.0, 0.0, 0.0)
    longer = per_problem_sums(SAMPLES.assign(n_tokens=SAMPLES["n_tokens"] + 5), "len_a")
    assert paired_bootstrap_ratio(sums, longer) == Interval(5.0, 5.0, 5.0)  # every resample: 5 tokens longer
    with pytest.raises(ValueError, match=r"same problems; not in both: \['p2'\]"):
        paired_bootstrap_ratio(sums, sums.loc[["p1"]])


def test_the_interval_covers_the_true_accuracy_about_95_times_in_100():
    true_acc, covered = 0.8, 0
    for rep in range(200):
        rng = np.random.default_rng(rep)
        correct = rng.random((100, 4)) < true_acc  # 100 problems x 4 samples
        sums = pd.DataFrame({"num": correct.sum(1).astype(float), "den": 4.0})
        covered += not bootstrap_ratio(sums, n_boot=1000, seed=rep).excludes(true_acc)
    assert 0.90 <= covered / 200 <= 0.99


def test_pairing_resolves_a_difference_that_separate_intervals_cannot():
    """Problems of very different difficulty, and a second row right on one more sample of every other
    problem: each row's own interval is wide (the spread between problems), the paired one is not."""
    rng = np.random.default_rng(0)
    k = rng.integers(0, 16, size=200).astype(float)  # correct samples of 16, per problem
    a = pd.DataFrame({"num": k, "den": 16.0})
    b = pd.DataFrame({"num": k + np.arange(200) % 2, "den": 16.0})  # (k <= 15: never above 16)
    diff = paired_bootstrap_ratio(a, b)
    assert diff.estimate == pytest.approx((b["num"].sum() - a["num"].sum()) / (16 * 200))
    assert diff.low > 0  # the paired interval excludes "no difference"
    alone_a, alone_b = bootstrap_ratio(a), bootstrap_ratio(b)
    assert alone_b.low < alone_a.high  # separately, the two rows' intervals overlap


# ---------------------------------------------------------------------------------------------- across seeds
def test_the_seed_aware_interval_by_hand():
    """Two seeds, two problems, 2 samples each: per-seed accuracies of row and versus, their differences, the
    pooled difference, and the seeds' standard error s / sqrt(S)."""

    row = (np.array([[2.0, 1.0], [1.0, 1.0]]), np.full((2, 2), 2.0))  # accuracies 3/4, 2/4
    versus = (np.array([[1.0, 1.0], [1.0, 0.0]]), np.full((2, 2), 2.0))  # 2/4, 1/4
    interval = seed_aware_interval(row, versus, n_boot=200)
    assert interval.per_seed == pytest.approx((0.25, 0.25))
    assert interval.estimate == pytest.approx(5 / 8 - 3 / 8) and interval.se_seeds == 0.0
    # both problems differ by 1/4 pooled over the seeds ((3 - 2) / 4 and (2 - 1) / 4): no resample moves the difference
    assert interval.se_problems == 0.0 and interval.df == np.inf and interval.low == interval.high == 0.25
    spread = seed_aware_interval((np.array([[2.0, 2.0], [0.0, 0.0]]), np.full((2, 2), 2.0)), n_boot=200)
    assert spread.per_seed == pytest.approx((1.0, 0.0)) and spread.se_seeds == pytest.approx(0.5)  # sd 0.707 / sqrt(2)
    # t at 1 degree of freedom (12.7) x 0.5 reaches far past an accuracy's range; clipped to it, the rest unchanged
    assert spread.low < 0 and spread.high > 1
    bounded = seed_aware_interval((np.array([[2.0, 2.0], [0.0, 0.0]]), np.full((2, 2), 2.0)), n_boot=200, bounds=(0, 1))
    assert (bounded.low, bounded.high) == (0, 1) and bounded.estimate == spread.estimate == 0.5


def test_a_seed_without_a_value_leaves_the_spread_unestimated_not_zero():
    """Len-T at three seeds on two problems; at seed 2 nothing is correct, so it has no Len-T. Two seeds left: their
    spread is estimated from them (per seed 5 and 7 tokens). One left of three: the interval is undefined (NaN), not
    the narrower one-seed interval that takes the spread as none. A single run's one seed keeps its interval."""
    tokens = np.array([[10.0, 0.0], [14.0, 0.0], [0.0, 0.0]])  # correct tokens per seed and problem
    correct = np.array([[2.0, 0.0], [2.0, 0.0], [0.0, 0.0]])
    two = seed_aware_interval((tokens, correct), n_boot=200)
    assert two.per_seed[:2] == (5.0, 7.0) and math.isnan(two.per_seed[2])
    assert two.estimate == 6.0 and two.se_seeds == pytest.approx(1.0)  # sqrt(var(5, 7) / 2)
    assert math.isfinite(two.low) and math.isfinite(two.high)
    tokens[1], correct[1] = 0.0, 0.0
    one = seed_aware_interval((tokens, correct), n_boot=200)
    assert one.estimate == 5.0 and math.isnan(one.low) and math.isnan(one.high)
    alone = seed_aware_interval((tokens[:1], correct[:1]), n_boot=200)
    assert alone.estimate == 5.0 and math.isfinite(alone.low)


@pytest.mark.parametrize("sd_points", [0.0, 0.5, 1.0])
def test_the_seed_aware_interval_covers_the_true_difference_at_the_protocols_seed_count(sd_points):
    """Nominal 95% at 5 seeds, 250 problems, 16 samples: at least 93% of 1,500 simulated reruns cover the truth,
    with no seed effect and with per-seed SDs of 0.5 and 1 point; the problem bootstrap alone does not."""
    from benchmarks.interval_coverage import simulate

    coverage = {k: v[0] for k, v in simulate(sd_points / 100, 1500, np.random.default_rng(7), n_boot=300).items()}
    assert coverage["seed-aware (tsq)"] >= 0.93, coverage
    if sd_points == 1.0:
        assert coverage["problems only"] < 0.85, coverage  # what the tables' intervals covered before
