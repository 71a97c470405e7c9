"""The tables of RESULTS.md, from made-up graded samples whose values are worked out by hand."""

import math
import shutil
import subprocess

import pandas as pd
import pytest

from analysis.runs import RowResult
from analysis.tables import budget_columns, dev_table, fmt_interval, k_table, per_level_table, to_latex
from tsq.evaluation.intervals import Interval
from tsq.stages.run_metrics import RunMetrics


def test_latex_table_escapes_what_latex_would_misread():
    table = pd.DataFrame({"Acc (%)": ["90.0 [88.0, 92.0]"], "Len-T change": ["-20.0%"]}, index=["Q_DYN & co"])
    tex = to_latex(table, "Demo.", "tab:demo")
    assert "\\toprule" in tex and "\\caption{Demo.}" in tex and "\\label{tab:demo}" in tex
    assert "Acc (\\%)" in tex and "-20.0\\%" in tex and "Q\\_DYN \\& co" in tex
    assert "\\begin{tabular}{lrr}" in tex


def graded(levels: dict[str, tuple[int, int, list[int]]]) -> pd.DataFrame:
    """Samples per level: (correct count, total, token counts of all of them)."""
    rows = []
    for level, (right, total, tokens) in levels.items():
        for i in range(total):
            rows.append({"level": level, "correct": i < right, "n_tokens": tokens[i], "problem_id": f"{level}-{i}"})
    return pd.DataFrame(rows)


def test_an_undefined_value_or_interval_is_named_not_printed_as_nan():
    assert fmt_interval(Interval(0.5, 0.25, 0.75), 100) == "50.0 [25.0, 75.0]"
    assert fmt_interval(Interval(5.0, math.nan, math.nan), digits=2) == "5.00 [no interval]"
    assert fmt_interval(Interval(math.nan, math.nan, math.nan)) == "undefined"


def test_tldr_layout_by_hand():
    """Per-level Acc and Len-A, their means, and A.C.R. = mean over levels of max(0, 1 - Len / Len_base)."""
    base = RowResult("Original", _pooled={"base": graded({"1": (9, 10, [100] * 10), "2": (5, 10, [200] * 10)})})
    short = RowResult("short", _pooled={"trained": graded({"1": (8, 10, [40] * 10), "2": (2, 10, [60] * 10)})})
    dynamic = RowResult("dynamic", _pooled={"trained": graded({"1": (9, 10, [50] * 10), "2": (5, 10, [220] * 10)})})
    table = per_level_table({"short": short, "dynamic": dynamic}, base)
    assert list(table.index) == ["Original", "short", "dynamic"]
    assert table.loc["Original", "Avg"] == "70.0" and table.loc["Original", "L-Avg"] == "150.0"
    assert table.loc["short", "A.C.R."] == "65.0%"  # (1 - 40/100 + 1 - 60/200) / 2
    assert table.loc["dynamic", "A.C.R."] == "25.0%"  # (1 - 50/100 + max(0, 1 - 220/200)) / 2
    assert table.loc["Original", "A.C.R."] == ""


def test_dev_table_marks_the_selected_setting_and_shows_a_row_with_nothing_correct():
    setting_a, setting_b = {"train.lr": 2e-5}, {"train.lr": 2e-3}
    selected = {
        "dpo": {
            "setting": setting_a,
            "dev": [
                {"setting": setting_a, "acc": 0.9, "len_t": 30.0},
                {"setting": setting_b, "acc": 0.0, "len_t": None},
            ],
        }
    }
    table = dev_table("ts_table4", selected)
    assert table["selected"].tolist() == ["yes", ""]
    assert table["dev Len-T"].tolist() == ["30.00", "none correct"] and table["row"].tolist() == ["DPO", "DPO"]


def test_k_table_has_a_column_per_run_and_a_row_per_k():
    records = [
        (RunMetrics(construction={"positives_per_problem": {"0": 2, "1": 5}}), "Shortest"),
        (RunMetrics(construction={"positives_per_problem": {"1": 3, "3": 4}}), "Q-DYN"),
        (RunMetrics(), "TL;DR"),  # no construction: no column
    ]
    table = k_table(records)
    assert list(table.columns) == ["Shortest", "Q-DYN"] and list(table.index) == [0, 1, 3]
    assert table.loc[1].tolist() == [5, 3] and table.loc[3].tolist() == [0, 4]


@pytest.mark.skipif(
    shutil.which("pdflatex") is None, reason="pdflatex is not installed (apt: texlive-latex-recommended)"
)
def test_generated_table_compiles_with_pdflatex(tmp_path):
    table = pd.DataFrame(
        {"Acc (%)": ["90.0 [88.0, 92.0]", "92.5 [91.0, 94.0]"], "Len-T change": ["", "-20.0%"]},
        index=["Baseline", "TokenSqueeze (KL refinement)"],
    )
    (tmp_path / "table.tex").write_text(to_latex(table, "Demo.", "tab:demo"))
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n\\input{table.tex}\n\\end{document}\n"
    )
    result = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_a_rows_seeds_are_averaged_in_the_k_table_and_their_counts_ranged_in_the_budget_columns():
    seeds = [
        RunMetrics(
            construction={"positives_per_problem": {"1": 4, "2": 6}},
            training={"pairs": 359, "steps": 50, "epochs": 2.0},
        ),
        RunMetrics(
            construction={"positives_per_problem": {"1": 3, "3": 2}},
            training={"pairs": 405, "steps": 50, "epochs": 2.5},
        ),
    ]
    table = k_table([(record, "TokenSqueeze") for record in seeds])
    # k=1: (4 + 3) / 2; k=2: (6 + 0) / 2; k=3: (0 + 2) / 2
    assert list(table.index) == [1, 2, 3] and table["TokenSqueeze"].tolist() == [3.5, 3.0, 1.0]
    budget = budget_columns(seeds, {"train.lr": 5e-6})
    assert budget == {"setting": "train.lr=5e-06", "pairs": "382 (359-405)", "steps": "50", "epochs": "2.25"}
    tldr = [RunMetrics(tldr={"history": [{"step": s} for s in (32, 64)], "selected": {"step": k}}) for k in (32, 64)]
    assert budget_columns(tldr, {})["checkpoint"] == "step 32; step 64"


def test_a_layout_naming_an_unknown_column_is_refused_with_the_file(tmp_path):
    from analysis.layouts import load_layouts

    (tmp_path / "exp.yaml").write_text("table:\n  group: choice.method\n  labels: {a: A}\n  columns: [Acc, NoSteps]\n")
    with pytest.raises(ValueError, match=r"exp.yaml: bad table layout .*unknown \['NoSteps'\]"):
        load_layouts(tmp_path)
