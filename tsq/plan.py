"""A cost plan before the first GPU-hour: per stage of a run, its work units, the tokens it generates, scores and
trains on, and the hours that takes at given (or measured) throughputs, with every assumption printed.

    python -m tsq.plan preset=paper model=r1_distill_qwen_7b data=math +plan.generate_tokens_per_s=2500 \\
        +plan.score_tokens_per_s=40000 +plan.train_tokens_per_s=8000 +plan.response_tokens=3500
    python -m tsq.plan +plan.measure=true          # throughputs measured here on the (built) base model

Measured generation is timed per sampling stage on that stage's own first call, cut short (its first prompts, as
many as fill `+plan.probe_rows` responses, 256 by default, of at most `+plan.probe_tokens`, 64): prompt length and
rows per call decide a real model's tokens/s, and a probe of short made-up prompts was 3.6-4.4x off on SmolLM2.

Nothing is sampled or trained. Token counts follow the settings (problems, samples per problem, candidates, steps,
batch sizes); what the settings do not fix is an assumption with a default, printed beside the plan, that
`+plan.<name>=` overrides: the mean response length (default: the base model's cached evaluation, if there is one),
the positives refined per training problem, tokens per reasoning step, tokens of a base-model training example
(where the run builds its base model: `model=tiny`, `model=smollm2_world`, not cached yet). Sampling stages spread
over the executor's replicas (`executor=ray`), refinement (generation and scoring) too when it is sharded
(`refine_budget.shard_traces`); training runs in one process. docs/performance.md compares the plan with measured
wall times.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from tsq.models.base import TrainedOnTeacher
from tsq.sampling.base import SamplingParams
from tsq.sampling.executors import ModelReplica
from tsq.selection import Selector, positives_with_negatives, select_all
from tsq.stages.pairs import PairSettings

# what the settings do not fix (`+plan.<name>=` overrides each); pairs_per_problem only counts when training runs
# whole epochs over the pairs (train.max_steps null)
ASSUMPTION_DEFAULTS = {"refined_per_problem": 2.0, "step_tokens": 8.0, "pairs_per_problem": 8.0}


@dataclass(frozen=True)
class Throughput:
    """Tokens per second: generated per replica, scored (forward only) and trained (forward and backward).
    `generate_by_stage` holds the generation rates measured on a stage's own calls (its prompts, its rows per call),
    which replace `generate` for that stage."""

    generate: float
    score: float
    train: float
    replicas: int = 1
    generate_by_stage: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rates = [self.generate, self.score, self.train, *self.generate_by_stage.values()]
        if min(rates) <= 0 or self.replicas <= 0:
            raise ValueError(f"plan: throughputs and replicas must be > 0, got {self}")

    def generation(self, stage: str) -> float:
        """Generated tokens/s per replica for `stage`."""
        return self.generate_by_stage.get(stage, self.generate)


@dataclass(frozen=True)
class StageCost:
    """One stage's work: `units` of `unit`, tokens generated, scored and trained; `spread` whether its generation and
    scoring run on the executor's replicas (training never does)."""

    stage: str
    units: int
    unit: str
    generated: float = 0.0
    scored: float = 0.0
    trained: float = 0.0
    spread: bool = True

    def seconds(self, rate: Throughput) -> float:
        replicas = rate.replicas if self.spread else 1
        generating = self.generated / rate.generation(self.stage)
        return (generating + self.scored / rate.score) / replicas + self.trained / rate.train


@dataclass(frozen=True)
class Assumptions:
    """What the settings do not fix: mean response tokens, positives refined per problem, tokens per step, pairs
    per problem."""

    response_tokens: float
    refined_per_problem: float = ASSUMPTION_DEFAULTS["refined_per_problem"]
    step_tokens: float = ASSUMPTION_DEFAULTS["step_tokens"]
    pairs_per_problem: float = ASSUMPTION_DEFAULTS["pairs_per_problem"]
    # tokens of one example (prompt and response) the base model is trained on, where the run builds it
    example_tokens: float = 0.0
    notes: dict = field(default_factory=dict)


