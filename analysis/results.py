"""Every table and figure of the papers under the tables' protocol, with intervals and computed verdicts, in
one generated file.

    python -m analysis.results                      # run what is missing, then write RESULTS.md
    python -m analysis.results --write-only         # write RESULTS.md from the runs that exist
    python -m analysis.results --experiments ts_table2,ts_table4

For each experiment (conf/experiment/<name>.yaml) it runs the protocol of conf/protocol.yaml as Hydra multiruns
of `run.py`: the search (every row x every setting of its grid, seed 0, dev split), the selection (one rule,
analysis/protocol.py), the test (the selected setting of each row x every seed, test split). Every stage is
cached, so a second call only re-reads; a phase whose command already finished is not started again
(`--rerun` starts it anyway). Runs go below `logs/protocol/<experiment>/`; the wall time of every phase is kept in
`logs/protocol/ledger.jsonl`. It then writes `RESULTS.md` (tables with 95% intervals, the dev selection, the
distribution of k per selector, budget curves, verdicts of every claim in analysis/claims.py, the commands and
wall times) and its figures in `experiments/figures/`. Parts whose runs do not exist yet are marked as such.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.claims import CLAIMS, Claim, combine, threshold_of, verdict  # noqa: E402
from analysis.protocol import (  # noqa: E402
    PROTOCOL_FILE,
    Protocol,
    cell,
    difference,
    load_protocol,
    pooled,
    row_override,
    select_setting,
)
from analysis.tables import LAYOUTS, Layout, k_figure, k_table, run_choice, save_figure  # noqa: E402
from tsq.cache import (
    atomic_write_text,  # noqa: E402
    read_jsonl,  # noqa: E402
)
from tsq.evaluation import metrics as M  # noqa: E402
from tsq.sampling.graded import read_samples  # noqa: E402
from tsq.stages.forced_budget import read_forced  # noqa: E402
from tsq.stages.samples import SAMPLES_FILE  # noqa: E402

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("ts_table2", "ts_table3", "ts_table4", "ts_fig4", "tldr_table2")
BASE = "base"
FORCED_COLUMNS = (16, 32)  # forced-budget accuracies shown in the tables (the figure has every budget)


def kind_of(layout: Layout) -> str:
    return "tldr" if layout.kind == "tldr" else "preference"


# ---------------------------------------------------------------------------------------------------- phases
@dataclass(frozen=True)
class Phase:
    """One Hydra multirun of the protocol."""

    name: str  # search or test
    experiment: str
    overrides: tuple[str, ...]
    sweep_dir: Path

    @property
    def command(self) -> list[str]:
        # run from the repository root: a folder inside it is written relative to it, so commands read anywhere
        sweep = self.sweep_dir.relative_to(ROOT) if self.sweep_dir.is_relative_to(ROOT) else self.sweep_dir
        return ["python", "run.py", "-m", *self.overrides, f"hydra.sweep.dir={sweep}"]


def listed(values: Iterable) -> str:
    return ",".join(str(v) for v in values)


def search_phase(experiment: str, protocol: Protocol, root: Path, extra: tuple[str, ...] = ()) -> Phase:
    kind = kind_of(LAYOUTS[experiment])
    grid = [f"{key}={listed(values)}" for key, values in sorted(protocol.search[kind].items())]
    seed = f"{protocol.seed_key[kind]}={protocol.seeds[0]}"
    # the selection reads dev Acc and Len-T only: no forced-budget evaluation on dev
    overrides = (f"experiment={experiment}", "eval.split=dev", "eval.forced_budgets=null", *grid, seed, *extra)
    return Phase("search", experiment, overrides, root / experiment / "search")


def test_phases(
    experiment: str, selected: dict[str, dict], protocol: Protocol, root: Path, extra: tuple[str, ...] = ()
) -> list[Phase]:
    """One multirun per distinct selected setting, over the rows that selected it and every seed."""
    layout, kind = LAYOUTS[experiment], kind_of(LAYOUTS[experiment])
    by_setting: dict[tuple, list[str]] = {}
    for row, choice in selected.items():
        by_setting.setdefault(tuple(sorted(choice["setting"].items())), []).append(row)
    phases = []
    for setting, rows in sorted(by_setting.items()):
        slug = "_".join(f"{k.split('.')[-1]}{v}" for k, v in setting) or "default"
        overrides = (
            f"experiment={experiment}",
            row_override(layout.group, listed(rows)),
            *(f"{k}={v}" for k, v in setting),
            f"{protocol.seed_key[kind]}={listed(protocol.seeds)}",
            *extra,
        )
        phases.append(Phase("test", experiment, overrides, root / experiment / "test" / slug))
    return phases


def ledger_path(root: Path) -> Path:
    return root / "ledger.jsonl"


def ledger(root: Path) -> list[dict]:
    path = ledger_path(root)
    return read_jsonl(path) if path.exists() else []


def finished(phase: Phase, root: Path) -> bool:
    command = shlex.join(phase.command)
    return any(e["command"] == command and e["returncode"] == 0 for e in ledger(root))


def run_phase(phase: Phase, root: Path, rerun: bool = False) -> None:
    """Run the phase's multirun (unless it already finished) and record its wall time in the ledger."""
    if finished(phase, root) and not rerun:
        log.info("%s %s: finished before, not run again", phase.experiment, phase.name)
        return
    command = shlex.join(phase.command)
    log.info("running: %s", command)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *phase.command[1:]], cwd=ROOT)
    entry = {
        "experiment": phase.experiment,
        "phase": phase.name,
        "command": command,
        "wall_s": round(time.perf_counter() - start, 1),
        "returncode": done.returncode,
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    root.mkdir(parents=True, exist_ok=True)
    with open(ledger_path(root), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")
    if done.returncode:
        raise RuntimeError(f"{phase.experiment} {phase.name} failed (exit {done.returncode}): {command}")


# ---------------------------------------------------------------------------------------------------- runs
@dataclass
class Run:
    """One finished job: its metrics.json payload, its overrides and the row it belongs to."""

    payload: dict
    overrides: dict[str, str]
    row: str

    def frame(self, stage: str) -> pd.DataFrame:
        return read_samples(Path(self.payload["evaluations"][stage]["path"]) / SAMPLES_FILE)

    def overall(self, stage: str) -> dict:
        rows = [r for r in self.payload["rows"] if r["stage"] == stage and r["level"] == "all"]
        if len(rows) != 1:
            raise ValueError(f"expected one overall {stage} row, found {len(rows)}")
        return rows[0]


def same_value(a: object, b: object) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(a) == str(b)


def read_runs(folder: Path, layout: Layout) -> list[Run]:
    """Every finished job below `folder` (a job without metrics.json did not finish), oldest first."""
    runs = []
    for path in sorted(folder.rglob("metrics.json"), key=lambda p: p.stat().st_mtime):
        payload = json.loads(path.read_text())
        if "evaluations" not in payload:
            continue  # written before evaluations were recorded: not usable for intervals
        run = payload.get("run", {})
        overrides = dict(o.split("=", 1) for o in run.get("overrides", []))
        runs.append(Run(payload, overrides, str(run_choice(run, layout))))
    return runs


def matches(run: Run, setting: dict) -> bool:
    return all(key in run.overrides and same_value(run.overrides[key], value) for key, value in setting.items())


def selection(experiment: str, protocol: Protocol, root: Path) -> tuple[dict[str, dict], float | None]:
    """Per row: every searched setting's dev Acc and Len-T and the selected one; and the base model's dev Acc."""
    layout = LAYOUTS[experiment]
    kind = kind_of(layout)
    runs = read_runs(root / experiment / "search", layout)
    base_acc = runs[-1].overall("base")["acc"] if runs else None
    out = {}
    for row in layout.labels:
        found = []
        for setting in protocol.grid(kind):
            mine = [r for r in runs if r.row == row and matches(r, setting)]
            if mine:
                trained = mine[-1].overall("trained")
                found.append({"setting": setting, "acc": trained["acc"], "len_t": trained["len_t"]})
        if len(found) < len(protocol.grid(kind)):
            continue  # the search of this row is not complete
        dev = pd.DataFrame(found)
        chosen = select_setting(dev, base_acc, protocol.acc_margin)
        out[row] = {"setting": found[chosen]["setting"], "dev": found}
    return out, base_acc


@dataclass
class RowResult:
    """A row's test runs (one per seed) of its selected setting."""

    label: str
    runs: list[Run] = field(default_factory=list)
    _pooled: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def samples(self, stage: str = "trained") -> pd.DataFrame:
        """Every seed's graded test samples, pooled (read once)."""
        if stage not in self._pooled:
            self._pooled[stage] = pooled([r.frame(stage) for r in self.runs])
        return self._pooled[stage]

    def forced(self, stage: str = "trained") -> pd.DataFrame | None:
        """The forced-budget rows of every seed (None where the runs have none)."""
        paths = [r.payload["evaluations"][stage].get("forced_path") for r in self.runs]
        return None if None in paths else pooled([read_forced(Path(p)) for p in paths])


def test_results(
    experiment: str, selected: dict[str, dict], protocol: Protocol, root: Path
) -> tuple[dict[str, RowResult], RowResult | None]:
    """The rows whose every seed has a finished test run of the selected setting, and the base model's row."""
    layout = LAYOUTS[experiment]
    seed_key = protocol.seed_key[kind_of(layout)]
    runs = read_runs(root / experiment / "test", layout)
    rows = {}
    for row, choice in selected.items():
        per_seed = []
        for seed in protocol.seeds:
            mine = [r for r in runs if r.row == row and matches(r, {**choice["setting"], seed_key: seed})]
            if mine:
                per_seed.append(mine[-1])
        if len(per_seed) == len(protocol.seeds):
            rows[row] = RowResult(layout.labels[row], per_seed)
    base = RowResult("Baseline", [runs[-1]]) if runs else None
    return rows, base


# ---------------------------------------------------------------------------------------------------- tables
def fmt_interval(interval, scale: float = 1.0, digits: int = 1) -> str:
    e, lo, hi = (scale * v for v in (interval.estimate, interval.low, interval.high))
    return f"{e:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def result_table(
    experiment: str, rows: dict[str, RowResult], base: RowResult, selected: dict[str, dict], protocol: Protocol
) -> pd.DataFrame:
    """The paper's layout with intervals: Acc (%), Len-T, AUC (%), (Steps, StepLen), and the budget each row had."""
    layout = LAYOUTS[experiment]
    records, base_len = [], None
    for key, result in [(BASE, base), *rows.items()]:
        stage = "base" if key == BASE else "trained"
        samples = result.samples(stage)
        acc = cell(samples, "acc", protocol.n_boot, protocol.level)
        len_t = cell(samples, "len_t", protocol.n_boot, protocol.level)
        base_len = len_t.estimate if key == BASE else base_len  # the base row comes first
        record = {
            "row": result.label,
            "Acc (%)": fmt_interval(acc, 100),
            "Len-T": fmt_interval(len_t),
            "Len-T change": "" if key == BASE else f"{100 * (len_t.estimate - base_len) / base_len:+.1f}%",
            "Len-A": fmt_interval(cell(samples, "len_a", protocol.n_boot, protocol.level)),
            # the seeds' mean (each evaluation's AUC to its own B_max; equal sample counts, so the pooled value)
            "AUC (%)": f"{100 * np.mean([r.overall(stage)['auc'] for r in result.runs]):.1f}",
        }
        if "StepLen" in layout.columns:
            steps, _ = M.step_stats(samples["n_steps"], samples["step_tokens"], samples["correct"])
            record["Steps"] = f"{steps:.2f}"
            record["StepLen"] = fmt_interval(cell(samples, "step_len", protocol.n_boot, protocol.level), digits=2)
        forced = result.forced(stage)
        for budget in FORCED_COLUMNS if forced is not None else ():
            at = forced[forced["budget"] == budget]
            if len(at):
                record[f"forced Acc@{budget} (%)"] = fmt_interval(cell(at, "acc", protocol.n_boot, protocol.level), 100)
        if key != BASE:
            record.update(budget_columns(result, selected[key]["setting"]))
        records.append(record)
    return pd.DataFrame(records).set_index("row").fillna("")


def budget_columns(result: RowResult, setting: dict) -> dict:
    """What training each row had: pairs (or mixture examples), optimizer steps, passes over the data, setting."""
    payload = result.runs[0].payload
    out = {"setting": ", ".join(f"{k}={v}" for k, v in setting.items())}
    if "training" in payload:
        training = payload["training"]
        out.update(pairs=str(training["pairs"]), steps=str(training["steps"]), epochs=f"{training['epochs']:.2f}")
    elif "tldr" in payload:
        tldr = payload["tldr"]
        # the last dev evaluation is at the last step (DevReweighting evaluates at max_steps)
        out.update(steps=str(max(h["step"] for h in tldr["history"])), checkpoint=checkpoint_note(tldr))
    return out


def checkpoint_note(tldr: dict) -> str:
    selected = tldr.get("selected", {})
    if not selected:
        return ""
    met = selected.get("met_bar")
    return f"step {selected.get('step')}" + ("" if met is None or met else " (no checkpoint met the bar)")


def number(value: float | None, spec: str = ".2f") -> str:
    """A table cell's number; a row whose dev samples hold no correct response has no Len-T, shown as such."""
    return "none correct" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:{spec}}"


