"""The papers' metrics as pure functions of per-sample correctness and token counts.

Definitions (TokenSqueeze, arXiv 2511.13223, Sec. 4.1.2 and App. A.3; TL;DR, arXiv 2506.02678):
* Acc: mean correctness over all samples (pass@1 averaged over the n samples per problem);
* Len-T: mean tokens of correct responses; Len-A: mean tokens of all responses;
* acc(B): share of samples that are correct *and* at most B tokens long;
* AUC = (1/B_max) * integral_0^B_max acc(B) dB. The continuous integral equals
  mean(correct * max(0, 1 - len/B_max)), i.e. Acc * (1 - Len-T/B_max) when no correct response is
  longer than B_max. On a budget grid, the integral is the trapezoid rule over (0, grid...);
* Steps / StepLen: mean steps per correct response and pooled tokens per step over them (so that
  Steps * StepLen is the mean reasoning length, as in TokenSqueeze's Table 3).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _arrays(lengths: Sequence[float], correct: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.asarray(lengths, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    if lens.shape != ok.shape:
        raise ValueError(f"{lens.size} lengths but {ok.size} correctness flags")
    return lens, ok


def accuracy(correct: Sequence[bool]) -> float:
    ok = np.asarray(correct, dtype=bool)
    return float(ok.mean()) if ok.size else float("nan")


def mean_length_correct(lengths: Sequence[float], correct: Sequence[bool]) -> float:
    """Len-T; NaN when no sample is correct."""
    lens, ok = _arrays(lengths, correct)
    return float(lens[ok].mean()) if ok.any() else float("nan")


def mean_length_all(lengths: Sequence[float]) -> float:
    """Len-A."""
    lens = np.asarray(lengths, dtype=float)
    return float(lens.mean()) if lens.size else float("nan")


def budget_curve(lengths: Sequence[float], correct: Sequence[bool], budgets: Sequence[float]) -> np.ndarray:
    """acc(B) for each budget B: correct and at most B tokens long."""
    lens, ok = _arrays(lengths, correct)
    if lens.size == 0:
        return np.full(len(budgets), np.nan)
    b = np.asarray(budgets, dtype=float)
    return ((lens[None, :] <= b[:, None]) & ok[None, :]).mean(axis=1)


def auc(
    lengths: Sequence[float], correct: Sequence[bool], b_max: float, budgets: Sequence[float] | None = None
) -> float:
    """Normalised area under the accuracy-vs-budget curve on [0, b_max].

    With `budgets=None` the exact integral; otherwise the trapezoid rule on the grid 0, budgets...
    (points above b_max are ignored and b_max is added as the last point).
    """
    if b_max <= 0:
        raise ValueError(f"b_max must be > 0, got {b_max}")
    lens, ok = _arrays(lengths, correct)
    if lens.size == 0:
        return float("nan")
    if budgets is None:
        return float((ok * np.clip(1.0 - lens / b_max, 0.0, 1.0)).mean())
    grid = np.unique(np.concatenate([[0.0], np.asarray(budgets, dtype=float), [b_max]]))
    grid = grid[(grid >= 0) & (grid <= b_max)]
    curve = budget_curve(lens, ok, grid)
    return float(np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(grid)) / b_max)


def step_stats(n_steps: Sequence[int], step_tokens: Sequence[int], correct: Sequence[bool]) -> tuple[float, float]:
    """(Steps, StepLen) over correct responses: mean steps, and total step tokens / total steps."""
    steps = np.asarray(n_steps, dtype=float)
    toks = np.asarray(step_tokens, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    if not ok.any():
        return float("nan"), float("nan")
    total_steps = steps[ok].sum()
    return float(steps[ok].mean()), float(toks[ok].sum() / total_steps) if total_steps else float("nan")


def stepless(n_steps: Sequence[int], correct: Sequence[bool]) -> tuple[float, float]:
    """(share, accuracy) of the responses whose reasoning has no step (an answer with no working, `<think> </think>
    7`): a model that learned to skip its reasoning shows here, and their accuracy says how often its guesses land."""
    steps, ok = np.asarray(n_steps, dtype=int), np.asarray(correct, dtype=bool)
    if steps.shape != ok.shape or not len(steps):
        raise ValueError(f"{steps.size} step counts and {ok.size} correctness flags: need as many, at least one")
    none = steps == 0
    return float(none.mean()), float(ok[none].mean()) if none.any() else float("nan")


def relative_change(new: float, base: float) -> float:
    """(new - base) / base, as the papers print it in parentheses."""
    return float("nan") if not base else (new - base) / base


def average_compression_ratio(lengths: Sequence[float], original: Sequence[float]) -> float:
    """TL;DR's A.C.R.: mean over datasets of max(0, 1 - Len(method) / Len(original)) (TL;DR, arXiv 2506.02678)."""
    if len(lengths) != len(original) or not lengths:
        raise ValueError(f"need equal, non-empty length lists, got {len(lengths)} and {len(original)}")
    return float(np.mean([max(0.0, 1 - m / o) for m, o in zip(lengths, original, strict=True)]))
