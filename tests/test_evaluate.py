import pandas as pd
import pytest

from tsq.evaluation.evaluate import Evaluator, format_table
from tsq.text import reasoning_part, split_steps


def test_steps_are_split_inside_the_reasoning_only():
    text = "<think> ok 3 +4 = 7 ; check 3 +4 = 7 ; </think> 7"
    assert reasoning_part(text).strip() == "ok 3 +4 = 7 ; check 3 +4 = 7 ;"
    assert split_steps(text, ";") == ["ok 3 +4 = 7", "check 3 +4 = 7"]
    assert split_steps("Let x = 1.\n\nSo x + 1 = 2.\n\n\\boxed{2}", "\n\n") == [
        "Let x = 1.",
        "So x + 1 = 2.",
        "\\boxed{2}",
    ]
    with pytest.raises(ValueError):
        split_steps(text, "")


def frame() -> pd.DataFrame:
    # level 1: two problems, one sample each; level 2: one problem, two samples
    return pd.DataFrame(
        {
            "problem_id": ["a", "b", "c", "c"],
            "benchmark": ["syn"] * 4,
            "level": ["1", "1", "2", "2"],
            "n_tokens": [10, 30, 20, 40],
            "correct": [True, False, True, True],
            "finish_reason": ["eos", "length", "eos", "eos"],
            "n_steps": [2, 5, 4, 6],
            "step_tokens": [8, 25, 16, 30],
        }
    )


def test_summarize_by_level_and_overall_by_hand():
    ev = Evaluator(n_samples=2, max_new_tokens=40)
    rows, curves = ev.summarize(frame(), role="base", model="m")
    by = {r["level"]: r for r in rows}
    assert set(by) == {"1", "2", "all"}
    assert by["1"]["acc"] == 0.5 and by["1"]["len_t"] == 10 and by["1"]["len_a"] == 20
    assert by["1"]["auc"] == pytest.approx((1 - 10 / 40) / 2)
    assert by["1"]["truncated"] == 0.5
    assert by["2"]["steps"] == 5 and by["2"]["step_len"] == pytest.approx(46 / 10)
    assert by["all"]["acc"] == 0.75 and by["all"]["len_t"] == pytest.approx(70 / 3)
    assert by["all"]["n_problems"] == 3 and by["all"]["n_samples"] == 4
    full = [c for c in curves if c["level"] == "all" and c["budget"] == 40]
    assert full[0]["acc"] == 0.75
    assert "75.00" in format_table(rows)
    # 95% intervals over problems: level 2 is one problem (nothing to resample); level 1's two problems are
    # right and wrong, so a resample holds both (0.5), only the right one (1) or only the wrong one (0)
    assert (by["2"]["acc_low"], by["2"]["acc_high"], by["2"]["len_t_low"], by["2"]["len_t_high"]) == (1, 1, 30, 30)
    assert (by["1"]["acc_low"], by["1"]["acc_high"]) == (0.0, 1.0)
    assert by["all"]["acc_low"] <= 0.75 <= by["all"]["acc_high"] and by["all"]["acc_high"] - by["all"]["acc_low"] > 0
    # the printed table carries them: level 1's accuracy 50.00 [0.00, 100.00], Len-T 10.00 [10.00, 10.00]
    table = format_table(rows)
    assert "50.00 [0.00, 100.00]" in table and "10.00 [10.00, 10.00]" in table


def test_evaluator_validates_before_anything_runs():
    with pytest.raises(ValueError, match="eval.n_samples must be > 0, got 0"):
        Evaluator(n_samples=0)
    with pytest.raises(ValueError, match="eval.budgets"):
        Evaluator(budgets=[0, 10])
    assert Evaluator(max_new_tokens=64).b_max == 64
