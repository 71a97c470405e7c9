"""Stage `refined`: the refined text of every chosen positive that has at least one negative to pair with,
keyed on the samples, the selector and the refiner (a sweep over the pair settings or the loss refines once)."""

from __future__ import annotations

import json
from dataclasses import asdict

import pandas as pd

from tsq.cache import Artifact, Build, Stage, read_jsonl
from tsq.data.base import Problem
from tsq.models.base import ModelHandle
from tsq.refinement.base import ChosenTrace, Refiner
from tsq.selection import Selection, Selector, positives_with_negatives
from tsq.stages.context import RunContext
from tsq.stages.samples import GradedSamples

REFINED = Stage("refined", 3)  # 3: lengths count the EOS
REFINED_FILE = "refined.jsonl"


def refined_key_parts(selector: Selector, refiner: Refiner, samples_key: str) -> tuple[dict, dict]:
    return {"selector": selector.key_material(), "refiner": refiner.key_material()}, {"samples": samples_key}


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

    def build(job: Build) -> None:
        chosen = [(pid, selected[pid][0].loc[row]) for pid, row in todo]
        traces = [
            ChosenTrace(
                prompt=problems[pid].prompt,
                text=sample["text"],
                n_tokens=int(sample["n_tokens"]),
                ended_with_eos=sample["finish_reason"] == "eos",
                n_steps=int(sample["n_steps"]),
                step_tokens=int(sample["step_tokens"]),
            )
            for pid, sample in chosen
        ]
        policy = ctx.sampler(model) if refiner.needs_policy else None
        results = refiner.refine_chosen(policy, traces, ctx.world.step_delimiter)
        with open(job.dir / REFINED_FILE, "w", encoding="utf-8") as fh:
            for (pid, sample), trace, res in zip(chosen, traces, results, strict=True):
                record = {"problem_id": pid, "sample": int(sample["sample"]), "original": trace.text}
                record.update({k: v for k, v in asdict(res).items() if k != "token_ids"})
                fh.write(json.dumps(record) + "\n")

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
