"""The length rewards of online RL against values computed by hand from the papers' formulas."""

import pytest

from tsq.training.length_rewards import (
    Correctness,
    Group,
    KimiLength,
    OutlierTruncation,
    ShorterBetter,
    ThinkPrune,
    TruncationPenalty,
    correctness,
    kimi_length_term,
    limit_at,
    outlier_cut,
    shortest_correct_target,
    truncation_correctness,
)

# lengths 10, 20, 30, 40; the first and third correct; the last cut at the cap
GROUP = Group(lengths=(10, 20, 30, 40), correct=(True, False, True, False), truncated=(False, False, False, True))


def test_correctness_is_one_for_a_correct_response():
    assert correctness(GROUP) == [1.0, 0.0, 1.0, 0.0]
    assert Correctness().rewards(GROUP, step=0) == [1.0, 0.0, 1.0, 0.0]


def test_kimi_length_term_by_hand():
    # lambda = 0.5 - (len - 10) / 30: 0.5, 0.1667, -0.1667, -0.5; incorrect ones get min(0, lambda)
    assert kimi_length_term(GROUP) == pytest.approx([0.5, 0.0, -1 / 6, -0.5])
    # weight 2: correctness + 2 lambda
    assert KimiLength(weight=2.0).rewards(GROUP, 0) == pytest.approx([2.0, 0.0, 1 - 1 / 3, -1.0])


def test_kimi_length_term_of_equal_lengths_is_zero():
    group = Group((7, 7, 7), (True, False, True), (False, False, False))
    assert kimi_length_term(group) == [0.0, 0.0, 0.0]


def test_truncation_penalty_zeroes_correct_responses_over_the_limit_or_cut():
    group = Group((10, 25, 30, 40), (True, True, False, True), (False, False, False, True))
    assert truncation_correctness(group, limit=25) == [1.0, 1.0, 0.0, 0.0]
    assert truncation_correctness(group, limit=24) == [1.0, 0.0, 0.0, 0.0]
    parts = TruncationPenalty(limit=24).components(group, 0)
    assert parts == {"correctness": [1.0, 1.0, 0.0, 1.0], "over_limit": [0.0, -1.0, 0.0, -1.0]}
    assert TruncationPenalty(limit=24).rewards(group, 0) == [1.0, 0.0, 0.0, 0.0]


def test_thinkprune_limit_follows_its_schedule():
    schedule = [[0, 30], [10, 20], [20, 15]]
    assert [limit_at(s, schedule) for s in (0, 9, 10, 19, 20, 99)] == [30, 30, 20, 20, 15, 15]
    reward = ThinkPrune(schedule=schedule)
    group = Group((12, 18, 25), (True, True, True), (False, False, False))
    assert reward.rewards(group, 0) == [1.0, 1.0, 1.0]
    assert reward.rewards(group, 10) == [1.0, 1.0, 0.0]
    assert reward.rewards(group, 25) == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("schedule", [[], [[5, 30]], [[0, 30], [0, 20]], [[0, 0]]])
def test_a_bad_thinkprune_schedule_is_refused(schedule):
    with pytest.raises(ValueError, match="reward.schedule"):
        ThinkPrune(schedule=schedule)


def test_shorterbetter_by_hand():
    # target = shortest correct = 10; alpha 2, beta 0.1: 2 - 0, 0 - 1, 2 - 2, 0 - 3
    assert shortest_correct_target(GROUP) == 10.0
    assert ShorterBetter(alpha=2.0, beta=0.1).rewards(GROUP, 0) == pytest.approx([2.0, -1.0, 0.0, -3.0])
    # no correct response: the target is the mean length, 25
    wrong = Group((10, 20, 30, 40), (False,) * 4, (False,) * 4)
    assert shortest_correct_target(wrong) == 25.0
    assert ShorterBetter(alpha=2.0, beta=0.1).rewards(wrong, 0) == pytest.approx([-1.5, -0.5, -0.5, -1.5])


def test_dot_cuts_outliers_only_in_all_correct_groups():
    # mean 16, population std sqrt(((10-16)^2 * 3 + (34-16)^2) / 4) = sqrt(108) = 10.39: bar 26.39 at alpha 1
    group = Group((10, 10, 10, 34), (True,) * 4, (False,) * 4)
    assert outlier_cut(group, alpha=1.0) == [False, False, False, True]
    assert OutlierTruncation(alpha=1.0).rewards(group, 0) == [1.0, 1.0, 1.0, 0.0]
    # at alpha 2 the bar is 36.8: nothing is cut
    assert outlier_cut(group, alpha=2.0) == [False] * 4
    # one wrong response: no truncation at all
    mixed = Group((10, 10, 10, 34), (True, True, False, True), (False,) * 4)
    assert OutlierTruncation(alpha=1.0).rewards(mixed, 0) == [1.0, 1.0, 0.0, 1.0]


def test_a_malformed_group_is_refused():
    with pytest.raises(ValueError, match="one length"):
        Group((1, 2), (True,), (False, False))
    with pytest.raises(ValueError, match="at least one"):
        Group((), (), ())