def dev_table(experiment: str, selected: dict[str, dict], base_acc: float | None) -> pd.DataFrame:
    """Every searched setting's dev Acc and Len-T per row, the selected one marked."""
    layout = LAYOUTS[experiment]
    records = []
    for row, choice in selected.items():
        for entry in choice["dev"]:
            records.append(
                {
                    "row": layout.labels[row],
                    "setting": ", ".join(f"{k}={v}" for k, v in entry["setting"].items()),
                    "dev Acc (%)": f"{100 * entry['acc']:.2f}",
                    "dev Len-T": number(entry["len_t"]),
                    "selected": "yes" if entry["setting"] == choice["setting"] else "",
                }
            )
    return pd.DataFrame(records)


def budget_figure(rows: dict[str, RowResult], base: RowResult, b_max: int, out: Path, name: str) -> list[Path]:
    """Accuracy within a token budget (post hoc: correct and at most B tokens), pooled over seeds."""
    grid = np.arange(1, b_max + 1)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for result, stage, style in [(base, "base", "--"), *((r, "trained", "-") for r in rows.values())]:
        samples = result.samples(stage)
        ax.plot(grid, 100 * M.budget_curve(samples["n_tokens"], samples["correct"], grid), style, label=result.label)
    ax.set_xlabel("token budget B")
    ax.set_ylabel("correct within B tokens (%)")
    ax.legend(fontsize=7)
    return save_figure(fig, out, name)


