"""World v2 (tsq/data/reflective.py): slips that grow with the chain, checks that can fix them, cues that make
checks likely, the anatomy of a response, and the text-only rewriter."""

import random
from collections import Counter

import pytest
from helpers import compose_config
from hydra.utils import instantiate

from tsq.data.reflective import ReflectiveAnatomy, ReflectiveStyle, ReflectiveWorld, vocabulary
from tsq.data.synthetic import SyntheticWorld
from tsq.data.synthetic import vocabulary as vocabulary_v1
from tsq.refinement.text import TextRewriter


def world(**kw) -> ReflectiveWorld:
    return ReflectiveWorld(split_sizes={"test": 5, "dev": 5, "train": 20}, **kw)


def problem_of(w, prompt: str):
    chain = prompt.split()[:-2]
    return w.make_problem(chain, len(chain) - 1)


def test_the_default_data_is_world_v2_and_v1_stays_reachable():
    assert instantiate(compose_config([]).data).__class__ is ReflectiveWorld
    assert instantiate(compose_config(["data=synthetic_v1"]).data).__class__ is SyntheticWorld


def test_v2_keeps_v1_problems_and_word_ids_and_has_its_own_key():
    v1, v2 = SyntheticWorld(), ReflectiveWorld()
    assert [p.prompt for p in v1.split("test")] == [p.prompt for p in v2.split("test")]
    assert vocabulary()[: len(vocabulary_v1())] == vocabulary_v1() and {"wait", "fix"} <= set(vocabulary())
    assert v1.fingerprint() != v2.fingerprint()


def test_slips_grow_with_the_square_of_the_operands_left():
    style = ReflectiveStyle(slip=0.02)
    assert [style.slip_probability(n) for n in (2, 3, 6)] == pytest.approx([0.02, 0.08, 0.5])


def test_anatomy_of_a_trace_by_hand():
    w = world()
    p = problem_of(w, "3 +4 -2 +9 = ?")  # 3 +4 = 7, 7 -2 = 5, 5 +9 = 4
    text = (
        "<think> so 3 +4 = 8 -2 +9 ; wait check 3 +4 = 7 ; fix 7 -2 +9 ; "  # a slip, checked and fixed
        "7 -2 = 5 +9 ; hmm wait check 7 -2 = 5 ; again 5 +9 ; 5 +9 = 4 ; </think> 4"
    )
    a = w.anatomy(p, text)
    # necessary: "3 +4 = 8 -2 +9 ;" 7, "7 -2 = 5 +9 ;" 6, "5 +9 = 4 ;" 5; useful: check (6) + fix (5);
    # useless: the second check (6) + again (4); cue: wait, hmm wait (3); noise: so (1); structure: 3
    assert a == ReflectiveAnatomy(total=46, necessary=18, useful=11, useless=10, cue=3, noise=1, structure=3,
                                  slips=1, checks=2, slips_checked=1, catches=1, false_fixes=0)  # fmt: skip
    assert a.total == a.necessary + a.useful + a.useless + a.cue + a.noise + a.structure
    assert w.grade(p, text)


def test_a_check_that_misses_the_slip_fixes_nothing_and_the_answer_is_wrong():
    w = world()
    p = problem_of(w, "3 +4 -2 = ?")
    text = "<think> 3 +4 = 8 -2 ; wait check 3 +4 = 8 ; 8 -2 = 6 ; </think> 6"
    a = w.anatomy(p, text)
    assert (a.slips, a.slips_checked, a.catches, a.useful, a.useless) == (1, 1, 0, 0, 6)
    assert not w.grade(p, text)


def test_a_fix_to_a_wrong_value_is_a_false_fix_not_a_catch():
    w = world()
    p = problem_of(w, "9 -4 +7 = ?")  # 9 -4 = 5, 5 +7 = 2
    text = "<think> 9 -4 = 4 +7 ; wait check 9 -4 = 3 ; fix 3 +7 ; 3 +7 = 0 ; </think> 0"
    a = w.anatomy(p, text)
    # necessary: "9 -4 = 4 +7 ;" 6 and "3 +7 = 0 ;" 5; useless: the check (6) and its false fix (4)
    assert (a.slips, a.catches, a.false_fixes, a.useful, a.useless, a.necessary) == (1, 0, 1, 0, 10, 11)


def test_teacher_traces_are_consistent_and_their_fixes_save_answers_on_long_chains_only():
    w = world(operands=[2, 6])
    rng, seen = random.Random(0), Counter()
    for level in (1, 2):
        for _ in range(600):
            p = w.make_problem(w._random_chain(rng, level), level)
            trace = w.teacher_trace(p, rng)
            text = " ".join(word for word, _ in trace)
            a = w.anatomy(p, text)
            kinds = Counter(kind for _, kind in trace)
            # the analyser reads back exactly what the teacher wrote, kind by kind
            assert (a.necessary, a.useful, a.useless, a.cue, a.noise) == (
                kinds["necessary"], kinds["redundant-useful"], kinds["redundant-useless"], kinds["cue"],
                kinds["noise"],
            )  # fmt: skip
            right = w.grade(p, text)
            seen[level, "right"] += right
            seen[level, "saved"] += right and a.catches > 0
            seen[level, "n"] += 1
    assert seen[1, "right"] / seen[1, "n"] > 0.97 and seen[2, "right"] / seen[2, "n"] < 0.75
    assert seen[1, "saved"] / seen[1, "right"] < 0.02 < 0.15 < seen[2, "saved"] / seen[2, "right"]


def test_a_cue_makes_a_check_likely():
    w = world(operands=[4])
    rng, after_cue, without = random.Random(1), Counter(), Counter()
    for _ in range(800):
        p = w.make_problem(w._random_chain(rng, 1), 1)
        trace = w.teacher_trace(p, rng)
        words = [word for word, _ in trace]
        for i, (word, kind) in enumerate(trace):
            if kind == "necessary" and word == ";":
                nxt = words[i + 1 : i + 4]
                cue = nxt[0] in {"wait", "hmm", "hold"}
                checked = "check" in nxt
                (after_cue if cue else without)[checked] += 1
    assert after_cue[True] / sum(after_cue.values()) > 0.8
    assert without[True] / sum(without.values()) < 0.2


def test_the_text_rewriter_drops_fillers_and_restatement_steps_and_keeps_the_answer():
    rewriter = instantiate(compose_config(["refiner=text_rewrite"]).refiner)
    assert isinstance(rewriter, TextRewriter) and not isinstance(rewriter.drop_words[3], bool)  # "on" stays text
    text = "<think> so 3 +4 = 8 -2 ; hold on check 3 +4 = 7 ; fix 7 -2 ; again 7 -2 ; 7 -2 = 5 ; </think> 5"
    rewritten, before, after, changed = rewriter.rewrite(text, ";")
    assert rewritten == "<think> 3 +4 = 8 -2 ; 7 -2 = 5 ; </think> 5"
    assert (len(before), len(after), changed) == (5, 2, 4)
    unclosed = "<think> so 3 +4 = 7 ;"
    assert rewriter.rewrite(unclosed, ";")[0] == unclosed
