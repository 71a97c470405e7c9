"""Sample, grade and count: the one way tsq turns problems into graded responses.

Used by evaluation (test split) and by data construction (train split). Work is written in shards
of `shard_size` problems, each seeded on its own and written atomically, so a killed run resumes at
the first missing shard and ends with exactly the artifact an uninterrupted run writes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pandas as pd

from tsq.cache import Build, Stage, atomic_write_text, world_key
from tsq.context import RunContext
from tsq.data.base import Problem, ThinkingFormat, TraceAnatomist
from tsq.models.base import ModelHandle
from tsq.progress import StageProgress
from tsq.sampling.base import Sampler, SamplingParams
from tsq.text import THINK_CLOSE, split_steps

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
SHARD_SEED_STRIDE = 100_003  # seeds of different shards never collide (fewer batches than this per shard)


def grade_completions(world, sampler: Sampler, problems: Sequence[Problem], params: SamplingParams) -> list[dict]:
    """One record per sampled response: text, token count, finish reason, correctness, step counts."""
    completions = sampler.generate([p.prompt for p in problems], params)
    flat = [(problem, j, c) for problem, group in zip(problems, completions, strict=True) for j, c in enumerate(group)]
    grades = world.grade_many([p for p, _, _ in flat], [c.text for _, _, c in flat])
    rows, steps_of_rows = [], []
    for (problem, j, c), correct in zip(flat, grades, strict=True):
        steps = split_steps(c.text, world.step_delimiter)
        row = {
            "problem_id": problem.id,
            "benchmark": problem.benchmark,
            "level": str(problem.level),
            "sample": j,
            "text": c.text,
            "n_tokens": c.n_tokens,
            "finish_reason": c.finish_reason,
            "correct": bool(correct),
            "n_steps": len(steps),
        }
        if isinstance(world, TraceAnatomist):
            anatomy = world.anatomy(problem, c.text)
            row["redundant_tokens"], row["filler_tokens"] = anatomy.redundant, anatomy.filler
        rows.append(row)
        steps_of_rows.append(steps)
    counts = iter(sampler.count_tokens([s for steps in steps_of_rows for s in steps]))
    for row, steps in zip(rows, steps_of_rows, strict=True):
        row["step_tokens"] = sum(next(counts) for _ in steps)
    return rows


def read_samples(path) -> pd.DataFrame:
    return pd.read_json(path, lines=True, dtype={"problem_id": str, "level": str, "text": str})


def sample_graded(
    ctx: RunContext,
    model: ModelHandle,
    problems: Sequence[Problem],
    params: SamplingParams,
    stage: Stage,
    config: dict,
    inputs: dict[str, str],
    shard_size: int = 64,
    description: dict | None = None,
    extra: Callable[[Sampler], dict] | None = None,
) -> tuple[pd.DataFrame, dict, str]:
    """Graded samples of `model` on `problems` as an artifact of `stage`, built shard by shard if missing;
    returns them, the diagnostics and the artifact's key.

    `extra(sampler)` may add diagnostics (saved as `diagnostics.json`) while the model is loaded.
    The sampler is only created when some shard is missing.
    """
    if shard_size <= 0:
        raise ValueError(f"shard_size must be > 0, got {shard_size}")
    chunks = [problems[i : i + shard_size] for i in range(0, len(problems), shard_size)]

    def build(job: Build) -> None:
        shards = [job.scratch / f"shard-{s:05d}.jsonl" for s in range(len(chunks))]
        log.info("stage %s: %d of %d shards already done", stage.name, sum(x.exists() for x in shards), len(chunks))
        sampler: Sampler | None = None
        done = sum(len(c) for c, shard in zip(chunks, shards, strict=True) if shard.exists())
        what = f"{stage.name}: sampling and grading"
        with StageProgress(what, len(problems), "problems", ctx.sampler.progress, initial=done) as progress:
            for s, (chunk, shard) in enumerate(zip(chunks, shards, strict=True)):
                if shard.exists():
                    continue
                sampler = sampler or ctx.sampler(model)
                rows = grade_completions(
                    ctx.world, sampler, chunk, replace(params, seed=params.seed + s * SHARD_SEED_STRIDE)
                )
                atomic_write_text(shard, "".join(json.dumps(r) + "\n" for r in rows))
                progress.update(len(chunk), f"last shard's accuracy {sum(r['correct'] for r in rows) / len(rows):.2f}")
        diagnostics = {}
        if extra is not None:
            diagnostics = extra(sampler or ctx.sampler(model))
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
    return frame, diagnostics, artifact.key


HELD_OUT_SPLITS = ("dev", "test")
CUT_WARNING_SHARE = 0.5  # above this share of responses cut at the cap, the numbers describe the cap


def warn_if_cut(frame: pd.DataFrame, stage: str, max_new_tokens: int) -> float:
    """The share of responses that stopped at max_new_tokens; a loud warning when it is most of them."""
    share = float((frame["finish_reason"] == "length").mean()) if len(frame) else 0.0
    if share > CUT_WARNING_SHARE:
        log.warning(
            "stage %s: %.0f%% of %d responses were cut at max_new_tokens=%d before they ended; their accuracy "
            "and lengths describe the cap, not the model (raise %s.max_new_tokens)",
            stage,
            100 * share,
            len(frame),
            max_new_tokens,
            "eval" if stage == "eval" else "sampling",
        )
    return share


@dataclass
class SamplingStage:
    """`sampling=`: N graded responses per problem of a split, the input of data construction.

    CPU default N = 16 at T = 0.9; `sampling=paper` is the paper's N = 64 (experiments/paper_notes.md §1.2).
    """

    split: str = "train"
    # sampling from dev or test (the training data of construction) is refused unless this is true
    allow_held_out_split: bool = False
    n: int = 16
    temperature: float = 0.9
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    shard_size: int = 64
    max_problems: int | None = None

    STAGE = Stage("samples", 2)  # 2: n_tokens counts the EOS

    def __post_init__(self) -> None:
        self.params = SamplingParams.configured(
            "sampling",
            n=self.n,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
        )
        if self.shard_size <= 0:
            raise ValueError(f"sampling.shard_size must be > 0, got {self.shard_size}")
        if self.split in HELD_OUT_SPLITS and not self.allow_held_out_split:
            raise ValueError(
                f"sampling.split={self.split}: training data would come from a held-out split, so its scores (and any "
                "setting chosen on it) would no longer measure generalisation; set sampling.allow_held_out_split=true "
                "if that is what you want"
            )
        if self.max_problems is not None and self.max_problems <= 0:
            raise ValueError(f"sampling.max_problems must be > 0, got {self.max_problems}")

    def problems(self, world) -> list[Problem]:
        problems = world.split(self.split)
        if not problems:
            raise ValueError(f"sampling.split={self.split!r} of data={world.name} is empty")
        return problems[: self.max_problems] if self.max_problems else problems

    def key_material(self) -> dict:
        keys = ("split", "n", "temperature", "top_p", "max_new_tokens", "seed", "shard_size", "max_problems")
        return {k: getattr(self, k) for k in keys if k != "max_problems" or self.max_problems is not None}

    def key(self, ctx: RunContext, model: ModelHandle) -> str:
        return self.STAGE.key(*self._key_parts(ctx, model))

    def _key_parts(self, ctx: RunContext, model: ModelHandle) -> tuple[dict, dict]:
        config = {"sampling": self.key_material(), "sampler": ctx.sampler.key_material()}
        return config, {"model": model.key, "world": world_key(ctx.world)}

    def run(self, ctx: RunContext, model: ModelHandle) -> tuple[pd.DataFrame, str]:
        """The graded samples of `model` on this split (cached) and their artifact's key."""
        frame, _, key = sample_graded(
            ctx,
            model,
            self.problems(ctx.world),
            self.params,
            self.STAGE,
            *self._key_parts(ctx, model),
            shard_size=self.shard_size,
            description={"model": model.key, "split": self.split},
        )
        return frame, key
