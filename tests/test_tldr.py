"""TL;DR's update rule, mixture buffer and checkpoint selection against hand-computed values."""

import math
from collections import Counter

import pandas as pd
import pytest

from tsq.evaluation.metrics import average_compression_ratio
from tsq.training.tldr import (
    Bounds,
    MixtureStream,
    TLDRSettings,
    benefits,
    buffer_counts,
    select_checkpoint,
    system1_data,
    system2_data,
    update_weights,
)

BOUNDS = Bounds(t_short=100.0, acc_short=0.3, t_long=500.0, acc_long=0.8)


def test_benefits_by_hand():
    # the start: the policy is the long model -> all benefit to short data, none to long data
    assert benefits(500.0, 0.8, BOUNDS) == pytest.approx((1.0, 0.0))
    # halfway in length, accuracy down to 0.55: (300-100)/400 = 0.5 and (0.8-0.55)/0.5 = 0.5
    assert benefits(300.0, 0.55, BOUNDS) == pytest.approx((0.5, 0.5))
    # shorter than the short model and more accurate than the long one: both clipped at 0
    assert benefits(50.0, 0.9, BOUNDS) == (0.0, 0.0)


def test_update_rule_by_hand():
    # softmax(log .5 + 4 * [1, 0]) = [e^4, 1] / (e^4 + 1); then (1 - c) a + c / 2
    e4 = math.exp(4)
    c = 1e-4
    expected = [(1 - c) * e4 / (e4 + 1) + c / 2, (1 - c) / (e4 + 1) + c / 2]
    assert update_weights([0.5, 0.5], [1.0, 0.0], eta=4, smoothing=c) == pytest.approx(expected)
    assert expected[0] == pytest.approx(0.982, abs=1e-3)  # experiments/paper_notes.md §2.4's worked example: ~0.982
    # from (0.9, 0.1) with benefits (0.25, 0.5): logits log .9 + 1, log .1 + 2
    a = [0.9 * math.e, 0.1 * math.e**2]
    a = [x / sum(a) for x in a]
    assert update_weights([0.9, 0.1], [0.25, 0.5], eta=4, smoothing=0) == pytest.approx(a)
    # equal benefits leave the weights alone (up to smoothing)
    assert update_weights([0.3, 0.7], [0.4, 0.4], eta=4, smoothing=0) == pytest.approx([0.3, 0.7])


def test_buffer_holds_the_requested_proportions():
    assert buffer_counts([0.25, 0.75], 64) == [16, 48]
    assert buffer_counts([1 / 3, 2 / 3], 10) == [4, 6]  # int(3.33) + remainder 1 -> source 0
    stream = MixtureStream([["a1", "a2"], ["b1", "b2", "b3"]], [0.25, 0.75], size=64, seed=0)
    drawn = [x for _, x in zip(range(64), iter(stream), strict=False)]
    counts = Counter(x[0] for x in drawn)
    assert counts == {"a": 16, "b": 48}
    assert [x for x in drawn if x[0] == "a"][:3] == ["a1", "a2", "a1"]  # each source in order, wrapping
    stream.set_weights([1.0, 0.0])  # a new weight vector refills the buffer at once
    assert {x[0] for _, x in zip(range(64), iter(stream), strict=False)} == {"a"}
    with pytest.raises(ValueError, match="needs data"):
        MixtureStream([["a"], []], [0.5, 0.5], size=8)


def test_checkpoint_selection_on_a_made_up_history():
    history = [
        {"step": 32, "dev_tokens": 400.0, "dev_acc": 0.75},
        {"step": 64, "dev_tokens": 250.0, "dev_acc": 0.60},  # qualifies (0.60 > 0.7 * 0.8 = 0.56)
        {"step": 96, "dev_tokens": 180.0, "dev_acc": 0.50},  # shortest, but below the bar
        {"step": 128, "dev_tokens": 260.0, "dev_acc": 0.70},
    ]
    assert select_checkpoint(history, acc_long=0.8, accuracy_drop=0.3) == (1, True)
    assert select_checkpoint(history, acc_long=0.8, accuracy_drop=0.5) == (2, True)  # bar 0.4: step 96 qualifies
    assert select_checkpoint(history, acc_long=0.8, accuracy_drop=0.3, min_step=100) == (3, True)
    # none meets the bar: the most accurate is kept, and the result says it did not meet the bar
    assert select_checkpoint(history, acc_long=1.2, accuracy_drop=0.3) == (0, False)
    with pytest.raises(ValueError):
        select_checkpoint([], 0.8)
    with pytest.raises(ValueError, match="no dev evaluation at step 200 or later"):
        select_checkpoint(history, acc_long=0.8, min_step=200)