def construction_assumptions(samples: pd.DataFrame, selector: Selector, pairs: PairSettings) -> dict[str, float]:
    """`refined_per_problem`, `step_tokens` and `pairs_per_problem` as data construction will find them in graded
    training samples: the selector's positives that some negative pairs with (the traces refinement refines), their
    tokens per step, and the pairs the `pairs` stage builds (it pairs by the unrefined lengths, so the count is
    exact)."""
    selected = select_all(samples, selector)
    refined = positives_with_negatives(selected)
    chosen = pd.DataFrame([selected[pid][0].loc[row] for pid, row in refined])
    pair_count = sum(len(pairs.pairs_of(pid, group, sel)) for pid, (group, sel) in selected.items())
    made = {"refined_per_problem": len(refined) / len(selected), "pairs_per_problem": pair_count / len(selected)}
    if len(chosen) and chosen["n_steps"].sum() > 0:
        made["step_tokens"] = float(chosen["step_tokens"].sum() / chosen["n_steps"].sum())
    return made


def base_model_cost(steps: int, batch_size: int, a: Assumptions) -> StageCost:
    """Building the base model on the teacher's traces (`model=tiny` from scratch, `model=smollm2_world` fine-tuned):
    `steps` optimizer steps of `batch_size` examples of `a.example_tokens` tokens each."""
    return StageCost(
        "base_model", steps, "optimizer steps", trained=steps * batch_size * a.example_tokens, spread=False
    )


def evaluation_cost(
    name: str, problems: int, n: int, budgets: list[int] | None, forced: int, a: Assumptions
) -> StageCost:
    """An evaluation: n responses per problem, plus `forced` answers per problem at every forced budget (a forced
    answer continues a response cut at the budget: at most the budget's tokens of it, the response's if shorter)."""
    cut = sum(min(b, a.response_tokens) for b in budgets or [])
    generated = problems * n * a.response_tokens + problems * forced * cut
    return StageCost(name, problems, "problems", generated=generated)


def sampling_cost(problems: int, n: int, a: Assumptions) -> StageCost:
    return StageCost("samples", problems, "problems", generated=problems * n * a.response_tokens)


def refinement_cost(
    problems: int, k: int, window: int, max_step_tokens: int, a: Assumptions, kl: bool = True, spread: bool = False
) -> StageCost:
    """Step refinement: k candidate steps per step of every refined trace; with the KL rule each candidate is scored
    over the next `window` tokens (at most what is left of the trace, half of it on average) after one forward pass
    over the trace. `spread`: its shards run on the executor's replicas (`refine_budget.shard_traces` set), else
    all of it on one."""
    traces = problems * a.refined_per_problem
    steps = traces * a.response_tokens / a.step_tokens
    candidates = steps * k
    generated = candidates * min(max_step_tokens, a.step_tokens)
    scored = candidates * min(window, a.response_tokens / 2) + traces * a.response_tokens if kl else 0.0
    units = math.ceil(round(traces, 6))  # (a per-problem count read from samples, times problems, can carry 1e-15)
    return StageCost("refined", units, "traces", generated=generated, scored=scored, spread=spread)


def preference_training_cost(steps: int, rows_per_step: int, a: Assumptions, reference: bool) -> list[StageCost]:
    """Reference log-probs of the pairs read (forward only) and the policy's steps (chosen and rejected)."""
    tokens = steps * rows_per_step * 2 * a.response_tokens
    out = [StageCost("ref_logps", steps * rows_per_step, "pairs", scored=tokens)] if reference else []
    return [*out, StageCost("policy", steps, "optimizer steps", trained=tokens)]