SIGN_ROWS = {"tokensqueeze": -1, "tokensqueeze_plus": 1}  # Table 4's rows of DPO-L's two signs


def sign_choice(selected: dict[str, dict], base_acc: float, protocol: Protocol) -> str:
    """Which sign of DPO-L's length term the protocol's rule picks on dev (each sign at its selected setting),
    and whether conf/loss/dpol.yaml's default agrees."""
    from omegaconf import OmegaConf

    found = {}
    for row, sign in SIGN_ROWS.items():
        if row in selected:
            dev = next(e for e in selected[row]["dev"] if e["setting"] == selected[row]["setting"])
            found[sign] = dev
    if len(found) < len(SIGN_ROWS):
        return ""
    frame = pd.DataFrame.from_dict(found, orient="index")
    sign = select_setting(frame, base_acc, protocol.acc_margin)
    default = OmegaConf.load(ROOT / "conf" / "loss" / "dpol.yaml")["length_sign"]
    agree = "agrees" if default == sign else f"**does not agree** (it has s = {default:+d})"
    shown = "; ".join(
        f"s = {k:+d}: dev Acc {100 * v['acc']:.2f}%, Len-T {number(v['len_t'])}" for k, v in found.items()
    )
    return (
        f"DPO-L's sign, chosen by the same rule on dev: **s = {sign:+d}** ({shown}); the default in "
        f"conf/loss/dpol.yaml {agree}."
    )


