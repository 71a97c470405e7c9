"""Sample, grade and count: the one way tsq turns problems into graded responses.

Used by evaluation (test split) and by data construction (train split). Work is written in shards
of `shard_size` problems, each seeded on its own and written atomically, so a killed run resumes at
the first missing shard and ends with exactly the artifact an uninterrupted run writes.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pandas as pd

from tsq.cache import ArtifactStore, atomic_write_text, stage_key, world_key
from tsq.data.base import Problem
from tsq.sampling.base import Sampler, SamplingParams
from tsq.steps import split_steps

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
        if hasattr(world, "anatomy"):
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
    world,
    problems: Sequence[Problem],
    params: SamplingParams,
    make_sampler: Callable[[], Sampler],
    store: ArtifactStore,
    stage: str,
    key: str,
    shard_size: int = 64,
    description: dict | None = None,
    extra: Callable[[Sampler], dict] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Graded samples for `problems` as the artifact `stage/key`, built shard by shard if missing.

    `extra(sampler)` may add diagnostics (saved as `diagnostics.json`) while the model is loaded.
    The sampler is only created when some shard is missing.
    """
    if shard_size <= 0:
        raise ValueError(f"shard_size must be > 0, got {shard_size}")
    final = store.path(stage, key)
    if store.exists(stage, key):
        log.info("stage %s: cache hit %s", stage, key)
        return read_samples(final / SAMPLES_FILE), json.loads((final / "diagnostics.json").read_text())
    scratch = store.scratch(stage, key)
    chunks = [problems[i : i + shard_size] for i in range(0, len(problems), shard_size)]
    done = sum((scratch / f"shard-{s:05d}.jsonl").exists() for s in range(len(chunks)))
    log.info("stage %s: cache miss %s, %d of %d shards already done", stage, key, done, len(chunks))
    sampler: Sampler | None = None
    for s, chunk in enumerate(chunks):
        shard = scratch / f"shard-{s:05d}.jsonl"
        if shard.exists():
            continue
        sampler = sampler or make_sampler()
        rows = grade_completions(world, sampler, chunk, replace(params, seed=params.seed + s * SHARD_SEED_STRIDE))
        atomic_write_text(shard, "".join(json.dumps(r) + "\n" for r in rows))
    diagnostics = {}
    if extra is not None:
        sampler = sampler or make_sampler()
        diagnostics = extra(sampler)
    with store.build(stage, key, description) as tmp:
        with open(tmp / SAMPLES_FILE, "w", encoding="utf-8") as out:
            for s in range(len(chunks)):
                out.write((scratch / f"shard-{s:05d}.jsonl").read_text())
        (tmp / "diagnostics.json").write_text(json.dumps(diagnostics, indent=2))
    shutil.rmtree(scratch, ignore_errors=True)
    return read_samples(final / SAMPLES_FILE), diagnostics


@dataclass
class SamplingStage:
    """`sampling=`: N graded responses per problem of a split, the input of data construction.

    CPU default N = 16 at T = 0.9; `sampling=paper` is the paper's N = 64 (papers.md §1.2).
    """

    split: str = "train"
    n: int = 16
    temperature: float = 0.9
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    shard_size: int = 64
    max_problems: int | None = None

    STAGE = "samples"
    STAGE_VERSION = 1

    def __post_init__(self) -> None:
        self.params = SamplingParams(
            n=self.n, max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p, seed=self.seed
        )
        if self.shard_size <= 0:
            raise ValueError(f"sampling.shard_size must be > 0, got {self.shard_size}")
        if self.max_problems is not None and self.max_problems <= 0:
            raise ValueError(f"sampling.max_problems must be > 0, got {self.max_problems}")

    def problems(self, world) -> list[Problem]:
        problems = world.split(self.split)
        if not problems:
            raise ValueError(f"sampling.split={self.split!r} of data={world.name} is empty")
        return problems[: self.max_problems] if self.max_problems else problems

    def key(self, model_key: str, world, sampler_config: dict) -> str:
        keys = ("split", "n", "temperature", "top_p", "max_new_tokens", "seed", "shard_size", "max_problems")
        own = {k: getattr(self, k) for k in keys if k != "max_problems" or self.max_problems is not None}
        inputs = {"model": model_key, "world": world_key(world)}
        return stage_key(self.STAGE, self.STAGE_VERSION, {"sampling": own, "sampler": sampler_config}, inputs)

    def run(self, handle, world, make_sampler, store: ArtifactStore, sampler_config: dict) -> tuple[pd.DataFrame, str]:
        key = self.key(handle.key, world, sampler_config)
        frame, _ = sample_graded(
            world,
            self.problems(world),
            self.params,
            lambda: make_sampler(model_path=handle.path),
            store,
            self.STAGE,
            key,
            shard_size=self.shard_size,
            description={"model": handle.key, "split": self.split},
        )
        return frame, key