def rl_cost(steps: int, completions: int, iterations: int, beta: float, a: Assumptions) -> StageCost:
    """GRPO: every step generates its rollouts (in the trainer's process), scores them with the reference model when
    beta > 0 and with the old policy when it trains on them more than once, and trains on them `iterations` times."""
    tokens = steps * completions * a.response_tokens
    scored = tokens * ((beta > 0) + (iterations > 1))
    trained = tokens * iterations
    return StageCost("rl_policy", steps, "optimizer steps", tokens, scored, trained, spread=False)


def plan_table(costs: list[StageCost], rate: Throughput) -> pd.DataFrame:
    """One row per stage and a total: units, tokens in millions, hours."""
    rows = [
        {
            "stage": c.stage,
            "work units": f"{c.units:,} {c.unit}",
            "generated (M tokens)": round(c.generated / 1e6, 3),
            "scored (M tokens)": round(c.scored / 1e6, 3),
            "trained (M tokens)": round(c.trained / 1e6, 3),
            "hours": round(c.seconds(rate) / 3600, 3),
        }
        for c in costs
    ]
    total = {k: round(sum(r[k] for r in rows), 3) for k in rows[0] if k not in ("stage", "work units")}
    table = pd.DataFrame([*rows, {"stage": "total", "work units": "", **total}])
    seconds = [c.seconds(rate) for c in costs]
    table["wall"] = [wall(x) for x in [*seconds, sum(seconds)]]
    return table


def wall(seconds: float) -> str:
    """A duration as a reader wants it: seconds, minutes or hours."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def run_costs(cfg, world, parts, a: Assumptions, pretrain=None) -> list[StageCost]:
    """The stages `cfg.steps` runs, costed (a preference run, a TL;DR run or an RL run); with `pretrain` (a
    `Pretraining`) the base model's build first, where the run builds it."""
    from tsq.stages.recipe import TRAINING_STEPS

    steps = list(cfg.steps)
    ev = parts.evaluator
    evaluation = evaluation_cost(
        "eval (base)", len(ev.problems(world)), ev.n_samples, ev.forced_budgets, ev.forced_samples, a
    )
    problems = len(parts.sampling.problems(world))
    costs = [base_model_cost(pretrain.steps, pretrain.batch_size, a)] if pretrain is not None else []
    trains = set(TRAINING_STEPS) & set(steps)
    if "base_eval" in steps or trains:
        costs.append(evaluation)
    if "construct" in steps or "tldr" in steps:
        costs.append(sampling_cost(problems, parts.sampling.n, a))
    if "construct" in steps and getattr(parts.refiner, "k", None):
        refiner = parts.refiner
        kl = getattr(refiner, "accept", None) == "kl"
        sharded = refiner.shard_traces is not None
        costs.append(refinement_cost(problems, refiner.k, refiner.window, refiner.max_step_tokens, a, kl, sharded))
    if "train" in steps:
        train = parts.train
        rows = train.global_batch_size or train.batch_size
        steps_of_training = train.max_steps
        if steps_of_training is None:  # whole epochs over pairs whose number construction decides
            pairs = problems * a.pairs_per_problem
            steps_of_training = math.ceil(pairs / rows) * train.epochs
        reference = parts.loss.needs_reference and train.reference == "precomputed"
        costs += preference_training_cost(steps_of_training, rows, a, reference)
    if "tldr" in steps:
        tldr = parts.tldr
        trained = tldr.steps * tldr.batch_size * a.response_tokens
        costs.append(StageCost("tldr_policy", tldr.steps, "optimizer steps", trained=trained))
    if "rl" in steps:
        rl = parts.rl
        costs.append(rl_cost(rl.max_steps, rl.completions_per_step, rl.num_iterations, rl.beta, a))
    if trains:
        costs.append(replace(evaluation, stage="eval (trained)"))  # the policy answers the same problems
    return costs


