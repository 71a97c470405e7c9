"""How often each interval procedure covers the true difference between two rows, by simulation.

    python benchmarks/interval_coverage.py                  # 2,000 reruns per seed SD (about 3 min on 2 cores)
    python benchmarks/interval_coverage.py --trials 200     # quick

A simulated rerun draws a fresh test set of problems (pass rates uniform in [0.2, 0.9]; the compared row's lower by
2 points on average, by 2 +- 5 points per problem), and for each of the seeds of each row a seed effect N(0, SD)
that shifts all its pass rates, then the samples. Compared: tsq's seed-aware interval (what the tables use), the
bootstrap over problems alone (the tables before it) and a t interval over the per-seed differences alone.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tsq.evaluation.intervals import paired_bootstrap_ratio, seed_aware_interval  # noqa: E402

INTERVALS = ("seed-aware (tsq)", "problems only", "t over seeds only")


def simulate(
    sd: float,
    trials: int,
    rng: np.random.Generator,
    seeds: int = 5,
    problems: int = 250,
    samples: int = 16,
    n_boot: int = 500,
    delta: float = 0.02,
) -> dict[str, tuple[float, float]]:
    """Per interval procedure: the share of `trials` simulated reruns whose interval covers the true difference
    `delta`, and the mean half-width in points, with every seed of each row shifting its pass rates by N(0, sd)."""
    hits = dict.fromkeys(INTERVALS, 0)
    width: dict[str, list[float]] = {k: [] for k in INTERVALS}
    for trial in range(trials):
        p_row = rng.uniform(0.2, 0.9, problems)  # a fresh test set of problems every rerun
        p_versus = p_row - rng.uniform(delta - 0.05, delta + 0.05, problems)  # the mean effect is delta exactly
        sums = []
        for p in (p_row, p_versus):
            effect = rng.normal(0, sd, (seeds, 1))  # each seed's training shifts every problem
            correct = rng.binomial(samples, np.clip(p + effect, 0, 1)).astype(float)
            sums.append((correct, np.full((seeds, problems), float(samples))))
        ours = seed_aware_interval(sums[0], sums[1], n_boot=n_boot, seed=trial)
        pooled = [pd.DataFrame({"num": c.sum(0), "den": d.sum(0)}) for c, d in sums]
        alone = paired_bootstrap_ratio(pooled[1], pooled[0], n_boot=n_boot, seed=trial)
        d = np.array(ours.per_seed)
        half = stats.t.ppf(0.975, seeds - 1) * d.std(ddof=1) / math.sqrt(seeds)
        bounds = ((ours.low, ours.high), (alone.low, alone.high), (d.mean() - half, d.mean() + half))
        for key, (low, high) in zip(INTERVALS, bounds, strict=True):
            hits[key] += low <= delta <= high
            width[key].append(100 * (high - low) / 2)
    return {k: (hits[k] / trials, float(np.mean(width[k]))) for k in INTERVALS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--problems", type=int, default=250)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--n-boot", type=int, default=500)
    args = parser.parse_args()
    rng, rows = np.random.default_rng(11), []  # one generator across the SDs, as the numbers in docs/ were drawn
    for sd in (0.0, 0.005, 0.01):
        measured = simulate(sd, args.trials, rng, args.seeds, args.problems, args.samples, args.n_boot)
        for key, (coverage, half_width) in measured.items():
            rows.append({"seed SD (pt)": 100 * sd, "interval": key, "coverage (%)": 100 * coverage,
                         "half-width (pt)": half_width})  # fmt: skip
    print(pd.DataFrame(rows).round(2).to_string(index=False))


if __name__ == "__main__":
    main()
