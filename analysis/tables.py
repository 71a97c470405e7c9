"""The tables of RESULTS.md, each in its paper's layout with intervals: a row per method (the base model first), the
dev selection, TL;DR's per-level layout and kept checkpoints, the positives per problem, a swept value's points."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.layouts import LAYOUTS
from analysis.protocol import Protocol, cell
from analysis.runs import RowResult
from tsq.evaluation import metrics as M
from tsq.evaluation.intervals import SeedInterval, seed_aware_interval, seed_values
from tsq.stages.run_metrics import RunMetrics

BASE = "base"  # the base model's row key in a table's rows
FORCED_COLUMNS = (16, 32)  # forced-budget accuracies shown in the tables (the figure has every budget)


def fmt_interval(interval, scale: float = 1.0, digits: int = 1) -> str:
    """`estimate [low, high]`; an undefined value or interval (nothing to average; a seed spread from fewer than two
    seeds: `seed_aware_interval`) says so instead of printing NaN."""
    e, lo, hi = (scale * v for v in (interval.estimate, interval.low, interval.high))
    if not math.isfinite(e):
        return "undefined"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{e:.{digits}f} [no interval]"
    return f"{e:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def number(value: float | None, spec: str = ".2f") -> str:
    """A table cell's number; a row whose dev samples hold no correct response has no Len-T, shown as such."""
    return "none correct" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:{spec}}"


def md(frame: pd.DataFrame, index: bool = True) -> str:
    return frame.to_markdown(index=index)


def to_latex(table: pd.DataFrame, caption: str, label: str) -> str:
    """A table as booktabs LaTeX (pandas Styler), its cells as shown in RESULTS.md, LaTeX's special characters
    escaped (a `%` in a header would comment out the rest of its line)."""
    style = table.style.format(escape="latex").format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    return style.to_latex(
        hrules=True,
        caption=caption,
        label=label,
        position_float="centering",
        column_format="l" + "r" * table.shape[1],
    )


def seed_cell(result: RowResult, role: str, metric: str, protocol: Protocol) -> SeedInterval:
    """A row's value pooled over its seeds, with the interval that covers seed and problem variance, within the
    values the metric can take (an accuracy in [0, 1], a length at least 0)."""
    bounds = (0.0, 1.0) if metric == "acc" else (0.0, math.inf)
    return seed_aware_interval(result.sums(metric, role), n_boot=protocol.n_boot, level=protocol.level, bounds=bounds)


def result_table(
    experiment: str, rows: dict[str, RowResult], base: RowResult, selected: dict[str, dict], protocol: Protocol
) -> pd.DataFrame:
    """The paper's layout with intervals over seeds and problems: Acc (%), Len-T, AUC (%), (Steps, StepLen), and the
    budget each row had. (Forced-budget columns: intervals over problems only.)"""
    layout = LAYOUTS[experiment]
    records, base_len = [], None
    for key, result in [(BASE, base), *rows.items()]:
        role = "base" if key == BASE else "trained"
        samples = result.samples(role)
        acc = seed_cell(result, role, "acc", protocol)
        len_t = seed_cell(result, role, "len_t", protocol)
        base_len = len_t.estimate if key == BASE else base_len  # the base row comes first
        record = {
            "row": result.label,
            "Acc (%)": fmt_interval(acc, 100),
            "Len-T": fmt_interval(len_t),
            "Len-T change": "" if key == BASE else f"{100 * (len_t.estimate - base_len) / base_len:+.1f}%",
            "Len-A": fmt_interval(seed_cell(result, role, "len_a", protocol)),
            # the seeds' mean (each evaluation's AUC to its own B_max; equal sample counts, so the pooled value)
            "AUC (%)": f"{100 * np.mean([r.overall(role)['auc'] for r in result.runs]):.1f}",
        }
        if "StepLen" in layout.columns:
            steps, _ = M.step_stats(samples["n_steps"], samples["step_tokens"], samples["correct"])
            record["Steps"] = f"{steps:.2f}"
            record["StepLen"] = fmt_interval(seed_cell(result, role, "step_len", protocol), digits=2)
        if "NoStep" in layout.columns:  # pooled over seeds, no interval: a diagnostic of how rows fail
            share, stepless_acc = M.stepless(samples["n_steps"], samples["correct"])
            record["no step (%)"] = f"{100 * share:.1f}"
            record["Acc with no step (%)"] = f"{100 * stepless_acc:.1f}" if share else "no such response"
        forced = result.forced(role)
        for budget in FORCED_COLUMNS if forced is not None else ():
            at = forced[forced["budget"] == budget]
            if len(at):
                record[f"forced Acc@{budget} (%)"] = fmt_interval(cell(at, "acc", protocol.n_boot, protocol.level), 100)
        if key != BASE:
            record.update(budget_columns([run.record for run in result.runs], selected[key]["setting"]))
            record.update(compute_columns([run.record for run in result.runs]))
        records.append(record)
    return pd.DataFrame(records).set_index("row").fillna("")


def budget_columns(records: list[RunMetrics], setting: dict) -> dict:
    """What training a row had: pairs (or mixture examples, or RL rollouts), optimizer steps, passes over the data,
    setting. Each seed draws its own pairs, so a count that differs between a row's seeds is their mean with the
    range."""
    out = {"setting": ", ".join(f"{k}={v}" for k, v in setting.items())}
    first = records[0]
    if first.training is not None:
        training = [r.training for r in records]
        out.update(
            pairs=seed_count([t["pairs"] for t in training]),
            steps=seed_count([t["steps"] for t in training]),
            epochs=f"{np.mean([t['epochs'] for t in training]):.2f}",
        )
    elif first.tldr is not None:
        # the last dev evaluation is at the last step (DevReweighting evaluates at max_steps)
        out.update(
            steps=seed_count([max(h["step"] for h in r.tldr["history"]) for r in records]),
            checkpoint=seed_notes([checkpoint_note(r.tldr) for r in records]),
        )
    elif first.rl is not None:
        out.update(
            steps=seed_count([r.rl["steps"] for r in records]), rollouts=seed_count([r.rl["rollouts"] for r in records])
        )
    return out


