"""Stage `samples`: N graded responses per training problem, the input of data construction.

`graded_samples` is how every sampling stage (`samples` here, `eval` in `tsq.stages.eval`) builds its
artifact: work is written in shards of `shard_size` problems, each seeded on its own and written atomically,
so a killed run resumes at the first missing shard and ends with exactly the artifact an uninterrupted run
writes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pandas as pd

from tsq.cache import Artifact, Build, Stage, world_key
from tsq.data.base import Problem, ThinkingFormat
from tsq.models.base import ModelHandle
from tsq.progress import StageProgress
from tsq.sampling.base import Sampler, SamplingParams
from tsq.sampling.executors import ModelReplica, SampleShard, shard_seed
from tsq.sampling.graded import read_samples, warn_if_cut
from tsq.sampling.settings import SamplingSettings
from tsq.stages.context import RunContext
from tsq.text import THINK_CLOSE

log = logging.getLogger(__name__)

SAMPLES = Stage("samples", 2)  # 2: n_tokens counts the EOS
SAMPLES_FILE = "samples.jsonl"
SHARD_PROBLEMS = 64  # problems per shard of a sampling stage that sets no `shard_size` (evaluations)


@dataclass(frozen=True)
class GradedSamples:
    """What a sampling stage returns: its artifact, one graded row per response, and its diagnostics."""

    artifact: Artifact
    frame: pd.DataFrame
    diagnostics: dict

    @property
    def key(self) -> str:
        return self.artifact.key


def graded_samples(
    ctx: RunContext,
    model: ModelHandle,
    problems: Sequence[Problem],
    params: SamplingParams,
    stage: Stage,
    config: dict,
    inputs: dict[str, str],
    shard_size: int = SHARD_PROBLEMS,
    description: dict | None = None,
    extra: Callable[[Sampler], dict] | None = None,
) -> GradedSamples:
    """Graded samples of `model` on `problems` as an artifact of `stage`, built shard by shard if missing.

    `extra(sampler)` may add diagnostics (saved as `diagnostics.json`) while the model is loaded.
    The sampler is only created when some shard is missing.
    """
    if shard_size <= 0:
        raise ValueError(f"shard_size must be > 0, got {shard_size}")
    chunks = [problems[i : i + shard_size] for i in range(0, len(problems), shard_size)]

    def build(job: Build) -> None:
        shards = [job.scratch / f"shard-{s:05d}.jsonl" for s in range(len(chunks))]
        log.info("stage %s: %d of %d shards already done", stage.name, sum(x.exists() for x in shards), len(chunks))
        done = sum(len(c) for c, shard in zip(chunks, shards, strict=True) if shard.exists())
        # each shard's seed is its own (never a worker's), so every executor writes the same files
        jobs = [
            SampleShard(s, tuple(chunk), replace(params, seed=shard_seed(params.seed, s)), shard)
            for s, (chunk, shard) in enumerate(zip(chunks, shards, strict=True))
            if not shard.exists()
        ]
        sizes = {j.index: len(j.problems) for j in jobs}
        replica = ModelReplica(ctx.sampler.factory, model.path, model.revision)
        what = f"{stage.name}: sampling and grading"
        with StageProgress(what, len(problems), "problems", ctx.sampler.progress, initial=done) as progress:

            def finished(index: int, accuracy: float) -> None:
                progress.update(sizes[index], f"last shard's accuracy {accuracy:.2f}")

            ctx.executor.run(jobs, ctx.world, lambda: ctx.sampler(model), replica, finished)
        diagnostics = {}
        if extra is not None:
            diagnostics = extra(ctx.sampler(model))
        with open(job.dir / SAMPLES_FILE, "w", encoding="utf-8") as out:
            for shard in shards:
                out.write(shard.read_text())
        (job.dir / "diagnostics.json").write_text(json.dumps(diagnostics, indent=2))

    artifact = ctx.store.cached(
        stage, config, inputs, build, doing=f"sampling {len(problems)} problems", description=description
    )
    frame = read_samples(artifact.path / SAMPLES_FILE)
    diagnostics = json.loads((artifact.path / "diagnostics.json").read_text())
    diagnostics["cut_at_max_new_tokens"] = warn_if_cut(frame, stage.name, params.max_new_tokens)
    if isinstance(ctx.world, ThinkingFormat) and ctx.world.requires_closed_thinking:
        # graded wrong whatever they hold (tsq.data.templates.PromptTemplate.thinking)
        diagnostics["unclosed_thinking"] = float((~frame["text"].str.contains(THINK_CLOSE, regex=False)).mean())
    return GradedSamples(artifact, frame, diagnostics)


def samples_key_parts(ctx: RunContext, model: ModelHandle, settings: SamplingSettings) -> tuple[dict, dict]:
    config = {"sampling": settings.key_material(), "sampler": ctx.sampler.key_material()}
    return config, {"model": model.key, "world": world_key(ctx.world)}


def samples(ctx: RunContext, model: ModelHandle, settings: SamplingSettings) -> GradedSamples:
    """The graded samples of `model` on the `sampling=` split (cached)."""
    return graded_samples(
        ctx,
        model,
        settings.problems(ctx.world),
        settings.params,
        SAMPLES,
        *samples_key_parts(ctx, model, settings),
        shard_size=settings.shard_size,
        description={"model": model.key, "split": settings.split},
    )
