import math
import random

import pytest
import torch

from tsq.data.synthetic import SyntheticWorld
from tsq.refinement.kl import StepRefiner, TraceScorer, step_spans, think_bounds, token_kl, trace_step_spans
from tsq.sampling.hf import HFSampler


def test_token_kl_by_hand():
    p = torch.tensor([[0.5, 0.5], [0.5, 0.5]]).log()
    q = torch.tensor([[0.9, 0.1], [0.5, 0.5]]).log()
    one = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert token_kl(p, q, "sum").item() == pytest.approx(one, rel=1e-5)
    assert token_kl(p, q, "mean").item() == pytest.approx(one / 2, rel=1e-5)
    assert token_kl(p, p, "sum").item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="reduction"):
        token_kl(p, q, "max")


def test_step_spans_stop_at_the_think_close():
    # token texts of "<think> a a ; a ; </think> a ;": steps end with ";" and only inside the think part
    texts = ["<think>", "a", "a", ";", "a", ";", "</think>", "a", ";"]
    ids = [1, 2, 2, 9, 2, 9, 3, 2, 9]
    assert think_bounds(ids, 1, 3) == (0, 6)
    assert step_spans(texts, ";", 0, 6) == [(1, 4), (4, 6)]
    assert step_spans(["a", ";", "a"], ";") == [(0, 2)]  # unterminated tail is not a step


def test_step_spans_find_a_delimiter_spread_over_tokens():
    # BPE writes "\n\n" as one token, as two "\n" tokens, or fused into "\n\n\n"; a bare delimiter is no step
    texts = ["So", " x", "\n", "\n", "\n\n", "Then", " y", ".\n\n", "Last", "\n\n\n", "z"]
    assert step_spans(texts, "\n\n") == [(0, 4), (4, 8), (8, 10)]


@pytest.fixture(scope="module")
def copy_sampler(copy_model_dir):
    return HFSampler(copy_model_dir, batch_size=64, progress=False)


def ids(sampler, text):
    return sampler.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_kl_is_zero_for_the_original_step_and_large_when_the_answer_changes(copy_sampler):
    tok = copy_sampler.tokenizer
    p, r = ids(copy_sampler, "1 +2 = ?"), ids(copy_sampler, "<think> 7 ; </think> 7")
    same, other = ids(copy_sampler, "7 ;"), ids(copy_sampler, "2 ;")
    refiner = StepRefiner(reduction="sum")
    (kls,) = refiner.score(copy_sampler.model, p, r, [(1, 3, [same, other])])
    assert kls[0] == pytest.approx(0.0, abs=1e-5)
    assert kls[1] > 1.0  # the original answer 7 becomes unlikely after "2 ;"
    assert tok.decode(r[3:]) == "</think> 7"


