"""Reading finished runs: one run's record (`tsq.stages.run_metrics.RunMetrics`) with its graded samples, the runs of
a protocol phase by row and setting, and every run below a folder as one DataFrame.

    python -m analysis.runs logs/        # prints the overall rows of every run below logs/
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.layouts import LAYOUTS, Layout
from analysis.protocol import Protocol, pooled, select_setting
from tsq.evaluation.intervals import seed_sums
from tsq.sampling.graded import read_samples
from tsq.stages.forced_budget import read_forced
from tsq.stages.run_metrics import METRICS_FILE, RunMetrics
from tsq.stages.samples import SAMPLES_FILE


def run_choice(record: RunMetrics, layout: Layout) -> str | None:
    """A run's value of the layout's swept column (a config choice or a command-line override)."""
    where, _, key = layout.group.partition(".")
    if where == "choice":
        return record.run.get("choices", {}).get(key)
    return next((o.split("=", 1)[1] for o in record.run.get("overrides", []) if o.split("=", 1)[0] == key), None)


@dataclass
class Run:
    """One finished job: its record, its overrides and the row of its experiment's table it belongs to."""

    record: RunMetrics
    overrides: dict[str, str]
    row: str
    _frames: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def frame(self, role: str) -> pd.DataFrame:
        """The graded samples of the evaluation of `role` (base or trained), read once: the tables, the claims and
        the comparisons at equal settings all read the same runs."""
        if role not in self._frames:
            self._frames[role] = read_samples(Path(self.record.evaluations[role]["path"]) / SAMPLES_FILE)
        return self._frames[role]

    def overall(self, role: str) -> dict:
        rows = self.record.role_rows(role, level="all")
        if len(rows) != 1:
            raise ValueError(f"expected one overall {role} row, found {len(rows)}")
        return rows[0]


def same_value(a: object, b: object) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(a) == str(b)


def read_runs(folder: Path, layout: Layout) -> list[Run]:
    """Every finished job below `folder` (a job without metrics.json did not finish), oldest first."""
    runs = []
    for path in sorted(folder.rglob(METRICS_FILE), key=lambda p: p.stat().st_mtime):
        record = RunMetrics.read(path)
        overrides = dict(o.split("=", 1) for o in record.run.get("overrides", []))
        runs.append(Run(record, overrides, str(run_choice(record, layout))))
    return runs


def matches(run: Run, setting: dict) -> bool:
    return all(key in run.overrides and same_value(run.overrides[key], value) for key, value in setting.items())


def dev_search(experiment: str, protocol: Protocol, root: Path) -> tuple[dict[str, list[dict]], float | None]:
    """Per row: each searched setting that has a finished dev run, in grid order, with its dev Acc and Len-T (and
    its run, for comparisons at equal settings); and the base model's dev Acc (None before any run)."""
    layout = LAYOUTS[experiment]
    runs = [r for r in read_runs(root / experiment / "search", layout) if matches(r, _seed(protocol))]
    base_acc = runs[-1].overall("base")["acc"] if runs else None
    out = {}
    for row in layout.labels:
        found = []
        for setting in protocol.grid(layout.kind_of(row)):
            mine = [r for r in runs if r.row == row and matches(r, setting)]
            if mine:
                trained = mine[-1].overall("trained")
                found.append({"setting": setting, "acc": trained["acc"], "len_t": trained["len_t"], "run": mine[-1]})
        out[row] = found
    return out, base_acc


def selected_settings(
    experiment: str, protocol: Protocol, searched: dict[str, list[dict]], base_acc: float | None
) -> dict[str, dict]:
    """Per row whose whole grid has run (`dev_search`): the selected setting and every setting's dev values."""
    layout = LAYOUTS[experiment]
    out = {}
    for row, found in searched.items():
        if len(found) < len(protocol.grid(layout.kind_of(row))):  # (a grid is never empty: Protocol)
            continue  # the search of this row is not complete
        chosen = select_setting(pd.DataFrame(found)[["acc", "len_t"]], base_acc, protocol.acc_margin)
        out[row] = {"setting": found[chosen]["setting"], "dev": found}
    return out


def selection(experiment: str, protocol: Protocol, root: Path) -> tuple[dict[str, dict], float | None]:
    """Per row whose search is complete: every searched setting's dev Acc and Len-T (and its run) and the selected
    one; and the base model's dev Acc."""
    searched, base_acc = dev_search(experiment, protocol, root)
    return selected_settings(experiment, protocol, searched, base_acc), base_acc


