"""Paper-layout tables and figures from collected runs.

    python -m analysis.tables ts_table2 [logs/] [--out results/]

For an experiment tag, takes the newest run of each swept choice below the logs folder, builds the
table in the paper's layout (a Baseline row from the base model, then one row per method; Acc and AUC
in percent, Len = Len-T with its relative change in parentheses, best value in bold) and writes
`<tag>.tex` (pandas Styler, booktabs), `<tag>.csv` (the same numbers), the budget-curve figure
`<tag>_budget.png/.pdf` and the accuracy-versus-length figure `<tag>_pareto.png/.pdf` and the response-length histograms
`<tag>_lengths.png/.pdf` (matplotlib).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.collect import collect_metrics  # noqa: E402
from tsq.evaluation.metrics import average_compression_ratio  # noqa: E402


@dataclass(frozen=True)
class Layout:
    """One paper table: which config group is swept, row labels in order, and its columns."""

    group: str  # the swept column of `collect_metrics`: "choice.<group>" or "override.<key>"
    labels: dict[str, str]
    columns: tuple[str, ...] = ("Acc", "Len", "AUC")
    caption: str = ""
    kind: str = "tokensqueeze"  # or "tldr": accuracy and Len-A per level, averages and A.C.R.


EXPERIMENTS = Path(__file__).resolve().parents[1] / "conf" / "experiment"


def load_layouts(folder: Path = EXPERIMENTS) -> dict[str, Layout]:
    """Every experiment's table layout, read from the `table:` node of its config (the one place it lives)."""
    from omegaconf import OmegaConf

    layouts = {}
    for path in sorted(folder.glob("*.yaml")):
        node = OmegaConf.load(path).get("table")
        if node is None:
            continue
        spec = OmegaConf.to_container(node)
        try:
            layouts[path.stem] = Layout(**{**spec, "columns": tuple(spec.get("columns", Layout.columns))})
        except TypeError as err:
            raise ValueError(f"{path}: bad table layout ({err})") from err
    return layouts


LAYOUTS = load_layouts()
HIGHER_IS_BETTER = {"Acc": True, "AUC": True, "Len": False, "Steps": False, "StepLen": False, "Avg": True,
                    "L-Avg": False, "A.C.R.": True}  # fmt: skip
SOURCE = {"Acc": "acc", "Len": "len_t", "AUC": "auc", "Steps": "steps", "StepLen": "step_len"}


def paper_table(frame: pd.DataFrame, layout: Layout, level: str = "all") -> pd.DataFrame:
    """Numbers of the table: index Baseline + methods in layout order, columns as in the layout.

    `frame` is `collect_metrics` output for one experiment; the newest run of each choice is used.
    """
    rows = frame[frame["level"] == level].sort_values("run")
    choice = layout.group
    if choice not in rows:
        raise ValueError(f"no run records {choice}")
    trained = rows[rows["stage"] == "trained"].drop_duplicates(choice, keep="last").set_index(choice)
    missing = [c for c in layout.labels if c not in trained.index]
    if missing:
        raise ValueError(f"no trained run for {layout.group}={missing} among {sorted(map(str, trained.index))}")
    base = rows[rows["stage"] == "base"].iloc[-1]
    records = [base] + [trained.loc[c] for c in layout.labels]
    table = pd.DataFrame(
        [{col: float(r[SOURCE[col]]) for col in layout.columns} for r in records],
        index=["Baseline", *layout.labels.values()],
    )
    for col in ("Acc", "AUC"):
        if col in table:
            table[col] *= 100
    return table


