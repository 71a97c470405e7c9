"""`eval=default`: how a model is evaluated (n responses per problem of a split), and the reduction of its graded
responses to the papers' metrics.

The sampled and graded responses are the `eval` stage's artifact (`tsq.stages.eval`), keyed on the model,
the world, the split and these settings, so re-evaluating an unchanged model only re-reads them.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from tsq.data.base import SUBSET_RULE, ProblemSource, evenly_spaced
from tsq.evaluation import metrics as M
from tsq.evaluation.intervals import metric_intervals
from tsq.sampling.base import Sampler, SamplingParams
from tsq.text import THINK_CLOSE, THINK_OPEN

log = logging.getLogger(__name__)

ALL_LEVELS = "all"
READ_OUTS = ("budgets", "curve_points", "b_max", "forced_budgets", "forced_samples", "forced_answer_tokens")
METRIC_COLUMNS = ["acc", "len_t", "len_a", "auc", "steps", "step_len", "n_problems", "n_samples"]


@dataclass
class Evaluator:
    """How a model is evaluated. `b_max` defaults to `max_new_tokens` (the paper: 32K and 32K)."""

    split: str = "test"
    # evaluating on the training split is refused unless this is true (its scores measure memorisation)
    allow_train_split: bool = False
    n_samples: int = 16
    temperature: float = 0.6
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 1234
    b_max: int | None = None
    budgets: list[int] | None = None
    curve_points: int = 32
    shortcut_probe: bool = True
    max_problems: int | None = None
    # forced-budget evaluation (tsq/evaluation/forced.py), its own cached stage over these samples: budgets B,
    # responses per problem it uses (the first ones), and the tokens the model may answer in after the cut
    forced_budgets: list[int] | None = None
    forced_samples: int = 4
    forced_answer_tokens: int = 16

    def __post_init__(self) -> None:
        self.params = SamplingParams.configured(
            "eval",
            {"n": "n_samples"},
            n=self.n_samples,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
        )
        if self.split == "train" and not self.allow_train_split:
            raise ValueError(
                "eval.split=train: the model would be scored on the problems it was trained on; set "
                "eval.allow_train_split=true if that is what you want"
            )
        self.b_max = int(self.b_max or self.max_new_tokens)
        if self.b_max <= 0:
            raise ValueError(f"eval.b_max must be > 0, got {self.b_max}")
        if self.budgets is not None:
            self.budgets = [int(b) for b in self.budgets]
            if not self.budgets or min(self.budgets) <= 0:
                raise ValueError(f"eval.budgets must be a non-empty list of positive token counts, got {self.budgets}")
        if self.curve_points < 2:
            raise ValueError(f"eval.curve_points must be >= 2, got {self.curve_points}")
        if self.max_problems is not None and self.max_problems <= 0:
            raise ValueError(f"eval.max_problems must be > 0, got {self.max_problems}")
        if self.forced_budgets is not None:
            self.forced_budgets = sorted({int(b) for b in self.forced_budgets})
            if not self.forced_budgets or self.forced_budgets[0] <= 0:
                raise ValueError(f"eval.forced_budgets must be null or token counts > 0, got {self.forced_budgets}")
        for key in ("forced_samples", "forced_answer_tokens"):
            if getattr(self, key) <= 0:
                raise ValueError(f"eval.{key} must be > 0, got {getattr(self, key)}")

    def curve_grid(self) -> list[int]:
        if self.budgets is not None:
            return sorted(set(self.budgets))
        return sorted({max(1, round(x)) for x in np.linspace(0, self.b_max, self.curve_points + 1)[1:]})

    def problems(self, world: ProblemSource) -> list:
        problems = world.split(self.split)
        if not problems:
            raise ValueError(f"eval.split={self.split!r} of data={world.name} is empty")
        return evenly_spaced(problems, self.max_problems)

    def key_material(self) -> dict:
        """Everything that changes the sampled responses (budgets and curve points are read-outs; forced budgets
        are their own stage)."""
        material = {k: v for k, v in asdict(self).items() if k not in READ_OUTS}
        if self.max_problems is not None:  # unset keeps the keys of runs on whole splits
            material["subset"] = SUBSET_RULE
        return material

    def probe_shortcut(self, world: ProblemSource, sampler: Sampler) -> dict[str, float]:
        """Accuracy per level when the model must answer right after an empty ``<think> </think>``."""
        problems = self.problems(world)
        prefix = f" {THINK_OPEN} {THINK_CLOSE}"
        params = SamplingParams(n=self.n_samples, max_new_tokens=2, temperature=self.temperature, seed=self.seed)
        groups = sampler.generate([p.prompt + prefix for p in problems], params)
        hits: dict[int, list[bool]] = {}
        for problem, group in zip(problems, groups, strict=True):
            hits.setdefault(problem.level, []).extend(world.grade(problem, f"{THINK_CLOSE} {c.text}") for c in group)
        return {str(level): float(np.mean(v)) for level, v in sorted(hits.items())}

    # ------------------------------------------------------------------ metrics
    def summarize(self, frame: pd.DataFrame, role: str, model: str) -> tuple[list[dict], list[dict]]:
        """Metric rows per (benchmark, level) plus an `all` row per benchmark, and budget curves; `role` says which
        model of the run they are of (`base` or `trained`)."""
        rows, curves = [], []
        grid = self.curve_grid()
        for benchmark, bench in frame.groupby("benchmark", sort=True):
            groups = [(level, g) for level, g in bench.groupby("level", sort=True)] + [(ALL_LEVELS, bench)]
            for level, g in groups:
                lens, ok = g["n_tokens"].to_numpy(), g["correct"].to_numpy(dtype=bool)
                steps, step_len = M.step_stats(g["n_steps"], g["step_tokens"], ok)
                row = {
                    "role": role,
                    "model": model,
                    "benchmark": benchmark,
                    "level": str(level),
                    "acc": M.accuracy(ok),
                    "len_t": M.mean_length_correct(lens, ok),
                    "len_a": M.mean_length_all(lens),
                    "auc": M.auc(lens, ok, self.b_max, self.budgets),
                    "steps": steps,
                    "step_len": step_len,
                    "n_problems": int(g["problem_id"].nunique()),
                    "n_samples": len(g),
                    "truncated": float((g["finish_reason"] == "length").mean()),
                }
                row.update(metric_intervals(g))  # 95% bootstrap over problems, all their samples
                if "redundant_tokens" in g:
                    row["compressible"] = float((g["redundant_tokens"] + g["filler_tokens"]).sum() / max(1, lens.sum()))
                rows.append(row)
                curve = M.budget_curve(lens, ok, grid)
                curves += [
                    {"role": role, "benchmark": benchmark, "level": str(level), "budget": b, "acc": float(a)}
                    for b, a in zip(grid, curve, strict=True)
                ]
        return rows, curves


def length_histogram(frame: pd.DataFrame, role: str, b_max: int, bins: int = 32) -> dict:
    """Counts of response lengths (all samples) on `bins` equal bins over [0, b_max]."""
    counts, edges = np.histogram(frame["n_tokens"].clip(upper=b_max), bins=bins, range=(0, b_max))
    return {"role": role, "edges": edges.tolist(), "counts": counts.tolist()}


def display_rows(rows: list[dict]) -> pd.DataFrame:
    """The metric rows as shown to a reader (console and HTML report): Acc and AUC in %, and Acc, Len-T and Len-A
    with their 95% bootstrap intervals over problems where the rows have them (`<metric>_low`, `<metric>_high`)."""
    df = pd.DataFrame(rows)
    df = df.assign(auc=100 * df["auc"])
    for col, factor in (("acc", 100.0), ("len_t", 1.0), ("len_a", 1.0)):
        if col in df and f"{col}_low" in df:
            bounds = zip(df[col], df[f"{col}_low"], df[f"{col}_high"], strict=True)
            df[col] = [_with_interval(v, lo, hi, factor) for v, lo, hi in bounds]
        elif col in df:
            df[col] = factor * df[col]
    cols = [
        "role",
        "benchmark",
        "level",
        *[c for c in METRIC_COLUMNS if c in df],
        *(["compressible"] if "compressible" in df else []),
    ]
    return df[cols]


def format_table(rows: list[dict]) -> str:
    """`display_rows` as an aligned text table."""
    return display_rows(rows).to_string(index=False, float_format=lambda v: f"{v:.2f}")


def _with_interval(value, low, high, factor: float) -> str:
    """`95.40 [94.51, 96.12]`; a value that is undefined (no correct response: no Len-T) shows as `-`."""
    if value is None or pd.isna(value):
        return "-"
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return f"{factor * value:.2f}"
    return f"{factor * value:.2f} [{factor * low:.2f}, {factor * high:.2f}]"
