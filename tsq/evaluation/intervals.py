"""Bootstrap intervals over problems for the papers' ratio metrics (groundwork for issue 14's protocol).

Acc, Len-A and Len-T are each a ratio of sums over problems: Acc = (correct samples) / (samples), Len-A =
(tokens) / (samples), Len-T = (tokens of correct samples) / (correct samples). Samples of one problem are
not independent (same prompt; and across training seeds, the same problem again), so the unit that is
resampled is the problem, carrying all its samples of every seed: draw problems with replacement, recompute
the ratio, take the percentile interval. A comparison of two rows evaluated on the same problems resamples
the same problems for both (paired), which is what makes a small difference resolvable.

Pure functions of per-problem sums; vectorised through multinomial draw counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

# metric -> (numerator, denominator), as columns of a samples frame ("one" counts samples)
RATIO_METRICS = {
    "acc": ("correct", "one"),
    "len_a": ("n_tokens", "one"),
    "len_t": ("correct_tokens", "correct"),
    # StepLen: tokens per reasoning step, pooled over correct responses (as `metrics.step_stats`)
    "step_len": ("correct_step_tokens", "correct_steps"),
}


@dataclass(frozen=True)
class Interval:
    """A point estimate and its (1 - alpha) percentile interval."""

    estimate: float
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        return value < self.low or value > self.high


def per_problem_sums(samples: pd.DataFrame, metric: str, by: str = "problem_id") -> pd.DataFrame:
    """Numerator and denominator of `metric` summed per problem (all samples, all seeds of each problem)."""
    if metric not in RATIO_METRICS:
        raise ValueError(f"metric must be one of {sorted(RATIO_METRICS)}, got {metric!r}")
    correct = samples["correct"].astype(float)
    frame = samples.assign(one=1.0, correct=correct, correct_tokens=samples["n_tokens"] * correct)
    if metric == "step_len":
        step_tokens, steps = samples["step_tokens"] * correct, samples["n_steps"] * correct
        frame = frame.assign(correct_step_tokens=step_tokens, correct_steps=steps)
    num, den = RATIO_METRICS[metric]
    sums = frame.groupby(by, sort=True)[[num, den]].sum()
    return sums.set_axis(["num", "den"], axis=1)


def _draw_counts(n_problems: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each problem is drawn in each of `n_boot` resamples of `n_problems` problems."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_problems, np.full(n_problems, 1.0 / n_problems), size=n_boot).astype(float)


def _ratio(counts: np.ndarray, sums: pd.DataFrame) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ sums["num"].to_numpy()) / (counts @ sums["den"].to_numpy())


def _interval(estimate: float, draws: np.ndarray, level: float) -> Interval:
    draws = draws[np.isfinite(draws)]  # (a resample with no correct sample has no Len-T)
    if not len(draws):
        raise ValueError("no resample gave a finite value")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high))


def bootstrap_ratio(sums: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> Interval:
    """The pooled ratio sum(num) / sum(den) over problems and its bootstrap interval over problems."""
    return _bootstrap(sums, _draw_counts(len(sums), n_boot, seed), level)


def _bootstrap(sums: pd.DataFrame, counts: np.ndarray, level: float) -> Interval:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return _interval(sums["num"].sum() / sums["den"].sum(), _ratio(counts, sums), level)


def paired_bootstrap_ratio(
    a: pd.DataFrame, b: pd.DataFrame, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> Interval:
    """The difference ratio(b) - ratio(a) and its interval, resampling the same problems for both rows."""
    if set(a.index) != set(b.index):
        missing = sorted(set(a.index) ^ set(b.index))
        raise ValueError(f"paired rows must cover the same problems; not in both: {missing[:5]} ({len(missing)})")
    b = b.loc[a.index]
    counts = _draw_counts(len(a), n_boot, seed)
    estimate = b["num"].sum() / b["den"].sum() - a["num"].sum() / a["den"].sum()
    return _interval(estimate, _ratio(counts, b) - _ratio(counts, a), level)


def metric_intervals(
    samples: pd.DataFrame, metrics: tuple[str, ...] = ("acc", "len_a", "len_t"), n_boot: int = 2000, seed: int = 0
) -> dict[str, float]:
    """`<metric>_low` / `<metric>_high`: the 95% bootstrap interval over problems of each metric of a group of
    samples (NaN where the metric is undefined, e.g. Len-T without a correct sample)."""
    out, counts = {}, None
    for metric in metrics:
        sums = per_problem_sums(samples, metric)
        if sums["den"].sum() == 0:
            out[f"{metric}_low"] = out[f"{metric}_high"] = float("nan")
            continue
        if counts is None:  # the same problem draws for every metric (as bootstrap_ratio with this seed draws)
            counts = _draw_counts(len(sums), n_boot, seed)
        interval = _bootstrap(sums, counts, 0.95)
        out[f"{metric}_low"], out[f"{metric}_high"] = interval.low, interval.high
    return out


# ---------------------------------------------------------------------------------------------- across seeds
@dataclass(frozen=True)
class SeedInterval(Interval):
    """An interval that covers training-seed variance as well as problem sampling (`seed_aware_interval`): the
    per-seed values, the two standard errors it adds and the t quantile's degrees of freedom."""

    per_seed: tuple[float, ...] = ()
    se_seeds: float = math.nan
    se_problems: float = math.nan
    df: float = math.inf


