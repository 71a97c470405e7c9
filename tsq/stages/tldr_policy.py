"""Stage `tldr_policy`: TL;DR's policy (`tsq.training.tldr`), SFT on a System-1 / System-2 mixture whose weights
follow the dev set; keyed on both models, both data sources (their `samples` artifacts), `tldr=` and `trainer=`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tsq.cache import ArtifactStore, Build, Stage, world_key
from tsq.data.base import ProblemSource
from tsq.evaluation.evaluate import Evaluator
from tsq.models.base import ModelHandle, ModelSource, PretrainedModel
from tsq.models.tiny import TinyReasoningModel
from tsq.sampling.settings import SamplingSettings
from tsq.stages.base_model import base_model
from tsq.stages.context import RunContext
from tsq.stages.eval import evaluation
from tsq.stages.samples import samples
from tsq.training.compute import mixture_trained_tokens
from tsq.training.tldr import (
    Bounds,
    TLDRSettings,
    dev_stats,
    plot_weights,
    system1_data,
    system2_data,
    train_mixture,
)

TLDR_POLICY = Stage("tldr_policy", 3)  # 3: a checkpoint is kept only after the first re-weighting
SUMMARY_FILE = "tldr_summary.json"


@dataclass(frozen=True)
class TLDRPolicy:
    """What the stage returns: the trained policy and its summary (bounds, weight history, kept checkpoint)."""

    model: ModelHandle
    summary: dict


def short_model_source(settings: TLDRSettings, model_source: ModelSource) -> ModelSource:
    """The System-1 model: a configured path, or the tiny base architecture pretrained on short traces."""
    if settings.short_model_path:
        return PretrainedModel(name="short", path=settings.short_model_path)
    if not isinstance(model_source, TinyReasoningModel):
        raise ValueError("tldr.short_model_path is required unless model=tiny (which can train a concise twin)")
    return replace(model_source, name=f"{model_source.name}_short", teacher_style=settings.short_model_style)


def short_model(
    settings: TLDRSettings, model_source: ModelSource, world: ProblemSource, store: ArtifactStore
) -> ModelHandle:
    """The System-1 model's handle (built or loaded)."""
    return base_model(world, store, short_model_source(settings, model_source))


def short_sampling(settings: TLDRSettings, sampling: SamplingSettings) -> SamplingSettings:
    """How the System-1 model's responses are sampled: `sampling=` with `tldr.system1_samples` per problem."""
    return replace(sampling, n=settings.system1_samples)


def bound_evaluator(settings: TLDRSettings) -> Evaluator:
    """The dev evaluation that measures the bounds (T, Acc) of the short and the long model."""
    return Evaluator(
        split="dev",
        n_samples=settings.bound_samples,
        temperature=settings.bound_temperature,
        top_p=settings.bound_top_p,
        max_new_tokens=settings.max_new_tokens,
        seed=settings.seed,  # the run's seed, as every other draw below the base model
        shortcut_probe=False,
    )


def tldr_key_parts(
    ctx: RunContext, settings: TLDRSettings, model_key: str, short_key: str, system1_key: str, system2_key: str
) -> tuple[dict, dict]:
    own = {"tldr": settings.key_material(), "trainer": ctx.trainer_key_material()}
    inputs = {
        "model": model_key,
        "short": short_key,
        "system1": system1_key,
        "system2": system2_key,
        "world": world_key(ctx.world),
    }
    return own, inputs


def train_tldr(
    ctx: RunContext,
    model_source: ModelSource,
    model: ModelHandle,
    sampling: SamplingSettings,
    settings: TLDRSettings,
) -> TLDRPolicy:
    """Build both data sources and the bounds (cached stages), then train with dynamic re-weighting."""
    world = ctx.world
    short = short_model(settings, model_source, world, ctx.store)
    prompts = {p.id: p.prompt for p in world.split(sampling.split)}
    bound_eval = bound_evaluator(settings)
    # all sampling of one model before the other's, the base model's first (its sampler, a vLLM engine, is
    # still live from the base evaluation)
    long_samples = samples(ctx, model, sampling)
    t_long, acc_long = dev_stats(evaluation(ctx, model, bound_eval).frame)
    short_samples = samples(ctx, short, short_sampling(settings, sampling))
    t_short, acc_short = dev_stats(evaluation(ctx, short, bound_eval).frame)
    long_frame, short_frame = long_samples.frame, short_samples.frame
    ctx.sampler.release()  # training needs the memory; dev evaluation samples the policy in memory (HF)
    sources = [
        system1_data(short_frame, prompts, settings.easy_levels, settings.system1_min_steps),
        system2_data(long_frame, prompts, settings.hard_levels, settings.system2_pick),
    ]
    easy_correct = short_frame[short_frame["correct"] & short_frame["level"].astype(int).isin(settings.easy_levels)]
    # easy problems the short model answers correctly only without reasoning: left out of System-1 by the setting
    bare_only = easy_correct["problem_id"].nunique() - len(sources[0])
    bounds = Bounds(t_short, acc_short, t_long, acc_long)
    own, inputs = tldr_key_parts(ctx, settings, model.key, short.key, short_samples.key, long_samples.key)

    def build(job: Build) -> None:
        loggers = ctx.make_loggers() if ctx.make_loggers else []  # created only when training runs
        summary = train_mixture(
            settings, world, model.path, model.load_kwargs(), sources, bounds, ctx.trainer, job.dir, loggers
        )
        (job.dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))

    sizes = f"System-1 {len(sources[0])}, System-2 {len(sources[1])} examples; bounds {bounds}"
    artifact = ctx.store.cached(
        TLDR_POLICY, own, inputs, build, doing=sizes, description={"model": model.key, "rule": settings.rule}
    )
    summary = json.loads((artifact.path / SUMMARY_FILE).read_text())
    summary["system1_problems_without_reasoning"] = bare_only
    means = [float(np.mean([d["n_tokens"] for d in s])) if s else 0.0 for s in sources]
    summary["compute"] = {
        "sampled_tokens": int(long_frame["n_tokens"].sum() + short_frame["n_tokens"].sum()),
        "trained_tokens": mixture_trained_tokens(
            summary["history"], settings.init, summary["selected"]["step"], settings.batch_size, means
        ),
    }
    if ctx.output_dir is not None:
        plot_weights(summary["history"], Path(ctx.output_dir) / "tldr_weights.png")
    return TLDRPolicy(model.derived(f"{model.name}+{settings.name}", artifact.path, artifact.key), summary)