def per_level_table(rows: dict[str, RowResult], base: RowResult) -> pd.DataFrame:
    """TL;DR's layout, pooled over seeds: accuracy (%) per level (levels stand for its datasets), their mean,
    Len-A per level, its mean, and A.C.R. against the base model (mean over levels of max(0, 1 - Len/Len_base))."""
    records, base_len = [], None
    for result, stage in [(base, "base"), *((r, "trained") for r in rows.values())]:
        samples = result.samples(stage)
        by_level = samples.groupby("level", sort=True)
        acc, len_a = 100 * by_level["correct"].mean(), by_level["n_tokens"].mean()
        base_len = len_a if base_len is None else base_len
        record = {f"L{lv}": f"{a:.1f}" for lv, a in acc.items()}
        record["Avg"] = f"{acc.mean():.1f}"
        record |= {f"Len L{lv}": f"{v:.1f}" for lv, v in len_a.items()}
        record["L-Avg"] = f"{len_a.mean():.1f}"
        acr = M.average_compression_ratio(len_a.tolist(), base_len.tolist())
        record["A.C.R."] = "" if stage == "base" else f"{100 * acr:.1f}%"
        records.append(pd.Series(record, name=result.label))
    return pd.DataFrame(records)


def tldr_checkpoints(rows: dict[str, RowResult], seed_key: str) -> pd.DataFrame:
    """Per TL;DR run: the base model's dev accuracy at the dev temperature, the bar, the kept checkpoint and
    whether it met the bar (the rule keeps the most accurate one when none does), and the data sizes."""
    records = []
    for result in rows.values():
        for run in result.runs:
            summary = run.payload["tldr"]
            selected, base = summary["selected"], summary.get("base_dev", {})
            records.append(
                {
                    "row": result.label,
                    "seed": run.overrides.get(seed_key, ""),
                    "base dev Acc": f"{100 * base['dev_acc']:.1f}% (T {base['temperature']:g})" if base else "",
                    "bar": f"> {100 * summary['bar']:.1f}%" if "bar" in summary else "",
                    "kept step": selected["step"],
                    "kept dev Acc": f"{100 * selected['dev_acc']:.1f}%",
                    "met the bar": "yes" if selected.get("met_bar", True) else "**no**",
                    "System-1 / System-2 examples": f"{summary['system1_examples']} / {summary['system2_examples']}",
                }
            )
    return pd.DataFrame(records)