def seed_sums(frames: Sequence[pd.DataFrame], metric: str) -> tuple[np.ndarray, np.ndarray, list]:
    """Numerator and denominator of `metric` per seed and problem, arrays of shape (seeds, problems), for the
    graded samples of one row at each seed (every seed evaluated on the same problems), and the problems."""
    sums = [per_problem_sums(frame, metric) for frame in frames]
    problems = list(sums[0].index)
    for n, other in enumerate(sums[1:], start=1):
        if set(other.index) != set(problems):
            raise ValueError(f"seed {n} was evaluated on other problems than seed 0 ({len(other)} vs {len(problems)})")
    num = np.stack([x.loc[problems, "num"].to_numpy(float) for x in sums])
    den = np.stack([x.loc[problems, "den"].to_numpy(float) for x in sums])
    return num, den, problems


def _pooled(num: np.ndarray, den: np.ndarray) -> float:
    total = den.sum()
    return float(num.sum() / total) if total else math.nan


def seed_values(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Each seed's value of a ratio metric from (seeds, problems) sums; NaN where a seed's denominator is 0 (a
    seed with no correct response has no Len-T)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return num.sum(1) / den.sum(1)


def seed_aware_interval(
    row: tuple[np.ndarray, np.ndarray],
    versus: tuple[np.ndarray, np.ndarray] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> SeedInterval:
    """A row's pooled ratio metric, or with `versus` the difference row - versus (each seed's row against the same
    seed's `versus`: paired), with an interval that covers what a rerun with other seeds on other problems would
    give. `row` and `versus` are (numerator, denominator) arrays of shape (seeds, problems) (`seed_sums`).

    A per-seed value d_s varies with the seed's training and evaluation draws; the pooled value also with which
    problems make the test set. The variance of the pooled value is estimated as s^2 / S (the spread of the S
    per-seed values) plus the problems' part: a bootstrap over problems of the pooled value measures the problems'
    part plus the evaluation draws' part / S, which s^2 already holds, so that draws' part is taken out, estimated
    from how much larger the bootstrap variance of one seed's value is than the pooled value's
    ((mean per-seed variance - pooled variance) / (S - 1)). The interval is estimate +- t * SE with
    Welch-Satterthwaite degrees of freedom (the problems' part counted as known). With one seed it is the problem
    bootstrap's normal interval. A seed whose value does not exist (a Len-T with no correct response) is left out of
    the spread; with fewer than two seeds left of several the interval is NaN (undefined), not the one-seed interval.
    Measured coverage: tests/test_intervals.py simulates it. The interval is clipped to `bounds`, the values the
    metric can take (an accuracy's [0, 1]): a t interval over few spread seeds can reach past them, and clipping never
    drops a possible true value.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    num, den = row
    if num.shape != den.shape or num.ndim != 2:
        raise ValueError(f"row sums must be (seeds, problems) arrays of one shape, got {num.shape} and {den.shape}")
    if versus is not None and versus[0].shape != num.shape:
        raise ValueError(f"paired rows must have the same seeds and problems: {num.shape} vs {versus[0].shape}")
    counts = _draw_counts(num.shape[1], n_boot, seed)

    def boot_variance(select: slice | int) -> float:
        with np.errstate(invalid="ignore", divide="ignore"):
            n, d = np.atleast_2d(num[select]).sum(0), np.atleast_2d(den[select]).sum(0)
            draws = (counts @ n) / (counts @ d)
            if versus is not None:
                nb, db = np.atleast_2d(versus[0][select]).sum(0), np.atleast_2d(versus[1][select]).sum(0)
                draws = draws - (counts @ nb) / (counts @ db)
        draws = draws[np.isfinite(draws)]
        return float(draws.var(ddof=1)) if len(draws) > 1 else math.nan

    estimate = _pooled(num, den) - (_pooled(*versus) if versus is not None else 0.0)
    per_seed = seed_values(num, den) - (seed_values(*versus) if versus is not None else 0.0)
    finite = np.isfinite(per_seed)
    seeds = int(finite.sum())
    pooled_variance = boot_variance(slice(None))
    # runs at several seeds of which fewer than two have a value: their spread cannot be estimated, and taking it as
    # none would give an interval too narrow
    spread_unknown = num.shape[0] > 1 and seeds < 2
    if not math.isfinite(estimate) or not math.isfinite(pooled_variance) or spread_unknown:
        return SeedInterval(estimate, math.nan, math.nan, tuple(per_seed.tolist()), math.nan, math.nan, math.nan)
    if seeds > 1:
        seed_variance = float(per_seed[finite].var(ddof=1)) / seeds
        one_seed = np.nanmean([boot_variance(s) for s in np.flatnonzero(finite)])
        draws_part = max(one_seed - pooled_variance, 0.0) / (seeds - 1)  # the evaluation draws' variance / S
        problem_variance = max(pooled_variance - draws_part, 0.0)
    else:
        seed_variance, problem_variance = 0.0, pooled_variance
    variance = seed_variance + problem_variance
    df = variance**2 / (seed_variance**2 / (seeds - 1)) if seed_variance > 0 else math.inf
    half = float(stats.t.ppf((1 + level) / 2, df)) * math.sqrt(variance)
    return SeedInterval(
        estimate,
        max(estimate - half, bounds[0]),
        min(estimate + half, bounds[1]),
        tuple(per_seed.tolist()),
        math.sqrt(seed_variance),
        math.sqrt(problem_variance),
        df,
    )