@dataclass(frozen=True)
class GenerationProbe:
    """A sampling stage's first call, cut short: the first prompts of its first shard (as many as fill `rows`
    responses, at least one prompt) at the stage's settings, at most `tokens` new tokens each. `stages`: the plan
    stages whose generation it times."""

    stages: tuple[str, ...]
    prompts: list[str]
    params: SamplingParams

    @classmethod
    def of(cls, stages: tuple[str, ...], problems, params: SamplingParams, shard: int, rows: int, tokens: int):
        count = max(1, min(shard, len(problems), rows // params.n))
        short = replace(params, max_new_tokens=min(params.max_new_tokens, tokens))
        return cls(stages, [p.prompt for p in problems[:count]], short)


def probe_rate(sampler, probe: GenerationProbe) -> float:
    """Generated tokens/s of one probe call."""
    start = time.perf_counter()
    out = sampler.generate(probe.prompts, probe.params)
    return sum(c.n_tokens for group in out for c in group) / (time.perf_counter() - start)


def measured_throughput(
    replica: ModelReplica, replicas: int, probes: list[GenerationProbe], seconds: float = 5.0
) -> Throughput:
    """Tokens/s of this machine on the model: generation on each sampling stage's own probe (the first one's rate
    also stands for stages without a probe: refinement's candidates, RL rollouts), scoring (forward passes) and
    training (forward and backward) of 16 x 128-token rows."""
    import torch
    from transformers import AutoModelForCausalLM

    sampler = replica.sampler()
    probe_rate(sampler, replace(probes[0], prompts=probes[0].prompts[:1]))  # warm-up (first-call allocations)
    by_stage = {}
    for probe in probes:
        rate = probe_rate(sampler, probe)
        by_stage.update(dict.fromkeys(probe.stages, rate))
    sampler.close()
    model = AutoModelForCausalLM.from_pretrained(replica.model_path, revision=replica.revision)
    batch = torch.randint(1, min(model.config.vocab_size, 1000), (16, 128))
    rates = []
    for grad in (False, True):
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 2:
            if grad:
                model(batch, labels=batch).loss.backward()
            else:
                with torch.no_grad():
                    model(batch)
            done += batch.numel()
        rates.append(done / (time.perf_counter() - start))
    return Throughput(by_stage[probes[0].stages[0]], rates[0], rates[1], replicas, by_stage)


@dataclass(frozen=True)
class Plan:
    """A run's costed stages, the throughputs they are timed at and the assumptions behind them."""

    costs: list[StageCost]
    rate: Throughput
    notes: dict

    def table(self) -> pd.DataFrame:
        return plan_table(self.costs, self.rate)


def plan(argv: list[str]) -> Plan:
    """The plan of the run that `python run.py <argv>` would start (`+plan.*` options among them)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from tsq.sampling.graded import read_samples
    from tsq.stages.eval import EVAL
    from tsq.stages.recipe import build_parts, planned_keys
    from tsq.stages.samples import SAMPLES, SAMPLES_FILE

    conf = Path(__file__).resolve().parents[1] / "conf"
    if not any(a.startswith("paths.output_dir=") for a in argv):  # (Hydra's run folder: no job starts here)
        argv = [*argv, f"paths.output_dir={tempfile.gettempdir()}"]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("config", overrides=argv)
    options = OmegaConf.to_container(cfg.plan, resolve=True) if cfg.get("plan") else {}
    with open_dict(cfg):
        cfg.pop("plan", None)
    ctx, parts = build_parts(cfg)
    replicas = int(options.get("replicas", getattr(ctx.executor, "replicas", 1)))
    notes = {}
    keys, source = planned_keys(ctx, parts), parts.model_source
    # the base model's build is the run's work where it is trained here and not in the cache yet
    builds_base = isinstance(source, TrainedOnTeacher) and not ctx.store.exists(source.artifact, keys["base_model"])
    response = options.get("response_tokens")
    if response is None:
        key = keys["eval_base"]
        if ctx.store.exists(EVAL.name, key):
            evaluated = ctx.store.path(EVAL.name, key) / SAMPLES_FILE
            response = float(read_samples(evaluated)["n_tokens"].mean())
            notes["response_tokens"] = f"{response:.1f}, the mean of the base model's cached evaluation {evaluated}"
        else:
            response = cfg.sampling.max_new_tokens / 2
            notes["response_tokens"] = f"{response:.0f}, half of sampling.max_new_tokens (no cached evaluation)"
    else:
        notes["response_tokens"] = f"{response}, given"
    found = {}
    if "construct" in cfg.steps and ctx.store.exists(SAMPLES.name, keys["samples"]):  # the run's training samples
        cached = ctx.store.path(SAMPLES.name, keys["samples"]) / SAMPLES_FILE
        found = construction_assumptions(read_samples(cached), parts.selector, parts.pairs)
    for name, default in ASSUMPTION_DEFAULTS.items():
        if name in options:
            notes[name] = f"{options[name]}, given"
        elif name in found:
            options[name] = found[name]
            notes[name] = f"{found[name]:.2f}, from the run's cached training samples {cached}"
        else:
            notes[name] = f"{default}, default"
    example = float(options.get("example_tokens", 1.5 * float(response)))
    if builds_base:
        given = "given" if "example_tokens" in options else "default: 1.5 x response_tokens (prompt and response)"
        notes["example_tokens"] = f"{example:.1f}, {given}; the base model's {source.pretrain.steps} training steps"
    assumptions = Assumptions(
        float(response),
        **{k: float(options.get(k, v)) for k, v in ASSUMPTION_DEFAULTS.items()},
        example_tokens=example,
        notes=notes,
    )
    if options.get("measure"):
        from tsq.stages.recipe import base_model_step
        from tsq.stages.samples import SHARD_PROBLEMS

        start = time.perf_counter()
        ctx, model = base_model_step(ctx, parts)  # (prompts rendered as the run renders them)
        if builds_base:  # built now, to measure on it: the run will find it in the cache
            notes["base_model"] = f"built while measuring, {wall(time.perf_counter() - start)} (not in the plan)"
            builds_base = False
        rows, tokens = int(options.get("probe_rows", 256)), int(options.get("probe_tokens", 64))
        ev, sampling = parts.evaluator, parts.sampling
        probes = [
            GenerationProbe.of(
                ("eval (base)", "eval (trained)"), ev.problems(ctx.world), ev.params, SHARD_PROBLEMS, rows, tokens
            ),
            GenerationProbe.of(
                ("samples",), sampling.problems(ctx.world), sampling.params, sampling.shard_size, rows, tokens
            ),
        ]
        replica = ModelReplica(ctx.sampler.factory, model.path, model.revision)
        rate = measured_throughput(replica, replicas, probes)
        notes["throughput"] = (
            f"measured here; generation on each sampling stage's first {rows} responses (at most) of at most "
            f"{tokens} tokens (+plan.probe_rows, +plan.probe_tokens)"
        )
    else:
        given = {k: options.get(f"{k}_tokens_per_s") for k in ("generate", "score", "train")}
        missing = [f"plan.{k}_tokens_per_s" for k, v in given.items() if v is None]
        if missing:
            raise SystemExit(f"plan: give {', '.join('+' + m for m in missing)} (tokens/s), or +plan.measure=true")
        rate = Throughput(**{k: float(v) for k, v in given.items()}, replicas=replicas)
        notes["throughput"] = "given"
    return Plan(run_costs(cfg, ctx.world, parts, assumptions, source.pretrain if builds_base else None), rate, notes)


def main(argv: list[str]) -> None:
    made = plan(argv)
    rate, notes = made.rate, dict(made.notes)
    print(made.table().to_string(index=False))
    stages = "".join(f", {stage} {value:,.0f}" for stage, value in rate.generate_by_stage.items())
    print(
        f"\nthroughput (tokens/s): generate {rate.generate:,.0f}{stages} per replica x {rate.replicas} replicas, "
        f"score {rate.score:,.0f}, train {rate.train:,.0f} ({notes.pop('throughput')})"
    )
    print("assumptions: " + "; ".join(f"{k} {v}" for k, v in notes.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
