"""Sample, grade and count: the one way tsq turns problems into graded responses (one record per response).

Used by the `samples` and `eval` stages (`tsq.stages.samples`), which cache the records shard by shard.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from tsq.data.base import Problem, ProblemSource, TraceAnatomist
from tsq.sampling.base import Sampler, SamplingParams
from tsq.text import split_steps

log = logging.getLogger(__name__)

CUT_WARNING_SHARE = 0.5  # above this share of responses cut at the cap, the numbers describe the cap


def grade_completions(
    world: ProblemSource, sampler: Sampler, problems: Sequence[Problem], params: SamplingParams
) -> list[dict]:
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
    """The graded records of a samples file (JSON lines)."""
    return pd.read_json(path, lines=True, dtype={"problem_id": str, "level": str, "text": str})


def warn_if_cut(frame: pd.DataFrame, artifact: str, max_new_tokens: int) -> float:
    """The share of responses that stopped at max_new_tokens; a loud warning when it is most of them."""
    share = float((frame["finish_reason"] == "length").mean()) if len(frame) else 0.0
    if share > CUT_WARNING_SHARE:
        log.warning(
            "stage %s: %.0f%% of %d responses were cut at max_new_tokens=%d before they ended; their accuracy "
            "and lengths describe the cap, not the model (raise %s.max_new_tokens)",
            artifact,
            100 * share,
            len(frame),
            max_new_tokens,
            "eval" if artifact == "eval" else "sampling",
        )
    return share