def tldr_table(frame: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """TL;DR's layout: accuracy (%) per level, their mean, Len-A per level, its mean, and A.C.R. (%)
    against the original model; levels stand for TL;DR's datasets."""
    rows = frame[frame["level"] != "all"].sort_values("run")
    trained = rows[rows["stage"] == "trained"]
    missing = [c for c in layout.labels if c not in set(trained[layout.group])]
    if missing:
        raise ValueError(f"no trained run for {layout.group}={missing}")
    base_run = rows[rows["stage"] == "base"]["run"].iloc[-1]
    groups = [("Original", rows[(rows["stage"] == "base") & (rows["run"] == base_run)])]
    for choice, label in layout.labels.items():
        mine = trained[trained[layout.group] == choice]
        groups.append((label, mine[mine["run"] == mine["run"].iloc[-1]]))
    levels = sorted(groups[0][1]["level"].unique(), key=int)
    original = groups[0][1].set_index("level")["len_a"]
    records = []
    for label, g in groups:
        g = g.set_index("level")
        record = {f"L{lv}": 100 * g.loc[lv, "acc"] for lv in levels}
        record["Avg"] = sum(record.values()) / len(levels)
        record |= {f"Len L{lv}": g.loc[lv, "len_a"] for lv in levels}
        record["L-Avg"] = sum(g.loc[lv, "len_a"] for lv in levels) / len(levels)
        acr = average_compression_ratio([g.loc[lv, "len_a"] for lv in levels], [original[lv] for lv in levels])
        record["A.C.R."] = float("nan") if label == "Original" else 100 * acr
        records.append(pd.Series(record, name=label))
    return pd.DataFrame(records)


BOLD = {"latex": ("textbf:--rwrap;", "\\%"), "html": ("font-weight: bold;", "%")}


def styled(table: pd.DataFrame, target: str = "latex") -> pd.io.formats.style.Styler:
    """Formatting of the paper: one decimal, Len with its change against Baseline, best in bold
    (`target`: the bold and percent markup of LaTeX or HTML)."""
    bold, percent = BOLD[target]
    if "Baseline" not in table.index:  # TL;DR's layout: bold the best average and compression only
        style = table.style.format("{:.1f}", na_rep="--")
        style = style.highlight_max(subset=["Avg", "A.C.R."], props=bold)
        return style.highlight_min(subset=["L-Avg"], props=bold)
    base_len = table.loc["Baseline", "Len"]

    def length(v: float) -> str:
        return f"{v:.1f}" if v == base_len else f"{v:.1f} ({100 * (v - base_len) / base_len:+.1f}{percent})"

    style = table.style.format("{:.1f}").format(length, subset=["Len"])
    for col in table.columns:
        if HIGHER_IS_BETTER[col]:
            style = style.highlight_max(subset=[col], props=bold)
        else:
            style = style.highlight_min(subset=[col], props=bold)
    return style


def to_latex(table: pd.DataFrame, caption: str, label: str) -> str:
    return styled(table).to_latex(
        hrules=True, caption=caption, label=label, position_float="centering", column_format="l" + "r" * table.shape[1]
    )


def tagged_runs(root: Path, tag: str):
    """(payload, run description) of every metrics.json below `root` whose run carries `tag`."""
    for metrics in sorted(root.rglob("metrics.json")):
        payload = json.loads(metrics.read_text())
        run = payload.get("run", {})
        if tag in run.get("tags", []):
            yield payload, run


def save_figure(fig, out: Path, name: str) -> list[Path]:
    """Write `name`.png and `name`.pdf into `out` and close the figure."""
    fig.tight_layout()
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for path in paths:
        fig.savefig(path)
    plt.close(fig)
    return paths


def labelled_runs(root: Path, tag: str, layout: Layout) -> list[tuple[dict, str]]:
    """(payload, row label) of every run tagged `tag` below `root`."""
    return [(payload, run_label(run, layout)) for payload, run in tagged_runs(root, tag)]


def budget_figure(runs: list[tuple[dict, str]], out: Path, name: str) -> list[Path]:
    """Accuracy-vs-budget curves (overall) of the base model and of every run's trained model."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    drawn = False
    for payload, run_name in runs:
        curves = pd.DataFrame(payload["curves"])
        if curves.empty:
            continue
        curves = curves[curves["level"] == "all"]
        for stage, label in (("base", "Baseline"), ("trained", run_name)):
            if stage == "base" and drawn:
                continue
            part = curves[curves["stage"] == stage]
            if not part.empty:
                ax.plot(part["budget"], 100 * part["acc"], label=label, linestyle="--" if stage == "base" else "-")
        drawn = True
    ax.set_xlabel("token budget B")
    ax.set_ylabel("accuracy within budget (%)")
    ax.legend(fontsize=7)
    return save_figure(fig, out, name)


def length_figure(runs: list[tuple[dict, str]], out: Path, name: str) -> list[Path]:
    """Histograms of response lengths (all test samples) of the base model and of every run's trained model."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    drawn = False
    for payload, label in runs:
        for hist in payload.get("length_histograms", []):
            if hist["stage"] == "base" and drawn:
                continue
            name = "Baseline" if hist["stage"] == "base" else label
            ax.stairs(hist["counts"], hist["edges"], label=name, linestyle="--" if hist["stage"] == "base" else "-")
        drawn = True
    ax.set_xlabel("response length (tokens)")
    ax.set_ylabel("responses")
    if ax.get_legend_handles_labels()[0]:  # runs older than the histograms have none
        ax.legend(fontsize=7)
    return save_figure(fig, out, name)


def k_table(runs: list[tuple[dict, str]]) -> pd.DataFrame:
    """Problems per k, the positives the selector chose per problem (0: no correct response), one column per
    run (its construction statistics); empty without construction."""
    counts = {}
    for payload, label in runs:
        stats = payload.get("construction", {}).get("positives_per_problem")
        if stats:
            counts[label] = {int(k): n for k, n in stats.items()}
    table = pd.DataFrame(counts).fillna(0).astype(int).sort_index()
    table.index.name = "k"
    return table


def k_figure(table: pd.DataFrame, out: Path, name: str) -> list[Path]:
    """The k table as grouped bars."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    table.plot.bar(ax=ax, rot=0)
    ax.set_xlabel("positives chosen per problem (k)")
    ax.set_ylabel("problems")
    ax.legend(fontsize=7)
    return save_figure(fig, out, name)


def run_choice(run: dict, layout: Layout) -> str | None:
    """A run's value of the layout's swept column (a config choice or a command-line override)."""
    where, _, key = layout.group.partition(".")
    if where == "choice":
        return run.get("choices", {}).get(key)
    return next((o.split("=", 1)[1] for o in run.get("overrides", []) if o.split("=", 1)[0] == key), None)


def run_label(run: dict, layout: Layout) -> str:
    """The row label of a run: its value of the layout's swept column, mapped to the paper's name."""
    choice = run_choice(run, layout)
    return layout.labels.get(choice, str(choice))


def pareto_figure(table: pd.DataFrame, tag: str, out: Path) -> list[Path]:
    """Accuracy against length, one point per row of the table (up and to the left is better)."""
    x, y = ("Len", "Acc") if "Len" in table else ("L-Avg", "Avg")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, row in table.iterrows():
        ax.scatter(row[x], row[y], marker="s" if label in ("Baseline", "Original") else "o")
        ax.annotate(label, (row[x], row[y]), fontsize=7, xytext=(4, 2), textcoords="offset points")
    ax.set_xlabel("Len-T (tokens of correct responses)" if x == "Len" else "mean Len-A over levels (tokens)")
    ax.set_ylabel("Acc (%)" if y == "Acc" else "mean accuracy over levels (%)")
    return save_figure(fig, out, f"{tag}_pareto")


def write_experiment(tag: str, root: str | Path = "logs", out: str | Path = "results") -> dict[str, Path]:
    if tag not in LAYOUTS:
        raise ValueError(f"unknown experiment tag {tag!r}; known: {sorted(LAYOUTS)}")
    layout, root, out = LAYOUTS[tag], Path(root), Path(out)
    frame = collect_metrics(root)
    frame = frame[frame["tags"].str.split(",").apply(lambda tags: tag in tags)]
    if frame.empty:
        raise FileNotFoundError(f"no run tagged {tag} below {root}: run `python run.py experiment={tag}` first")
    table = tldr_table(frame, layout) if layout.kind == "tldr" else paper_table(frame, layout)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.tex").write_text(to_latex(table, layout.caption, f"tab:{tag}"))
    table.to_csv(out / f"{tag}.csv", float_format="%.4f")
    runs = labelled_runs(root, tag, layout)
    png, pdf = budget_figure(runs, out, f"{tag}_budget")
    pareto_png, pareto_pdf = pareto_figure(table, tag, out)
    lengths_png, lengths_pdf = length_figure(runs, out, f"{tag}_lengths")
    return {
        "tex": out / f"{tag}.tex",
        "csv": out / f"{tag}.csv",
        "png": png,
        "pdf": pdf,
        "pareto_png": pareto_png,
        "pareto_pdf": pareto_pdf,
        "lengths_png": lengths_png,
        "lengths_pdf": lengths_pdf,
        "table": table,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tag", choices=sorted(LAYOUTS))
    parser.add_argument("root", nargs="?", default="logs")
    parser.add_argument("--out", default="results")
    args = parser.parse_args()
    written = write_experiment(args.tag, args.root, args.out)
    print(written.pop("table").round(2).to_string())
    for kind, path in written.items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
