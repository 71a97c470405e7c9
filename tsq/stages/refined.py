"""Stage `refined`: the refined text of every chosen positive that has at least one negative to pair with,
keyed on the samples, the selector and the refiner (a sweep over the pair settings or the loss refines once).

The chosen traces are refined in shards of the refiner's `shard_traces` (one shard when unset), each by the
refiner of its shard (`Refiner.for_shard`: a seed of its own) and written atomically; the run's executor builds
the missing ones (`executor=ray`: on model replicas), and the stage joins them in order. So a killed run resumes
at its first missing shard, and every executor writes the same file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from tsq.cache import Artifact, Build, Stage, atomic_write_text, read_jsonl
from tsq.data.base import Problem, ProblemSource
from tsq.models.base import ModelHandle
from tsq.progress import StageProgress
from tsq.refinement.base import ChosenTrace, Refiner
from tsq.sampling.base import Sampler
from tsq.sampling.executors import ModelReplica
from tsq.selection import Selection, Selector, positives_with_negatives
from tsq.stages.context import RunContext
from tsq.stages.samples import GradedSamples

REFINED = Stage("refined", 3)  # 3: lengths count the EOS
REFINED_FILE = "refined.jsonl"


def refined_key_parts(selector: Selector, refiner: Refiner, samples_key: str) -> tuple[dict, dict]:
    return {"selector": selector.key_material(), "refiner": refiner.key_material()}, {"samples": samples_key}


@dataclass(frozen=True)
class RefineShard:
    """One shard of the `refined` stage: chosen traces, the (problem id, sample index) each came from, and the
    refiner of this shard."""

    index: int
    refiner: Refiner
    traces: tuple[ChosenTrace, ...]
    sources: tuple[tuple[str, int], ...]
    step_delimiter: str
    path: Path

    def build(self, sampler: Callable[[], Sampler], world: ProblemSource) -> float:
        """Refine the shard's traces and write their records; returns the share of scored steps accepted."""
        policy = sampler() if self.refiner.needs_policy else None
        results = self.refiner.refine_chosen(policy, self.traces, self.step_delimiter)
        lines = []
        for (pid, sample), trace, res in zip(self.sources, self.traces, results, strict=True):
            record = {"problem_id": pid, "sample": sample, "original": trace.text}
            record.update({k: v for k, v in asdict(res).items() if k != "token_ids"})
            lines.append(json.dumps(record) + "\n")
        atomic_write_text(self.path, "".join(lines))
        scored = sum(r.steps_scored for r in results)
        return sum(r.steps_accepted for r in results) / scored if scored else 0.0


def refined(
    ctx: RunContext,
    model: ModelHandle,
    samples: GradedSamples,
    selected: dict[str, tuple[pd.DataFrame, Selection]],
    problems: dict[str, Problem],
    selector: Selector,
    refiner: Refiner,
) -> Artifact:
    """Refine the selected positives that some negative pairs with (cached); `model` is the policy that scores
    or writes the rewrites where the refiner needs one."""
    todo = positives_with_negatives(selected)
    size = refiner.shard_traces or max(len(todo), 1)
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]

    def build(job: Build) -> None:
        paths = [job.scratch / f"shard-{s:05d}.jsonl" for s in range(len(chunks))]
        jobs = []
        for s, (chunk, path) in enumerate(zip(chunks, paths, strict=True)):
            if path.exists():
                continue
            chosen = [selected[pid][0].loc[row] for pid, row in chunk]
            traces = tuple(
                ChosenTrace(
                    prompt=problems[pid].prompt,
                    text=sample["text"],
                    n_tokens=int(sample["n_tokens"]),
                    ended_with_eos=sample["finish_reason"] == "eos",
                    n_steps=int(sample["n_steps"]),
                    step_tokens=int(sample["step_tokens"]),
                )
                for (pid, _), sample in zip(chunk, chosen, strict=True)
            )
            sources = tuple((pid, int(sample["sample"])) for (pid, _), sample in zip(chunk, chosen, strict=True))
            jobs.append(RefineShard(s, refiner.for_shard(s), traces, sources, ctx.world.step_delimiter, path))
        sizes = {j.index: len(j.traces) for j in jobs}
        replica = ModelReplica(ctx.sampler.factory, model.path, model.revision)
        what = f"refined: refiner={refiner.name}, {len(chunks)} shard(s)"
        with StageProgress(
            what, len(todo), "traces", ctx.sampler.progress, initial=len(todo) - sum(sizes.values())
        ) as progress:

            def finished(index: int, acceptance: float) -> None:
                progress.update(sizes[index], f"last shard's acceptance {acceptance:.2f}")

            ctx.executor.run(jobs, ctx.world, lambda: ctx.sampler(model), replica, finished)
        with open(job.dir / REFINED_FILE, "w", encoding="utf-8") as out:
            for path in paths:
                out.write(path.read_text(encoding="utf-8"))

    return ctx.store.cached(
        REFINED,
        *refined_key_parts(selector, refiner, samples.key),
        build,
        doing=f"refining {len(todo)} chosen traces with refiner={refiner.name}",
        description={"samples": samples.key, "refiner": refiner.name},
    )


def read_refined(artifact: Artifact) -> list[dict]:
    """The records of a `refined` artifact (one per refined positive)."""
    return read_jsonl(artifact.path / REFINED_FILE)
