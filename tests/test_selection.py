import pytest

from tsq.selection import (
    KimiDPO,
    Overthink,
    Pair,
    QDyn,
    QDynExtraNeg,
    QFix,
    Selection,
    Shortest,
    SkyT1Flash,
    build_pairs,
    qdyn_k,
    shortest_correct,
)


def group(n: int, c: int) -> tuple[list[int], list[bool]]:
    """n samples, the first c correct; correct lengths 100, 101, ...; incorrect lengths 1000, 1001, ..."""
    lengths = [100 + i if i < c else 1000 + i for i in range(n)]
    return lengths, [i < c for i in range(n)]


@pytest.mark.parametrize(
    "c, k", [(1, 1), (4, 1), (8, 2), (16, 3), (24, 3), (32, 4), (40, 3), (48, 3), (56, 2), (60, 1), (63, 1), (64, 0)]
)
def test_qdyn_k_matches_the_paper_table_for_n64(c, k):
    assert qdyn_k(c, 64, 0.2) == k
    lengths, correct = group(64, c)
    assert QDyn(alpha=0.2).select(lengths, correct).positives == list(range(k))


def test_no_positive_without_a_correct_response():
    lengths, correct = group(64, 0)
    for selector in (Shortest(), QFix(), QDyn()):
        assert selector.select(lengths, correct).positives == []


def test_positives_are_the_k_shortest_correct():
    lengths = [50, 10, 30, 20, 40, 5]
    correct = [True, True, True, True, False, False]
    assert shortest_correct(lengths, correct, 2) == [1, 3]
    assert Shortest().select(lengths, correct).positives == [1]
    assert QFix(q=0.5).select(lengths, correct).positives == [1, 3]  # ceil(0.5 * 4) = 2
    assert QFix(q=0.1).select(lengths, correct).positives == [1]  # ceil(0.4) = 1


def test_pairs_only_with_longer_incorrect_responses():
    lengths = [10, 20, 5, 30, 15]
    correct = [True, True, False, False, False]
    pairs = build_pairs(lengths, correct, Selection([0, 1]))
    # positive 0 (10 tokens): incorrect 3 (30) and 4 (15) are longer, 2 (5) is not
    # positive 1 (20 tokens): only 3 (30)
    assert pairs == [Pair(0, 3), Pair(0, 4), Pair(1, 3)]


def test_kimi_rule_adds_long_correct_responses_as_negatives():
    lengths = [10, 14, 15, 40, 12]
    correct = [True, True, True, True, False]
    sel = QDynExtraNeg(alpha=1.0, ratio=1.5).select(lengths, correct)
    assert sel.positives == [0]  # k = ceil(1.0 * (1 - 4/5) * 4) = 1
    assert sel.extra_negatives == {0: [2, 3]}  # 15 >= 1.5*10 and 40; 14 is not
    assert build_pairs(lengths, correct, sel) == [Pair(0, 4), Pair(0, 2), Pair(0, 3)]


def test_cap_per_problem_and_per_positive_is_seeded():
    n = 40
    lengths = [1, 2] + [100 + i for i in range(n - 2)]
    correct = [True, True] + [False] * (n - 2)
    sel = Selection([0, 1])
    per_problem = build_pairs(lengths, correct, sel, max_pairs=10, seed=3)
    assert len(per_problem) == 10 and len(set(per_problem)) == 10
    assert per_problem == build_pairs(lengths, correct, sel, max_pairs=10, seed=3)
    assert per_problem != build_pairs(lengths, correct, sel, max_pairs=10, seed=4)
    per_positive = build_pairs(lengths, correct, sel, max_pairs=10, per="positive", seed=3)
    assert [sum(p.chosen == c for p in per_positive) for c in (0, 1)] == [10, 10]
    assert len(build_pairs(lengths, correct, sel, max_pairs=1000)) == 2 * (n - 2)


def test_bad_selector_settings():
    with pytest.raises(ValueError, match="selector.q"):
        QFix(q=0)
    with pytest.raises(ValueError, match="max_pairs"):
        build_pairs([1], [True], Selection([0]), max_pairs=0)


