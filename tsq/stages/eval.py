"""Stage `eval`: a model's graded responses on the `eval=` split (`tsq.evaluation.evaluate.Evaluator` says how
many and how they are sampled), keyed on the model, the world, the split and those settings."""

from __future__ import annotations

from tsq.cache import Stage, world_key
from tsq.data.base import ShortcutProbe
from tsq.evaluation.evaluate import Evaluator
from tsq.models.base import ModelHandle
from tsq.stages.context import RunContext
from tsq.stages.samples import GradedSamples, graded_samples

EVAL = Stage("eval", 3)  # 3: n_tokens counts the EOS


def eval_key_parts(ctx: RunContext, model: ModelHandle, evaluator: Evaluator) -> tuple[dict, dict]:
    config = {"eval": evaluator.key_material(), "sampler": ctx.sampler.key_material()}
    return config, {"model": model.key, "world": world_key(ctx.world)}


def evaluation(ctx: RunContext, model: ModelHandle, evaluator: Evaluator) -> GradedSamples:
    """One row per sampled response of `model` (graded, with token and step counts) and the diagnostics
    (`<cache>/eval/<key>/samples.jsonl`); cached."""
    world = ctx.world
    probe = evaluator.shortcut_probe and isinstance(world, ShortcutProbe)
    return graded_samples(
        ctx,
        model,
        evaluator.problems(world),
        evaluator.params,
        EVAL,
        *eval_key_parts(ctx, model, evaluator),
        description={"model": model.key, "split": evaluator.split},
        extra=(lambda sampler: {"shortcut_acc_by_level": evaluator.probe_shortcut(world, sampler)}) if probe else None,
    )
