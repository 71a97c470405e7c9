import json
import shutil
import subprocess

import pandas as pd
import pytest

from analysis.collect import collect_metrics
from analysis.tables import LAYOUTS, paper_table, to_latex, write_experiment

EXPECTED = r"""\begin{table}
\centering
\caption{Demo.}
\label{tab:demo}
\begin{tabular}{lrrr}
\toprule
 & Acc & Len & AUC \\
\midrule
Baseline & 90.0 & 100.0 & \textbf{60.0} \\
A & \textbf{92.5} & 80.0 (-20.0\%) & 55.0 \\
B & 85.0 & \textbf{50.0 (-50.0\%)} & 50.0 \\
\bottomrule
\end{tabular}
\end{table}
"""


def test_latex_table_in_the_paper_layout():
    table = pd.DataFrame(
        {"Acc": [90.0, 92.5, 85.0], "Len": [100.0, 80.0, 50.0], "AUC": [60.0, 55.0, 50.0]}, index=["Baseline", "A", "B"]
    )
    assert to_latex(table, "Demo.", "tab:demo") == EXPECTED


def write_run(root, num, choice, acc, len_t):
    run = root / "multiruns" / "t" / str(num)
    run.mkdir(parents=True)
    rows = [
        {"role": "base", "level": "all", "acc": 0.9, "len_t": 40.0, "auc": 0.7},
        {"role": "trained", "level": "all", "acc": acc, "len_t": len_t, "auc": 0.8},
    ]
    curves = [
        {"role": s, "benchmark": "syn", "level": "all", "budget": b, "acc": a}
        for s in ("base", "trained")
        for b, a in ((10, 0.1), (20, 0.5), (40, 0.9))
    ]
    hists = [{"role": s, "edges": [0, 10, 20, 30], "counts": [1, 5, 2]} for s in ("base", "trained")]
    payload = {
        "rows": rows,
        "curves": curves,
        "length_histograms": hists,
        "run": {"tags": ["ts_table4"], "choices": {"loss": choice}},
    }
    (run / "metrics.json").write_text(json.dumps(payload))


def test_experiment_files_from_runs(tmp_path):
    for num, (choice, acc, len_t) in enumerate(
        [
            ("dpo", 0.8, 20.0),
            ("sft", 0.88, 30.0),
            ("dpo_sft", 0.9, 28.0),
            ("tokensqueeze", 0.91, 24.0),
            ("tokensqueeze_plus", 0.89, 25.0),
        ]  # fmt: skip
    ):
        write_run(tmp_path / "logs", num, choice, acc, len_t)
    written = write_experiment("ts_table4", tmp_path / "logs", tmp_path / "out")
    table = written["table"]
    labels = ["Baseline", "DPO", "SFT", "DPO+SFT", "TokenSqueeze (SFT + DPO-L, s = -1)", "SFT + DPO-L, s = +1"]
    assert list(table.index) == labels
    assert table.loc["DPO", "Acc"] == pytest.approx(80.0) and table.loc["Baseline", "Len"] == 40.0
    assert "\\textbf{20.0 (-50.0\\%)}" in written["tex"].read_text()
    assert pd.read_csv(written["csv"], index_col=0).shape == (6, 3)
    for kind in ("png", "pdf", "pareto_png", "pareto_pdf", "lengths_png", "lengths_pdf"):
        assert written[kind].stat().st_size > 1000


def test_missing_method_is_named(tmp_path):
    write_run(tmp_path / "logs", 0, "dpo", 0.8, 20.0)
    frame = collect_metrics(tmp_path / "logs")
    with pytest.raises(ValueError, match="sft"):
        paper_table(frame, LAYOUTS["ts_table4"])


@pytest.mark.skipif(
    shutil.which("pdflatex") is None, reason="pdflatex is not installed (apt: texlive-latex-recommended)"
)
def test_generated_table_compiles_with_pdflatex(tmp_path):
    table = pd.DataFrame(
        {"Acc": [90.0, 92.5], "Len": [100.0, 80.0], "AUC": [60.0, 55.0], "Steps": [5.0, 4.0], "StepLen": [6.0, 5.0]},
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


def test_tldr_layout_by_hand(tmp_path):
    """TL;DR Table 2 from three made-up runs: per-level Acc and Len-A, their means, and A.C.R."""
    base = [{"role": "base", "level": lv, "acc": a, "len_a": n} for lv, a, n in (("1", 0.9, 100.0), ("2", 0.5, 200.0))]
    base.append({"role": "base", "level": "all", "acc": 0.7, "len_a": 150.0})
    trained = {
        "short_only": (("1", 0.8, 40.0), ("2", 0.2, 60.0)),
        "static": (("1", 0.9, 60.0), ("2", 0.4, 150.0)),
        "dynamic": (("1", 0.9, 50.0), ("2", 0.5, 220.0)),
    }
    for num, (choice, levels) in enumerate(trained.items()):
        run = tmp_path / "multiruns" / "t" / str(num)
        run.mkdir(parents=True)
        rows = base + [{"role": "trained", "level": lv, "acc": a, "len_a": n} for lv, a, n in levels]
        rows.append({"role": "trained", "level": "all", "acc": 0.0, "len_a": 0.0})
        payload = {"rows": rows, "curves": [], "run": {"tags": ["tldr_table2"], "choices": {"tldr": choice}}}
        (run / "metrics.json").write_text(json.dumps(payload))
    written = write_experiment("tldr_table2", tmp_path, tmp_path / "out")
    table = written["table"]
    assert list(table.index) == ["Original", "SFT on short data", "Static mixture (1:1)", "TL;DR (dynamic)"]
    assert table.loc["Original", "Avg"] == pytest.approx(70.0) and table.loc["Original", "L-Avg"] == 150.0
    # short only: (1 - 40/100 + 1 - 60/200) / 2 = 0.65
    assert table.loc["SFT on short data", "A.C.R."] == pytest.approx(65.0)
    # dynamic: (1 - 50/100 + max(0, 1 - 220/200)) / 2 = 0.25 (the longer level counts as 0)
    assert table.loc["TL;DR (dynamic)", "A.C.R."] == pytest.approx(25.0)
    assert table.loc["TL;DR (dynamic)", "Avg"] == pytest.approx(70.0)
    assert pd.isna(table.loc["Original", "A.C.R."])
    tex = written["tex"].read_text()
    assert r"\textbf{65.0}" in tex and "--" in tex  # best A.C.R. in bold; no A.C.R. for the original