def seed_notes(notes: list[str]) -> str:
    """A note over a row's seeds: the note when they agree, else each seed's in seed order, `step 32; step 96`."""
    return notes[0] if len(set(notes)) == 1 else "; ".join(notes)


def seed_count(values: list[int]) -> str:
    """A count over a row's seeds: the value when they agree, else the mean and the range, `389 (359-405)`."""
    if min(values) == max(values):
        return str(values[0])
    return f"{np.mean(values):.0f} ({min(values)}-{max(values)})"


def compute_columns(records: list[RunMetrics]) -> dict:
    """What a row's training signal cost, the mean over its seeds in thousands of tokens (tsq.training.compute):
    tokens generated (training samples, refinement candidates, rollouts) and trained on; `~` marks an estimate."""
    known = [r.compute for r in records if r.compute]
    if not known:
        return {}
    generated = np.mean([sum(c["generated_tokens"].values()) for c in known])
    trained = np.mean([c["trained_tokens"] for c in known])
    estimated = known[0].get("estimated", [])
    gen_mark = "~" if any(e.startswith("generated_tokens") for e in estimated) else ""
    return {
        "generated (k tokens)": f"{gen_mark}{generated / 1000:,.0f}",
        "trained (k tokens)": f"{'~' if 'trained_tokens' in estimated else ''}{trained / 1000:,.0f}",
    }


def checkpoint_note(tldr: dict) -> str:
    selected = tldr.get("selected", {})
    if not selected:
        return ""
    met = selected.get("met_bar")
    return f"step {selected.get('step')}" + ("" if met is None or met else " (no checkpoint met the bar)")


def per_seed_table(rows: dict[str, RowResult], base: RowResult, seeds: tuple[int, ...]) -> pd.DataFrame:
    """Every row's test Acc (%) and Len-T at each seed (the values the pooled cells and their intervals come from)."""
    records = []
    for result, role in [(base, "base"), *((r, "trained") for r in rows.values())]:
        record = {"row": result.label}
        for metric, scale, name in (("acc", 100, "Acc"), ("len_t", 1, "Len-T")):
            values = seed_values(*result.sums(metric, role))
            record |= {f"{name} s{seed}": number(scale * v, ".1f") for seed, v in zip(seeds, values, strict=True)}
        records.append(record)
    return pd.DataFrame(records).set_index("row")


def dev_table(experiment: str, selected: dict[str, dict]) -> pd.DataFrame:
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


def per_level_table(rows: dict[str, RowResult], base: RowResult) -> pd.DataFrame:
    """TL;DR's layout, pooled over seeds: accuracy (%) per level (levels stand for its datasets), their mean,
    Len-A per level, its mean, and A.C.R. against the base model (mean over levels of max(0, 1 - Len/Len_base))."""
    records, base_len = [], None
    for result, role in [(base, "base"), *((r, "trained") for r in rows.values())]:
        samples = result.samples(role)
        by_level = samples.groupby("level", sort=True)
        acc, len_a = 100 * by_level["correct"].mean(), by_level["n_tokens"].mean()
        base_len = len_a if base_len is None else base_len
        record = {f"L{lv}": f"{a:.1f}" for lv, a in acc.items()}
        record["Avg"] = f"{acc.mean():.1f}"
        record |= {f"Len L{lv}": f"{v:.1f}" for lv, v in len_a.items()}
        record["L-Avg"] = f"{len_a.mean():.1f}"
        acr = M.average_compression_ratio(len_a.tolist(), base_len.tolist())
        record["A.C.R."] = "" if role == "base" else f"{100 * acr:.1f}%"
        records.append(pd.Series(record, name=result.label))
    return pd.DataFrame(records)


def tldr_checkpoints(rows: dict[str, RowResult], seed_key: str) -> pd.DataFrame:
    """Per TL;DR run: the base model's dev accuracy at the dev temperature, the bar, the kept checkpoint and
    whether it met the bar (the rule keeps the most accurate one when none does), the data sizes and the mixture
    weights' history."""
    records = []
    for result in rows.values():
        for run in result.runs:
            summary = run.record.tldr
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
                    # the System-1 weight after each dev evaluation (the weights' history, per seed)
                    "System-1 weight by step": ", ".join(
                        f"{h['step']}: {h['alpha_short']:.2f}" for h in summary["history"]
                    ),
                }
            )
    return pd.DataFrame(records)


def k_table(records: list[tuple[RunMetrics, str]]) -> pd.DataFrame:
    """Problems per k, the positives the selector chose per problem (0: no correct response), one column per label
    (its records' construction statistics); a label given several records (a row's seeds, each with pairs of its
    own) gets their mean. Empty without construction."""
    counts: dict[str, list[dict[int, int]]] = {}
    for record, label in records:
        stats = (record.construction or {}).get("positives_per_problem")
        if stats:
            counts.setdefault(label, []).append({int(k): n for k, n in stats.items()})
    columns = {label: pd.DataFrame(seeds).fillna(0).mean() for label, seeds in counts.items()}
    table = pd.DataFrame(columns).fillna(0).sort_index()
    # one record per label (or equal counts): whole problems; else a mean, to a tenth of a problem
    table = table.astype(int) if (table == table.round()).all().all() else table.round(1)
    table.index.name = "k"
    return table


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
