"""The figures of the tables and of one run's report: accuracy within a token budget, forced-budget accuracy, a
swept value's Acc and Len-T, the positives per problem, response lengths. Each is built here once and written as
PNG and PDF."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tsq.evaluation import metrics as M  # noqa: E402


def save_figure(fig, out: Path, name: str) -> list[Path]:
    """Write `name`.png and `name`.pdf into `out` and close the figure."""
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for path in paths:
        fig.savefig(path)
    plt.close(fig)
    return paths


def budget_figure(series: list[tuple[str, pd.DataFrame, str]], b_max: int, out: Path, name: str) -> list[Path]:
    """Accuracy within a token budget (post hoc: correct and at most B tokens) of each (label, graded samples,
    line style)."""
    grid = np.arange(1, b_max + 1)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, samples, style in series:
        ax.plot(grid, 100 * M.budget_curve(samples["n_tokens"], samples["correct"], grid), style, label=label)
    ax.set_xlabel("token budget B")
    ax.set_ylabel("correct within B tokens (%)")
    ax.legend(fontsize=7)
    return save_figure(fig, out, name)


def forced_figure(series: list[tuple[str, pd.DataFrame | None, str]], out: Path, name: str) -> list[Path]:
    """Forced-budget accuracy (cut at B, thinking closed, answered) against B of each (label, forced rows, line
    style); nothing when no series has forced rows."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    drawn = False
    for label, forced, style in series:
        if forced is None:
            continue
        curve = forced.groupby("budget")["correct"].mean()
        ax.plot(curve.index, 100 * curve.to_numpy(), style, label=label)
        drawn = True
    if not drawn:
        plt.close(fig)
        return []
    ax.set_xlabel("token budget B (reasoning cut at B, then answer)")
    ax.set_ylabel("forced-budget accuracy (%)")
    ax.legend(fontsize=7)
    return save_figure(fig, out, name)


def sweep_figure(points: pd.DataFrame, base_samples: pd.DataFrame, key: str, out: Path, name: str) -> list[Path]:
    """TokenSqueeze Figure 4's form: test Acc and Len-T against the swept value (`points`: value, acc, len_t and
    their interval bounds), intervals as error bars, the base model as a dashed line."""
    base_values = {
        "acc": 100 * M.accuracy(base_samples["correct"]),
        "len_t": M.mean_length_correct(base_samples["n_tokens"], base_samples["correct"]),
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


def k_figure(table: pd.DataFrame, out: Path, name: str) -> list[Path]:
    """Problems per k (positives chosen per problem), one bar group per k and one bar per column."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    table.plot.bar(ax=ax, rot=0)
    ax.set_xlabel("positives chosen per problem (k)")
    ax.set_ylabel("problems")
    ax.legend(fontsize=7)
    return save_figure(fig, out, name)


def length_figure(histograms: list[dict], out: Path, name: str) -> list[Path]:
    """Histograms of response lengths (all test samples) of each evaluated model of a run (its `role`)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for hist in histograms:
        style = "--" if hist["role"] == "base" else "-"
        ax.stairs(hist["counts"], hist["edges"], label=hist["role"], linestyle=style)
    ax.set_xlabel("response length (tokens)")
    ax.set_ylabel("responses")
    if histograms:
        ax.legend(fontsize=7)
    return save_figure(fig, out, name)


def frontier_figure(
    selected: dict[str, dict], labels: dict[str, str], base_acc: float, out: Path, name: str
) -> list[Path]:
    """Each row's dev accuracy-length frontier over the searched settings (one point per setting, in the grid's
    order, the selected one circled), with the base model's dev accuracy as a dashed line."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for row, choice in selected.items():
        points = [(e["len_t"], 100 * e["acc"]) for e in choice["dev"] if e["len_t"] is not None]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        (line,) = ax.plot(xs, ys, "-o", markersize=3, label=labels.get(row, row))
        chosen = next(e for e in choice["dev"] if e["setting"] == choice["setting"])
        if chosen["len_t"] is not None:
            ax.plot(chosen["len_t"], 100 * chosen["acc"], "o", markersize=9, mfc="none", color=line.get_color())
    ax.axhline(100 * base_acc, ls="--", c="gray", label="base model")
    ax.set_xlabel("dev Len-T (tokens)")
    ax.set_ylabel("dev Acc (%)")
    ax.legend(fontsize=6)
    return save_figure(fig, out, name)