def _seed(protocol: Protocol, seed: int | None = None) -> dict:
    return {protocol.seed_key: protocol.search_seed if seed is None else seed}


@dataclass
class RowResult:
    """A row's test runs of its selected setting, one per seed in the protocol's order (the base model's row: one
    run per seed, whose base evaluation it reads)."""

    label: str
    runs: list[Run] = field(default_factory=list)
    seeds: tuple[int, ...] = ()  # the seed of each run
    _pooled: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def frames(self, role: str = "trained") -> list[pd.DataFrame]:
        """Each seed's graded test samples."""
        return [r.frame(role) for r in self.runs]

    def samples(self, role: str = "trained") -> pd.DataFrame:
        """Every seed's graded test samples, pooled."""
        if role not in self._pooled:
            self._pooled[role] = pooled(self.frames(role))
        return self._pooled[role]

    def sums(self, metric: str, role: str = "trained") -> tuple[np.ndarray, np.ndarray]:
        """`metric`'s numerator and denominator per seed and problem (`tsq.evaluation.intervals.seed_sums`)."""
        num, den, _ = seed_sums(self.frames(role), metric)
        return num, den

    def forced(self, role: str = "trained") -> pd.DataFrame | None:
        """The forced-budget rows of every seed (None where the runs have none)."""
        paths = [r.record.evaluations[role].get("forced_path") for r in self.runs]
        return None if None in paths else pooled([read_forced(Path(p)) for p in paths])


def test_results(
    experiment: str, selected: dict[str, dict], protocol: Protocol, root: Path
) -> tuple[dict[str, RowResult], RowResult | None, dict[str, tuple[RowResult, RowResult]]]:
    """The rows whose every seed has a finished test run of the selected setting; the base model's row (its
    evaluation at every seed, from any run of that seed); and the rows whose test has finished some seeds but not
    all: each row's runs of those seeds and the base model's row at the same seeds."""
    layout = LAYOUTS[experiment]
    runs = read_runs(root / experiment / "test", layout)

    def last_per_seed(setting: dict, row: str | None = None) -> dict[int, Run]:
        found = {}
        for seed in protocol.seeds:
            wanted = {**setting, **_seed(protocol, seed)}
            mine = [r for r in runs if (row is None or r.row == row) and matches(r, wanted)]
            if mine:
                found[seed] = mine[-1]
        return found

    base_runs = last_per_seed({})
    rows, testing = {}, {}
    for row, choice in selected.items():
        per_seed = last_per_seed(choice["setting"], row)
        if len(per_seed) == len(protocol.seeds):
            rows[row] = RowResult(layout.labels[row], list(per_seed.values()), tuple(per_seed))
        elif per_seed:
            seeds = tuple(per_seed)
            base_at_seeds = RowResult("Baseline", [base_runs[s] for s in seeds], seeds)
            testing[row] = (RowResult(layout.labels[row], list(per_seed.values()), seeds), base_at_seeds)
    complete = len(base_runs) == len(protocol.seeds)
    base = RowResult("Baseline", list(base_runs.values()), tuple(base_runs)) if complete else None
    return rows, base, testing


def collect_metrics(root: str | Path) -> pd.DataFrame:
    """One row per metric row of every `metrics.json` below `root`, with the run folder in `run`, the
    run's config-group choices in `choice.<group>` columns, its command-line overrides in
    `override.<key>` columns and its tags (comma-joined) in `tags`."""
    frames = []
    for path in sorted(Path(root).rglob(METRICS_FILE)):
        record = RunMetrics.read(path)
        columns = {f"choice.{k}": v for k, v in record.run.get("choices", {}).items()}
        overrides = record.run.get("overrides", [])
        columns |= {f"override.{o.split('=', 1)[0].lstrip('+~')}": o.split("=", 1)[1] for o in overrides}
        columns["tags"] = ",".join(record.run.get("tags", []))
        frames.append(pd.DataFrame(record.rows).assign(run=str(path.parent), **columns))
    if not frames:
        raise FileNotFoundError(f"no metrics.json below {root}")
    return pd.concat(frames, ignore_index=True)


if __name__ == "__main__":
    frame = collect_metrics(sys.argv[1] if len(sys.argv) > 1 else "logs")
    print(frame[frame["level"] == "all"].to_string(index=False))