def test_only_checkpoints_trained_on_a_reweighted_mixture_can_be_kept():
    """The first dev evaluation (step update_every) saw the initial mixture alone: the static mixture's checkpoint.
    With the rule's first eligible step, a history whose best entry is that one keeps a later one."""
    settings = TLDRSettings(update_every=32, steps=96)
    assert settings.first_eligible_step == 64
    history = [
        {"step": 32, "dev_tokens": 100.0, "dev_acc": 0.9},  # shortest and accurate, but before any re-weighting
        {"step": 64, "dev_tokens": 300.0, "dev_acc": 0.9},
        {"step": 96, "dev_tokens": 200.0, "dev_acc": 0.9},
    ]
    assert select_checkpoint(history, 0.8, 0.3, settings.first_eligible_step) == (2, True)
    with pytest.raises(ValueError, match="ends before the first checkpoint trained on a re-weighted mixture"):
        TLDRSettings(update_every=32, steps=48)


def test_data_sources_pick_the_right_responses():
    frame = pd.DataFrame(
        {
            "problem_id": ["e1", "e1", "e2", "h1", "h1", "h1", "h2"],
            "level": ["1", "1", "1", "4", "4", "4", "5"],
            "sample": [0, 1, 0, 0, 1, 2, 0],
            "text": ["e1-wrong", "e1-ok", "e2-wrong", "h1-long", "h1-short", "h1-wrong", "h2-wrong"],
            "n_tokens": [5, 6, 5, 90, 40, 20, 50],
            "correct": [False, True, False, True, True, False, False],
            "n_steps": [2, 1, 2, 8, 4, 3, 5],
        }
    )
    prompts = {pid: f"P {pid}" for pid in frame["problem_id"]}
    assert system1_data(frame, prompts, [1, 2]) == [{"prompt": "P e1", "response": "e1-ok", "n_tokens": 6}]
    # a bare answer (no reasoning step) is not a System-1 chain of thought
    bare = frame.assign(n_steps=[2, 0, 2, 8, 4, 3, 5], correct=[True, True, False, True, True, False, False])
    wrong_e1 = {"prompt": "P e1", "response": "e1-wrong", "n_tokens": 5}
    assert system1_data(bare, prompts, [1, 2], min_steps=1) == [wrong_e1]
    assert system1_data(bare.assign(correct=[False, True] + [False] * 5), prompts, [1, 2], min_steps=1) == []
    short_h1 = {"prompt": "P h1", "response": "h1-short", "n_tokens": 40}
    assert system2_data(frame, prompts, [4, 5], "shortest") == [short_h1]
    assert [d["response"] for d in system2_data(frame, prompts, [4, 5], "all")] == ["h1-long", "h1-short"]


def test_average_compression_ratio_by_hand():
    # (1 - 50/100) and max(0, 1 - 120/100) = 0 -> mean 0.25
    assert average_compression_ratio([50, 120], [100, 100]) == pytest.approx(0.25)


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"rule": "doremi"}, "tldr.rule"),
        ({"init": [0.7, 0.7]}, "tldr.init"),
        ({"init": [1.0, 0.0]}, "dynamic rule needs both weights"),
        ({"update_every": 0}, "tldr.update_every"),
        ({"accuracy_drop": 1.0}, "tldr.accuracy_drop"),
    ],
)
def test_bad_settings_are_refused(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        TLDRSettings(**kwargs)


def test_the_ablations_weights_by_hand():
    from tsq.training.tldr import random_weights, scheduled_weights

    assert scheduled_weights([0.5, 0.5], [0.8, 0.2], 0, 4) == [0.5, 0.5]
    assert scheduled_weights([0.5, 0.5], [0.8, 0.2], 2, 4) == pytest.approx([0.65, 0.35])
    assert scheduled_weights([0.5, 0.5], [0.8, 0.2], 4, 4) == pytest.approx([0.8, 0.2])
    first, again, other = random_weights(0, 1), random_weights(0, 1), random_weights(0, 2)
    assert first == again and first != other and sum(first) == pytest.approx(1.0) and 0 <= first[0] <= 1
    assert TLDRSettings(update_every=32, steps=100).updates == 4  # evaluations at 32, 64, 96 and the last step
    with pytest.raises(ValueError, match="tldr.rule must be one of"):
        TLDRSettings(rule="sometimes")
