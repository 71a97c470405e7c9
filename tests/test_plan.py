"""The cost plan (`python -m tsq.plan`): its token counts against hand-computed values, and the command."""

import pandas as pd
import pytest

from tsq.data.base import Problem
from tsq.plan import (
    Assumptions,
    GenerationProbe,
    StageCost,
    Throughput,
    base_model_cost,
    construction_assumptions,
    evaluation_cost,
    main,
    preference_training_cost,
    refinement_cost,
    rl_cost,
    wall,
)
from tsq.plan import (
    plan as plan_of,
)
from tsq.sampling.base import SamplingParams

A = Assumptions(response_tokens=40.0, refined_per_problem=2.0, step_tokens=8.0)


def test_evaluation_tokens_by_hand():
    # 10 problems x 4 responses x 20 tokens, plus 2 forced answers per problem at budgets 8, 16 and 32 (a response of
    # 20 tokens is cut at 8 and 16 and whole at 32): 800 + 10 x 2 x (8 + 16 + 20)
    cost = evaluation_cost("eval", 10, 4, [8, 16, 32], 2, Assumptions(response_tokens=20.0))
    assert cost.generated == 800 + 880 and cost.units == 10


def test_refinement_tokens_by_hand():
    # 10 problems x 2 refined traces = 20 traces of 40 tokens in steps of 8: 100 steps, 4 candidates each = 400;
    # generated 400 x min(48, 8); scored 400 x min(512, 40 / 2) plus one forward over each trace (20 x 40)
    cost = refinement_cost(10, 4, 512, 48, A)
    assert (cost.units, cost.generated, cost.scored) == (20, 3200, 8800) and not cost.spread
    assert refinement_cost(10, 4, 512, 48, A, kl=False).scored == 0


def test_training_tokens_by_hand():
    # 100 steps x 16 pairs x (chosen + rejected) x 40 tokens
    ref, policy = preference_training_cost(100, 16, A, reference=True)
    assert ref.scored == policy.trained == 128_000 and ref.units == 1600
    assert [c.stage for c in preference_training_cost(100, 16, A, reference=False)] == ["policy"]
    # GRPO: 10 steps x 64 rollouts x 40 tokens; a reference model (beta > 0) and a second pass each score them once
    rl = rl_cost(10, 64, 2, 0.04, A)
    assert (rl.generated, rl.scored, rl.trained) == (25_600, 51_200, 51_200)
    assert rl_cost(10, 64, 1, 0.0, A).scored == 0


def test_base_model_tokens_by_hand():
    # 200 steps x 16 examples x 60 tokens (prompt and response), trained in one process
    cost = base_model_cost(200, 16, Assumptions(response_tokens=40.0, example_tokens=60.0))
    assert (cost.units, cost.trained, cost.generated, cost.spread) == (200, 192_000, 0, False)


def test_seconds_spread_generation_over_replicas_only_where_the_stage_runs_on_them():
    rate = Throughput(generate=100, score=1000, train=50, replicas=2)
    assert StageCost("samples", 1, "x", generated=1000).seconds(rate) == 5
    assert StageCost("refined", 1, "x", generated=1000, scored=2000, spread=False).seconds(rate) == 10 + 2
    assert StageCost("refined", 1, "x", generated=1000, scored=2000, spread=True).seconds(rate) == (10 + 2) / 2
    assert refinement_cost(10, 4, 512, 48, A, spread=True).spread  # (sharded refinement: refine_budget.shard_traces)
    assert StageCost("policy", 1, "x", trained=100).seconds(rate) == 2
    assert [wall(s) for s in (30, 600, 36_000)] == ["30 s", "10.0 min", "10.0 h"]
    with pytest.raises(ValueError, match="plan: throughputs"):
        Throughput(0, 1, 1)


def test_the_command_prints_every_stage_of_the_run_and_its_assumptions(capsys, tmp_path):
    given = ["+plan.generate_tokens_per_s=1000", "+plan.score_tokens_per_s=20000", "+plan.train_tokens_per_s=5000"]
    main(["debug=smoke", f"paths.cache_dir={tmp_path}", "+plan.response_tokens=30", *given])
    out = capsys.readouterr().out
    for stage in ("eval (base)", "samples", "refined", "ref_logps", "policy", "eval (trained)", "total"):
        assert stage in out
    assert "response_tokens 30, given" in out and "refined_per_problem 2.0, default" in out
    # an empty cache: the run trains its tiny base model first, priced at 1.5 x 30 tokens an example
    assert "base_model" in out and "example_tokens 45.0, default" in out
    main(["debug=smoke", "method=grpo_kimi", f"paths.cache_dir={tmp_path}", *given])
    out = capsys.readouterr().out
    assert "rl_policy" in out and "samples" not in out
    assert "half of sampling.max_new_tokens (no cached evaluation)" in out
    with pytest.raises(SystemExit, match=r"\+plan.train_tokens_per_s"):
        main(["debug=smoke", f"paths.cache_dir={tmp_path}", *given[:2]])
    with pytest.raises(SystemExit, match=r"\+plan.measure=true"):  # no +plan option at all
        main(["debug=smoke", f"paths.cache_dir={tmp_path}"])