def forced_figure(rows: dict[str, RowResult], base: RowResult, out: Path, name: str) -> list[Path]:
    """Forced-budget accuracy (cut at B, thinking closed, answered) against B, pooled over seeds; none without."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    drawn = False
    for result, stage, style in [(base, "base", "--o"), *((r, "trained", "-o") for r in rows.values())]:
        forced = result.forced(stage)
        if forced is None:
            continue
        curve = forced.groupby("budget")["correct"].mean()
        ax.plot(curve.index, 100 * curve.to_numpy(), style, label=result.label)
        drawn = True
    if not drawn:
        plt.close(fig)
        return []
    ax.set_xlabel("token budget B (reasoning cut at B, then answer)")
    ax.set_ylabel("forced-budget accuracy (%)")
    ax.legend(fontsize=7)
    return save_figure(fig, out, name)


def sweep_points(rows: dict[str, RowResult], protocol: Protocol) -> pd.DataFrame:
    """Acc and Len-T with their intervals per swept value, in numeric order; empty unless every row key is a
    number (a sweep such as Figure 4's alpha, not a set of methods)."""
    try:
        values = {key: float(key) for key in rows}
    except ValueError:
        return pd.DataFrame()
    records = []
    for key in sorted(rows, key=values.get):
        samples = rows[key].samples()
        record = {"value": values[key]}
        for metric in ("acc", "len_t"):
            interval = cell(samples, metric, protocol.n_boot, protocol.level)
            record |= {metric: interval.estimate, f"{metric}_low": interval.low, f"{metric}_high": interval.high}
        records.append(record)
    return pd.DataFrame(records)


def sweep_figure(points: pd.DataFrame, base: RowResult, group: str, out: Path, name: str) -> list[Path]:
    """TokenSqueeze Figure 4's form: test Acc and Len-T against the swept value, 95% intervals as error bars,
    the base model as a dashed line."""
    key = group.rsplit(".", 1)[-1]
    samples = base.samples("base")
    base_values = {
        "acc": 100 * M.accuracy(samples["correct"]),
        "len_t": M.mean_length_correct(samples["n_tokens"], samples["correct"]),
    }
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, metric, scale, label in ((axes[0], "acc", 100, "Acc (%)"), (axes[1], "len_t", 1, "Len-T (tokens)")):
        estimate = scale * points[metric]
        error = [estimate - scale * points[f"{metric}_low"], scale * points[f"{metric}_high"] - estimate]
        ax.errorbar(points["value"], estimate, yerr=error, fmt="-o", capsize=3, label="trained, seeds pooled")
        ax.axhline(base_values[metric], ls="--", c="gray", label="base model")
        ax.set_xlabel(key)
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    return save_figure(fig, out, name)


# ---------------------------------------------------------------------------------------------------- verdicts
def claim_rows(claim: Claim, results: dict[str, tuple[dict[str, RowResult], RowResult | None]], protocol: Protocol):
    """The claim's verdict and each comparison's measured difference, or None when a row has not run."""
    parts, verdicts = [], []
    for comparison in claim.parts:
        frames = []
        for experiment, row in (comparison.row, comparison.versus):
            rows, base = results.get(experiment, ({}, None))
            if row == BASE:
                frames.append(base.samples("base") if base else None)
            else:
                frames.append(rows[row].samples() if row in rows else None)
        if any(f is None for f in frames):
            return None
        interval = difference(frames[0], frames[1], comparison.metric, protocol.n_boot, protocol.level)
        threshold = threshold_of(comparison, protocol.noninferiority)
        scale = 100 if comparison.metric == "acc" else 1
        unit = " pt" if comparison.metric == "acc" else " tokens"
        name = {"acc": "Acc", "len_t": "Len-T", "len_a": "Len-A", "step_len": "StepLen"}[comparison.metric]
        parts.append(
            f"{name} {comparison.row[1]} - {comparison.versus[1]} = {fmt_interval(interval, scale, 2)}{unit} "
            f"(claimed {comparison.relation} {scale * threshold:g})"
        )
        verdicts.append(verdict(interval, comparison.relation, threshold))
    return combine(verdicts), parts


# ---------------------------------------------------------------------------------------------------- writing
def md(frame: pd.DataFrame, index: bool = True) -> str:
    return frame.to_markdown(index=index)


def write_results(
    experiments: Iterable[str],
    protocol: Protocol,
    root: Path,
    out: Path,
    figures: Path,
    extra: tuple[str, ...] = (),
    readme: Path | None = None,
) -> Path:
    """RESULTS.md from the runs below `root`; with `readme`, the verdict list between its markers as well."""
    figures.mkdir(parents=True, exist_ok=True)
    sections, results, commands = [], {}, []
    for experiment in experiments:
        layout = LAYOUTS[experiment]
        selected, base_dev_acc = selection(experiment, protocol, root)
        rows, base = test_results(experiment, selected, protocol, root)
        results[experiment] = (rows, base)
        commands.append(search_phase(experiment, protocol, root, extra))
        commands += test_phases(experiment, selected, protocol, root, extra)
        text = [f"## {layout.caption or experiment} (`{experiment}`)", ""]
        missing = [layout.labels[r] for r in layout.labels if r not in rows]
        if missing:
            text += [f"Not run yet (no complete search or test): {', '.join(missing)}.", ""]
        if rows and base:
            table = result_table(experiment, rows, base, selected, protocol)
            text += [md(table), ""]
            b_max = int(max(c["budget"] for c in base.runs[0].payload["curves"]))
            budget = budget_figure(rows, base, b_max, figures, f"{experiment}_budget")[0]
            text += [f"![accuracy within a token budget]({budget.relative_to(out.parent)})", ""]
            for path in forced_figure(rows, base, figures, f"{experiment}_forced")[:1]:
                text += [f"![forced-budget accuracy]({path.relative_to(out.parent)})", ""]
            points = sweep_points(rows, protocol)
            if len(points):
                sweep = sweep_figure(points, base, layout.group, figures, f"{experiment}_sweep")[0]
                text += [
                    f"![test Acc and Len-T against the swept value]({sweep.relative_to(out.parent)})",
                    "",
                    "Each point is its row's setting selected on dev (the table's setting column), so the swept value "
                    "and the selected setting can change together.",
                    "",
                ]
            if kind_of(layout) == "tldr":
                text += ["Per level (levels stand for TL;DR's datasets; Len = Len-A), pooled over seeds:", ""]
                text += [md(per_level_table(rows, base)), ""]
                text += ["Kept checkpoints (dev evaluation every `tldr.update_every` steps):", ""]
                text += [md(tldr_checkpoints(rows, protocol.seed_key["tldr"]), index=False), ""]
            k = k_table([(result.runs[0].payload, result.label) for result in rows.values()])
            if len(k.columns) and kind_of(layout) == "preference":
                text += ["Positives chosen per problem (k): problems per k.", "", md(k), ""]
                kfig = k_figure(k, figures, f"{experiment}_k")[0]
                text += [f"![k per problem]({kfig.relative_to(out.parent)})", ""]
        if selected:
            dev_acc = f"{100 * base_dev_acc:.2f}%" if base_dev_acc is not None else "?"
            text += [
                f"Dev selection (base model dev Acc {dev_acc}; rule: shortest dev Len-T within "
                f"{100 * protocol.acc_margin:g} point of it, else most accurate):",
                "",
                md(dev_table(experiment, selected, base_dev_acc), index=False),
                "",
            ]
            if experiment == "ts_table4" and base_dev_acc is not None:
                text += [sign_choice(selected, base_dev_acc, protocol), ""]
        sections.append("\n".join(text))
    verdict_rows = []
    for claim in CLAIMS:
        measured = claim_rows(claim, results, protocol)
        verdict_rows.append(
            {
                "claim": f"{claim.id}: {claim.statement}",
                "paper": claim.paper,
                "here": "<br>".join(measured[1]) if measured else "not run yet",
                "verdict": f"**{measured[0]}**" if measured else "–",
            }
        )
    times = wall_times(root)
    page = [
        "# Results (generated)",
        "",
        "Generated by `python -m analysis.results` from the runs below `logs/protocol/`; do not edit by hand. "
        "The protocol (conf/protocol.yaml, fixed before the runs): every row of a table trains the same number of "
        "optimizer steps; every row searches the same grid "
        + "; ".join(f"{k}: {', '.join(f'{key} {v}' for key, v in g.items())}" for k, g in protocol.search.items())
        + f" with seed {protocol.seeds[0]}, evaluated on the dev split; one rule selects each row's setting on dev; "
        f"the selected setting trains with seeds {list(protocol.seeds)} and each is evaluated once on the test "
        f"split. A cell is the value pooled over seeds with its {100 * protocol.level:g}% bootstrap interval over "
        f"problems ({protocol.n_boot} resamples; a problem is resampled with all its samples of every seed); a "
        "claim compares two rows with a paired bootstrap of their difference. AUC is post hoc (accuracy within "
        "B tokens, integrated to the generation cap). Verdict rule: analysis/claims.py.",
        "",
        "## Verdicts",
        "",
        md(pd.DataFrame(verdict_rows), index=False),
        "",
        *sections,
        "## How this file was made",
        "",
        md(times, index=False) if len(times) else "No phase has run yet.",
        "",
        "Wall times of finished calls, from logs/protocol/ledger.jsonl (computing: the longest call of each "
        "command; latest call: its last, mostly cache hits). Not counted: calls that were interrupted (the stages "
        "they finished were cache hits for the next call) and stages cached before a phase's first call (such as "
        "the base model).",
        "",
        "Commands (each a Hydra multirun; `python -m analysis.results` runs them in this order):",
        "",
        "```",
        *[shlex.join(p.command) for p in commands],
        "```",
        "",
    ]
    if readme is not None:
        update_readme(readme, readme_summary(verdict_rows))
    return atomic_write_text(out, "\n".join(page))


README_BEGIN, README_END = "<!-- results summary: begin -->", "<!-- results summary: end -->"


def readme_summary(verdicts: list[dict]) -> str:
    """The verdicts as the README's short list (written between its markers, so the two never disagree)."""
    lines = [f"- {v['claim']}: {v['verdict'] if v['verdict'] != '–' else 'not run yet'}" for v in verdicts]
    return "\n".join(["Verdicts in RESULTS.md when it was last generated:", "", *lines])


def update_readme(readme: Path, summary: str) -> None:
    """Replace the text between the README's results markers by `summary`; the markers must be there."""
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{readme}: no results markers ({README_BEGIN} ... {README_END})")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    atomic_write_text(readme, f"{head}{README_BEGIN}\n{summary}\n{README_END}{tail}")


def wall_times(root: Path) -> pd.DataFrame:
    """Per phase of the ledger: the longest finished run (the one that computed) and the latest (cache hits)."""
    entries = [e for e in ledger(root) if e["returncode"] == 0]
    if not entries:
        return pd.DataFrame()
    frame = pd.DataFrame(entries)
    table = frame.groupby(["experiment", "phase", "command"], sort=False)["wall_s"].agg(["max", "last"]).reset_index()
    table = table.groupby(["experiment", "phase"], sort=False)[["max", "last"]].sum().reset_index()
    table.loc[len(table)] = ["all", "", table["max"].sum(), table["last"].sum()]
    return table.rename(columns={"max": "computing (s)", "last": "latest call (s)"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--experiments",
        default=",".join(EXPERIMENTS),
        help="whose phases to run; RESULTS.md always covers the default list as well, so a partial call keeps the "
        "other experiments' sections and verdicts",
    )
    parser.add_argument("--root", default="logs/protocol", help="where the runs go (relative: to the repository)")
    parser.add_argument("--out", default=str(ROOT / "RESULTS.md"))
    parser.add_argument("--figures", default=str(ROOT / "experiments" / "figures"))
    parser.add_argument("--write-only", action="store_true", help="write RESULTS.md from existing runs only")
    parser.add_argument("--rerun", action="store_true", help="start every phase even if it finished before")
    parser.add_argument("--protocol", default=str(PROTOCOL_FILE))
    parser.add_argument("--readme", default=str(ROOT / "README.md"), help="whose results summary to update ('': none)")
    parser.add_argument("overrides", nargs="*", help="added to every run, e.g. paths.cache_dir=/scratch/tsq")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    experiments = [e for e in args.experiments.split(",") if e]
    unknown = [e for e in experiments if e not in LAYOUTS]
    if unknown:
        raise SystemExit(f"unknown experiment(s) {unknown}; known: {sorted(LAYOUTS)}")
    protocol, root, extra = load_protocol(args.protocol), ROOT / args.root, tuple(args.overrides)
    if not args.write_only:
        for experiment in experiments:
            run_phase(search_phase(experiment, protocol, root, extra), root, args.rerun)
            selected, _ = selection(experiment, protocol, root)
            missing = [r for r in LAYOUTS[experiment].labels if r not in selected]
            if missing:
                raise RuntimeError(f"{experiment}: the search finished without every setting of rows {missing}")
            for phase in test_phases(experiment, selected, protocol, root, extra):
                run_phase(phase, root, args.rerun)
    readme = Path(args.readme) if args.readme else None
    written = [*EXPERIMENTS, *(e for e in experiments if e not in EXPERIMENTS)]
    print(write_results(written, protocol, root, Path(args.out), Path(args.figures), extra, readme))


if __name__ == "__main__":
    main()
