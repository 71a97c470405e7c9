"""Stage `forced_budget`: the first `eval.forced_samples` responses per problem of an evaluation, cut at each
of `eval.forced_budgets` tokens and forced to answer (`tsq.evaluation.forced`); keyed on those samples."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tsq.cache import Artifact, Build, Stage
from tsq.evaluation.evaluate import Evaluator
from tsq.evaluation.forced import forced_budget_samples
from tsq.models.base import ModelHandle
from tsq.sampling.base import SamplingParams
from tsq.stages.context import RunContext
from tsq.stages.samples import GradedSamples

FORCED = Stage("forced_budget", 1)
FORCED_FILE = "forced.jsonl"


def forced_budget(
    ctx: RunContext, model: ModelHandle, evaluator: Evaluator, evaluated: GradedSamples
) -> Artifact | None:
    """The forced-budget rows of the first `forced_samples` responses per problem (cached); None when off."""
    if not evaluator.forced_budgets:
        return None
    config = {
        "budgets": evaluator.forced_budgets,
        "samples": evaluator.forced_samples,
        "answer_tokens": evaluator.forced_answer_tokens,
        "sampler": ctx.sampler.key_material(),
    }
    frame = evaluated.frame
    chosen = frame[frame["sample"] < evaluator.forced_samples]

    def build(job: Build) -> None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model.path, **model.load_kwargs())
        params = SamplingParams(
            n=1,
            max_new_tokens=evaluator.forced_answer_tokens,
            temperature=evaluator.temperature,
            top_p=evaluator.top_p,
            seed=evaluator.seed,
        )
        problems = {p.id: p for p in evaluator.problems(ctx.world)}
        sampler, budgets = ctx.sampler(model), evaluator.forced_budgets
        rows = forced_budget_samples(ctx.world, sampler, tokenizer, problems, chosen, budgets, params)
        rows.to_json(job.dir / FORCED_FILE, orient="records", lines=True)

    return ctx.store.cached(
        FORCED,
        config,
        {"samples": evaluated.key, "model": model.key},
        build,
        doing=f"forcing budgets {evaluator.forced_budgets} on {len(chosen)} responses",
    )


def read_forced(path: Path) -> pd.DataFrame:
    """The forced-budget rows of a `forced_budget` artifact folder."""
    return pd.read_json(Path(path) / FORCED_FILE, lines=True, dtype={"problem_id": str, "level": str})