def test_sharded_refinement_is_planned_on_the_replicas(tmp_path):
    given = ["+plan.generate_tokens_per_s=1000", "+plan.score_tokens_per_s=20000", "+plan.train_tokens_per_s=5000"]
    base = ["debug=smoke", f"paths.cache_dir={tmp_path}", "+plan.response_tokens=30", "executor=ray", *given]
    for shards, spread in ((None, False), (2, True)):
        setting = [] if shards is None else [f"refine_budget.shard_traces={shards}"]
        made = plan_of([*base, *setting])
        refined = next(c for c in made.costs if c.stage == "refined")
        assert refined.spread == spread and made.rate.replicas == 2


def test_a_generation_probe_is_the_start_of_the_stages_first_call():
    problems = [Problem(str(i), "b", f"prompt {i}", "1", 1) for i in range(10)]
    params = SamplingParams(n=4, max_new_tokens=100, temperature=0.7, seed=3)
    probe = GenerationProbe.of(("samples",), problems, params, shard=8, rows=12, tokens=64)
    assert probe.prompts == ["prompt 0", "prompt 1", "prompt 2"]  # 3 prompts x 4 responses fill 12 rows
    assert probe.params == SamplingParams(n=4, max_new_tokens=64, temperature=0.7, seed=3)
    assert len(GenerationProbe.of(("s",), problems, params, shard=2, rows=256, tokens=64).prompts) == 2  # one shard
    assert len(GenerationProbe.of(("s",), problems, params, shard=8, rows=1, tokens=64).prompts) == 1  # at least one
    assert GenerationProbe.of(("s",), problems, params, 8, 12, tokens=500).params.max_new_tokens == 100


def test_measured_generation_is_timed_per_sampling_stage(smoke_run):
    folder, _ = smoke_run
    made = plan_of(["debug=smoke", f"paths.cache_dir={folder / 'cache'}", "+plan.measure=true", "+plan.probe_rows=12"])
    rate = made.rate
    assert set(rate.generate_by_stage) == {"eval (base)", "eval (trained)", "samples"}
    assert rate.generate == rate.generate_by_stage["eval (base)"]  # (stages without a probe of their own)
    samples = next(c for c in made.costs if c.stage == "samples")
    assert samples.seconds(rate) == pytest.approx(samples.generated / rate.generate_by_stage["samples"])
    assert "first 12 responses" in made.notes["throughput"]
    # the smoke run built its base model: nothing to build, nothing priced for it
    assert "base_model" not in [c.stage for c in made.costs] and "example_tokens" not in made.notes
    # its training samples are cached: the traces refinement will refine are counted from them, not assumed
    assert "from the run's cached training samples" in made.notes["refined_per_problem"]
    (refined,) = (folder / "cache").rglob("refined.jsonl")
    traces = next(c for c in made.costs if c.stage == "refined")
    assert traces.units == len(refined.read_text().splitlines())


def test_construction_assumptions_from_graded_samples_by_hand():
    """Problem a: positives 0 (10 tokens) and 2 (30) under q = 1; 0 pairs with the longer wrong 1 and 3, 2 with 3.
    Problem b has no wrong response (nothing to refine or pair), c no right one."""
    from tsq.selection import QFix
    from tsq.stages.pairs import PairSettings

    rows = [("a", 10, True, 2, 8), ("a", 20, False, 1, 20), ("a", 30, True, 4, 24), ("a", 40, False, 1, 40)]
    rows += [("b", 5, True, 1, 5), ("b", 50, True, 5, 50), ("c", 7, False, 1, 7), ("c", 9, False, 1, 9)]
    frame = pd.DataFrame(rows, columns=["problem_id", "n_tokens", "correct", "n_steps", "step_tokens"])
    frame["sample"] = frame.groupby("problem_id").cumcount()
    made = construction_assumptions(frame, QFix(q=1.0), PairSettings(max_pairs=64))
    assert made == pytest.approx({"refined_per_problem": 2 / 3, "pairs_per_problem": 3 / 3, "step_tokens": 32 / 6})
    capped = construction_assumptions(frame, QFix(q=1.0), PairSettings(max_pairs=2))
    assert capped["pairs_per_problem"] == pytest.approx(2 / 3)
