"""Forced-budget evaluation: cut the response at B tokens, close the thinking block, let the model answer.

The post-hoc AUC (metrics.auc) counts a response as correct within budget B when it was correct and at most B
tokens long; when B_max is the generation cap it is Acc x (1 - Len-T / B_max) and adds nothing to Acc and
Len-T. Forcing asks what a deployment with a hard budget gets: each evaluated response longer than B is cut
after its first B tokens; if the cut text has not closed the thinking block, `close` (``</think>``) is
appended; the model then writes at most `answer_tokens` more tokens, and that text is graded. A response
of at most B tokens is kept as it was (it ended within the budget). Budget forcing as in s1 (arXiv
2501.19393), applied to responses already sampled: the first B tokens of a response are what sampling
with a cap of B would have produced for the same draws.
"""

from __future__ import annotations

import pandas as pd

from tsq.sampling.base import Sampler, SamplingParams
from tsq.text import THINK_CLOSE


def forced_budget_samples(
    world,
    sampler: Sampler,
    tokenizer,
    problems: dict[str, object],
    frame: pd.DataFrame,
    budgets: list[int],
    params: SamplingParams,
    close: str = THINK_CLOSE,
) -> pd.DataFrame:
    """One row per (response of `frame`, budget): problem_id, level, sample, budget, forced (whether it was
    cut), n_tokens (tokens charged: the kept prefix, the closing tokens and the answer) and correct.
    `params.max_new_tokens` is the answer's budget; `params.n` must be 1."""
    if params.n != 1:
        raise ValueError("forced-budget answers are one per cut response (params.n = 1)")
    close_ids = tokenizer(close, add_special_tokens=False)["input_ids"]
    records, jobs = [], []
    for row in frame.itertuples():
        base = {"problem_id": row.problem_id, "level": str(row.level), "sample": int(row.sample)}
        ids = None
        for budget in budgets:
            if row.n_tokens <= budget:
                records.append({**base, "budget": budget, "forced": False, "n_tokens": int(row.n_tokens),
                                "correct": bool(row.correct)})  # fmt: skip
                continue
            ids = ids if ids is not None else tokenizer(row.text, add_special_tokens=False)["input_ids"]
            prefix = list(ids[:budget])
            if close not in tokenizer.decode(prefix, skip_special_tokens=True):
                prefix += close_ids
            jobs.append((base, budget, prefix))
    if jobs:
        prompt_ids = {pid: tokenizer(p.prompt, add_special_tokens=False)["input_ids"] for pid, p in problems.items()}
        answers = sampler.generate_ids([prompt_ids[b["problem_id"]] + prefix for b, _, prefix in jobs], params)
        texts = [
            tokenizer.decode(prefix + list(group[0].token_ids), skip_special_tokens=True)
            for (_, _, prefix), group in zip(jobs, answers, strict=True)
        ]
        grades = world.grade_many([problems[b["problem_id"]] for b, _, _ in jobs], texts)
        for (base, budget, prefix), group, correct in zip(jobs, answers, grades, strict=True):
            records.append({**base, "budget": budget, "forced": True, "n_tokens": len(prefix) + group[0].n_tokens,
                            "correct": bool(correct)})  # fmt: skip
    return pd.DataFrame(records).sort_values(["budget", "problem_id", "sample"], ignore_index=True)


def forced_curve(forced: pd.DataFrame) -> list[dict]:
    """Accuracy and mean charged tokens per budget, overall and per level."""
    out = []
    for budget, group in forced.groupby("budget", sort=True):
        parts = [("all", group), *((str(level), g) for level, g in group.groupby("level", sort=True))]
        for level, g in parts:
            out.append({"budget": int(budget), "level": level, "acc": float(g["correct"].mean()),
                        "tokens": float(g["n_tokens"].mean()), "forced_share": float(g["forced"].mean())})  # fmt: skip
    return out
