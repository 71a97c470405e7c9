import random
from collections import Counter

import pytest

from tsq.data.synthetic import (
    FILLER,
    NECESSARY,
    REDUNDANT,
    SyntheticWorld,
    TeacherStyle,
    apply_op,
)


def small_world(**kw):
    kw.setdefault("split_sizes", {"test": 20, "dev": 10, "train": 30})
    return SyntheticWorld(**kw)


def test_same_seed_same_world_and_other_seed_differs():
    a, b, c = small_world(seed=3), small_world(seed=3), small_world(seed=4)
    for split in ("train", "dev", "test"):
        assert a.split(split) == b.split(split)
    assert a.split("test") != c.split("test")


def test_splits_are_disjoint_sized_per_level_and_test_is_stable():
    w = small_world()
    prompts = {s: {p.prompt for p in w.split(s)} for s in ("train", "dev", "test")}
    assert not prompts["train"] & prompts["test"] and not prompts["dev"] & prompts["test"]
    assert not prompts["train"] & prompts["dev"]
    assert Counter(p.level for p in w.split("test")) == {lvl: 20 for lvl in range(1, 6)}
    bigger = small_world(split_sizes={"test": 20, "dev": 10, "train": 60})
    assert bigger.split("test") == w.split("test")  # growing train never moves test


def test_difficulty_knob_sets_operand_count():
    w = small_world(operands=[2, 9])
    counts = {p.level: len(w.chain_of(p)) for p in w.split("test")}
    assert counts == {1: 2, 2: 9}


def test_answers_by_hand():
    w = small_world()
    p = w.make_problem(["3", "+4", "-2", "+9"], level=3)
    assert p.prompt == "3 +4 -2 +9 = ?" and p.answer == "4"  # 3+4-2+9 = 14
    assert apply_op("1", "-5") == "6"
    assert w.shortcut_answer(p) == "7"  # glance at the first two operands only


def test_grader_exact_answer_after_think():
    w = small_world()
    p = w.make_problem(["3", "+4"], level=1)
    assert w.grade(p, "<think> 7 ; </think> 7")
    assert not w.grade(p, "<think> 7 ; </think> 8")
    assert not w.grade(p, "<think> 7 ; 7")  # no closing tag, no answer
    assert not w.grade(p, "<think> 7 ; </think> 7 7")  # the answer is one word
    assert w.grade(p, "<think> </think> 0 ; </think> 7")  # the last </think> counts


def test_teacher_traces_are_correct_and_have_the_promised_anatomy():
    w = small_world(teacher={"p_slip": 0.0})
    rng = random.Random(0)
    kinds, shortcut = Counter(), 0
    for p in w.split("train"):
        trace = w.teacher_trace(p, rng)
        text = " ".join(t for t, _ in trace)
        if text.startswith("<think> </think>"):
            shortcut += 1
            assert w.shortcut_answer(p) == text.split()[-1]
            continue
        assert w.grade(p, text), text
        kinds.update(k for _, k in trace)
        # the analyser recovers the teacher's own labels from the text alone
        anatomy = w.anatomy(p, text)
        labels = Counter(k for _, k in trace)
        assert (anatomy.necessary, anatomy.redundant, anatomy.filler) == (
            labels[NECESSARY],
            labels[REDUNDANT],
            labels[FILLER],
        )
    assert shortcut > 0 and kinds[REDUNDANT] > 0 and kinds[FILLER] > 0
    concise = w.teacher_response(w.split("test")[-1], rng, TeacherStyle.concise())
    assert w.anatomy(w.split("test")[-1], concise).compressible == 0


def test_slips_make_long_wrong_traces():
    w = small_world(operands=[2], teacher={"p_slip": 1.0, "p_shortcut": 0.0})
    rng = random.Random(0)
    for p in w.split("test"):
        text = w.teacher_response(p, rng)
        assert not w.grade(p, text), text  # one operation, always slipped
        assert w.anatomy(p, text).necessary == 5  # still a full necessary step: "a op = r ;"


def test_shortcut_reliable_on_easy_and_near_chance_on_hard():
    w = SyntheticWorld(split_sizes={"test": 50, "dev": 1, "train": 1})
    by_level = {}
    for p in w.split("test"):
        by_level.setdefault(p.level, []).append(w.shortcut_answer(p) == p.answer)
    assert all(by_level[1])
    assert sum(by_level[5]) / len(by_level[5]) <= 0.3


def test_anatomy_of_a_hand_written_response():
    w = small_world()
    p = w.make_problem(["3", "+4", "-2"], level=2)
    text = "<think> ok so 3 +4 = 7 -2 ; check 3 +4 = 7 ; 7 -2 = 5 ; again 5 ; </think> 5"
    a = w.anatomy(p, text)
    # necessary: "3 +4 = 7 -2 ;" (6) + "7 -2 = 5 ;" (5); redundant: check (6) + again (3); filler: ok so
    assert (a.total, a.necessary, a.redundant, a.filler, a.structure) == (25, 11, 9, 2, 3)
    # a trained model once wrote a truncated step after the chain was used up ("5 +1 =", 3 words)
    a = w.anatomy(p, "<think> 3 +4 = 7 -2 ; 7 -2 = 5 ; 5 +1 = ; </think> 5")
    assert (a.necessary, a.redundant) == (11, 4)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"split_sizes": {"test": 0, "dev": 1, "train": 1}}, "data.split_sizes.test"),
        ({"operands": [1, 3]}, "data.operands"),
        ({"teacher": {"p_check": 1.5}}, "data.teacher.p_check"),
        ({"split_sizes": {"test": 250, "dev": 1, "train": 1}}, "data.split_sizes.test"),
    ],
)
def test_bad_world_config_names_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        SyntheticWorld(**kwargs)


def test_a_subset_of_a_split_is_evenly_spaced_and_keeps_every_level():
    from tsq.data.base import evenly_spaced
    from tsq.evaluation.evaluate import Evaluator
    from tsq.sampling.settings import SamplingSettings

    ten = [f"p{i}" for i in range(10)]
    assert evenly_spaced(ten, 4) == ["p0", "p2", "p5", "p7"]  # indices 0, 10//4, 20//4, 30//4
    assert evenly_spaced(ten, 10) == ten and evenly_spaced(ten, 99) == ten and evenly_spaced(ten, None) == ten
    w = small_world()  # each split stored level by level: train 30 = 6 per level, test 100 = 20 per level
    train = SamplingSettings(max_problems=10).problems(w)
    assert Counter(p.level for p in train) == {lvl: 2 for lvl in range(1, 6)}
    assert Counter(p.level for p in Evaluator(max_problems=5).problems(w)) == {lvl: 1 for lvl in range(1, 6)}
    # the rule is part of the key only where a subset is taken (whole-split keys are unchanged)
    assert "subset" not in SamplingSettings().key_material() and "subset" not in Evaluator().key_material()
    assert (
        SamplingSettings(max_problems=10).key_material()["subset"] == Evaluator(max_problems=5).key_material()["subset"]
    )