@pytest.mark.parametrize("chunk", [1, 7, 2048])
def test_batched_kv_scoring_equals_the_per_candidate_loop(copy_sampler, chunk):
    """Also with the vocabulary projected a few (candidate, position) rows at a time."""
    refiner = StepRefiner(reduction="mean", window=3, score_chunk_tokens=chunk)
    p = ids(copy_sampler, "1 +2 = ?")
    r = ids(copy_sampler, "<think> ok so 4 ; again 4 ; </think> 4")
    spans = trace_step_spans(copy_sampler.tokenizer, r, ";")
    assert spans == [(1, 5), (5, 8)]
    rng = random.Random(0)
    vocab = [i for i in range(4, len(copy_sampler.tokenizer))]
    work = [(a, b, [[rng.choice(vocab) for _ in range(rng.randint(1, 4))] for _ in range(5)]) for a, b in spans]
    fast = refiner.score(copy_sampler.model, p, r, work)
    slow = refiner.score_loop(copy_sampler.model, p, r, work)
    for f, s in zip(fast, slow, strict=True):
        assert f == pytest.approx(s, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(("score_batch", "score_positions"), [(1, None), (3, None), (64, None), (None, 1), (3, 2)])
def test_scoring_shortcuts_choose_the_exhaustive_rules_step_with_less_work(copy_sampler, score_batch, score_positions):
    """The rule applied by hand to every candidate's KL from the per-candidate reference loop: the shortest
    candidate under epsilon, ties to the earlier one, else the original step. Candidates of equal length are
    included, and epsilon is set between KLs of the same step so that the winner is not always the shortest.
    Shortest first (score_batch) scores fewer candidates; dropping a candidate once its KL so far reaches
    epsilon (score_positions) feeds fewer window tokens."""
    p = ids(copy_sampler, "1 +2 = ?")
    r = ids(copy_sampler, "<think> ok so 4 ; again 4 ; then 4 ; </think> 4")
    spans = trace_step_spans(copy_sampler.tokenizer, r, ";")
    rng = random.Random(1)
    vocab = list(range(4, len(copy_sampler.tokenizer)))
    work = [(a, b, [[rng.choice(vocab) for _ in range(rng.randint(1, 3))] for _ in range(12)]) for a, b in spans]
    reference = StepRefiner(reduction="mean", window=3).score_loop(copy_sampler.model, p, r, work)

    def rule(cands, kls, epsilon):
        ok = [(len(c), i) for i, c in enumerate(cands) if kls[i] < epsilon]
        return min(ok)[1] if ok else None

    def decisions(epsilon):
        return [rule(cands, kls, epsilon) for (_, _, cands), kls in zip(work, reference, strict=True)]

    def longer_winner(chosen):
        return any(e is not None and len(c[e]) > min(map(len, c)) for (_, _, c), e in zip(work, chosen, strict=True))

    # the smallest epsilon (between two observed KLs) at which some step's winner is not among its shortest
    # candidates, so that stopping early has to skip past candidates that fail
    observed = sorted({kl for kls in reference for kl in kls})
    cuts = [(x + y) / 2 for x, y in zip(observed, observed[1:], strict=False) if y - x > 1e-4]
    epsilon = next(x for x in cuts if longer_winner(decisions(x)))
    expected = decisions(epsilon)
    assert None in decisions(cuts[0]) and longer_winner(expected)
    settings = {"reduction": "mean", "window": 3, "epsilon": epsilon}
    variants = {
        "early": StepRefiner(**settings, score_batch=score_batch, score_positions=score_positions),
        "without stopping": StepRefiner(**settings, score_batch=score_batch),
        "exhaustive": StepRefiner(**settings),
    }
    scored, forwarded = {}, {}
    for name, refiner in variants.items():
        scorer = TraceScorer.of(refiner, copy_sampler.model, p, r)
        choices, scored[name] = refiner.choose(scorer, work)
        forwarded[name] = scorer.forwarded_tokens
        assert [None if c is None else c[0] for c in choices] == expected
        for kls, choice in zip(reference, choices, strict=True):
            if choice is not None:
                assert choice[1] == pytest.approx(kls[choice[0]], rel=1e-4, abs=1e-6)
    total = sum(len(c) for *_, c in work)
    assert scored["exhaustive"] == total
    # each candidate and its window: the next 3 tokens, fewer where the trace ends sooner
    assert forwarded["exhaustive"] == sum(len(c) + min(3, len(r) - b) for _, b, cands in work for c in cands)
    # shortest first stops once a batch holds a winner: it scores every candidate up to the winner's batch
    rank = [
        sorted(range(len(c)), key=lambda i: (len(c[i]), i)).index(e) if e is not None else len(c) - 1
        for (_, _, c), e in zip(work, expected, strict=True)
    ]
    batch = score_batch or 12
    needed = sum(min(len(c), (k // batch + 1) * batch) for (_, _, c), k in zip(work, rank, strict=True))
    assert scored["early"] == scored["without stopping"] == needed
    assert needed < total if batch < 12 else needed == total
    if score_positions is not None:  # a failing candidate is dropped before the end of its window (with none
        # dropped, each scored candidate would feed one token fewer: the window's last token predicts nothing)
        assert forwarded["early"] < forwarded["without stopping"] - needed
    else:
        assert forwarded["early"] == forwarded["without stopping"]


def test_kl_fed_a_few_positions_at_a_time_equals_the_whole_window(copy_sampler):
    """Candidates right-aligned and the window fed 1 or 2 tokens per pass, nothing dropped (stop_at inf): the
    same KLs as the per-candidate loop, for candidates of different lengths and both reductions."""
    p = ids(copy_sampler, "1 +2 = ?")
    r = ids(copy_sampler, "<think> ok so 4 ; again 4 ; then 4 ; </think> 4")
    rng = random.Random(2)
    vocab = list(range(4, len(copy_sampler.tokenizer)))
    work = [
        (a, b, [[rng.choice(vocab) for _ in range(rng.randint(1, 4))] for _ in range(6)])
        for a, b in trace_step_spans(copy_sampler.tokenizer, r, ";")
    ]
    for reduction in ("sum", "mean"):
        for positions in (1, 2):
            refiner = StepRefiner(reduction=reduction, window=4, score_positions=positions)
            reference = refiner.score_loop(copy_sampler.model, p, r, work)
            scorer = TraceScorer.of(refiner, copy_sampler.model, p, r)
            for (a, b, cands), expected in zip(work, reference, strict=True):
                assert scorer.kls(a, b, cands, stop_at=float("inf")) == pytest.approx(expected, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("key", ["score_batch", "score_positions"])
def test_scoring_shortcuts_are_left_out_of_the_key_only_when_unset(key):
    assert key not in StepRefiner().key_material()
    assert StepRefiner(**{key: 8}).key_material()[key] == 8
    with pytest.raises(ValueError, match=f"refiner.{key}"):
        StepRefiner(**{key: 0})


@pytest.mark.parametrize("accept", ["kl", "shortest"])
def test_refinement_never_lengthens_and_never_changes_the_graded_answer(copy_sampler, accept):
    world = SyntheticWorld(split_sizes={"test": 3, "dev": 1, "train": 1})
    rng = random.Random(0)
    problems = world.split("test")[:8]
    responses = [world.teacher_response(p, rng) for p in problems]
    refiner = StepRefiner(accept=accept, k=8, epsilon=0.05, reduction="mean", max_step_tokens=12)
    refined = refiner.refine(copy_sampler, [p.prompt for p in problems], responses, world.step_delimiter)
    for problem, before, after in zip(problems, responses, refined, strict=True):
        assert len(after.token_ids) <= len(before.split())
        assert after.step_tokens_after <= after.step_tokens_before
        assert world.grade(problem, after.text) == world.grade(problem, before)
        assert world.extract_answer(after.text) == world.extract_answer(before)
        if accept == "kl":
            assert all(kl < 0.05 for kl in after.accepted_kl)


def test_candidates_cut_at_max_step_tokens_are_counted_and_logged(copy_sampler, caplog):
    """The copy model writes each step as "d ;" (2 tokens): with a 1-token cap every candidate that does
    not end the step at once is cut, and the count reaches the trace and the log."""
    prompt, response = "1 +2 = ?", "<think> ok so 4 ; again 4 ; </think> 4"
    k, steps = 6, 2
    free = StepRefiner(k=k, max_step_tokens=12).refine(copy_sampler, [prompt], [response], ";")[0]
    assert free.candidates == k * steps and free.candidates_cut == 0
    with caplog.at_level("WARNING"):
        capped = StepRefiner(k=k, max_step_tokens=1).refine(copy_sampler, [prompt], [response], ";")[0]
    assert capped.candidates == k * steps and capped.candidates_cut > 0
    assert f"{capped.candidates_cut} of {k * steps} candidates" in caplog.text
    assert "refiner.max_step_tokens=1" in caplog.text