def test_kimi_dpo_pairs_shortest_correct_against_long_correct_and_longer_incorrect():
    lengths = [10, 14, 15, 40, 12, 8]
    correct = [True, True, True, True, False, False]
    sel = KimiDPO(ratio=1.5).select(lengths, correct)
    assert sel.positives == [0] and sel.extra_negatives == {0: [2, 3]}
    # incorrect 4 (12 > 10) is rejected, incorrect 5 (8 < 10) is not; correct 2 and 3 (>= 15) are
    assert build_pairs(lengths, correct, sel) == [Pair(0, 4), Pair(0, 2), Pair(0, 3)]


# A hand-made group: lengths and correctness of 6 samples.
GROUP_LENGTHS = [30, 12, 50, 20, 80, 12]
GROUP_CORRECT = [True, False, True, True, False, True]


def test_kimi_pairs_shortest_correct_with_longer_incorrect_and_1_5x_correct():
    sel = KimiDPO(ratio=1.5).select(GROUP_LENGTHS, GROUP_CORRECT)
    assert sel.positives == [5]  # length 12, correct (sample 1 is as short but wrong)
    pairs = build_pairs(GROUP_LENGTHS, GROUP_CORRECT, sel)
    # incorrect and longer: 4 (80); correct and >= 18 tokens: 0 (30), 2 (50), 3 (20)
    assert [(p.chosen, p.rejected) for p in pairs] == [(5, 4), (5, 0), (5, 2), (5, 3)]


def test_sky_t1_flash_pairs_shortest_correct_with_longest_correct_only():
    sel = SkyT1Flash().select(GROUP_LENGTHS, GROUP_CORRECT)
    assert [(p.chosen, p.rejected) for p in build_pairs(GROUP_LENGTHS, GROUP_CORRECT, sel)] == [(5, 2)]
    one_length = SkyT1Flash().select([10, 10, 40], [True, True, False])
    assert build_pairs([10, 10, 40], [True, True, False], one_length) == []  # no longer correct response


def test_overthink_pairs_shortest_correct_with_the_longest_response():
    sel = Overthink().select(GROUP_LENGTHS, GROUP_CORRECT)
    assert [(p.chosen, p.rejected) for p in build_pairs(GROUP_LENGTHS, GROUP_CORRECT, sel)] == [(5, 4)]
    assert build_pairs([5, 9], [False, False], Overthink().select([5, 9], [False, False])) == []


def test_dast_budget_and_scores_by_hand():
    from tsq.selection import Dast, dast_score, token_length_budget

    lengths, correct = [10, 20, 30, 40], [True, True, False, False]
    # p = 0.5, L_r = 15, L_max = 100: budget 0.5 * 15 + 0.5 * 100 = 57.5
    assert token_length_budget(lengths, correct, 100) == pytest.approx(57.5)
    # correct: 0.5 - 0.5 lambda; incorrect: 0.9 lambda - 0.1; lambda = (len - 57.5) / 57.5
    assert dast_score(10, True, 57.5) == pytest.approx(0.5 + 0.5 * 47.5 / 57.5)  # 0.913
    assert dast_score(20, True, 57.5) == pytest.approx(0.5 + 0.5 * 37.5 / 57.5)  # 0.826
    assert dast_score(30, False, 57.5) == pytest.approx(-0.9 * 27.5 / 57.5 - 0.1)  # -0.530
    assert dast_score(40, False, 57.5) == pytest.approx(-0.9 * 17.5 / 57.5 - 0.1)  # -0.374
    # the floors: a correct response far over budget scores 0.1, an incorrect one far over it -0.1
    assert dast_score(500, True, 57.5) == 0.1 and dast_score(500, False, 57.5) == -0.1
    # margin 0.05: the shorter correct (gap 0.087) and the longer incorrect (gap 0.157) are chosen
    both = Dast(max_length=100, margin=0.05).select(lengths, correct)
    assert both.positives == [0, 3] and both.extra_negatives == {0: [1], 3: [2]}
    assert not both.incorrect_negatives
    # margin 0.1: only the dual-incorrect pair is far enough apart
    assert Dast(max_length=100, margin=0.1).select(lengths, correct).extra_negatives == {3: [2]}
    pairs = build_pairs(lengths, correct, both)
    assert {(p.chosen, p.rejected) for p in pairs} == {(0, 1), (3, 2)}
