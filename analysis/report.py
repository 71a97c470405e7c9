"""A report to look at: one self-contained HTML page per run (the tables' protocol has RESULTS.md).

    python -m analysis.report logs/tsq/runs/<time> [--out results/]  # one run folder (its metrics.json)

The page holds the metric rows, the figures (PNG embedded as data URIs, so the one file opens anywhere, offline),
the distribution of k, the number of positives the selector chose per problem (from the run's construction
statistics), and a few chosen traces before and after refinement with the removed tokens struck through and the
inserted ones underlined.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import html
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402
from jinja2 import Environment  # noqa: E402

from analysis.figures import budget_figure, k_figure, length_figure  # noqa: E402
from analysis.tables import k_table  # noqa: E402
from tsq.cache import atomic_write_text, read_jsonl  # noqa: E402
from tsq.evaluation.evaluate import display_rows  # noqa: E402
from tsq.sampling.graded import read_samples  # noqa: E402
from tsq.stages.refined import REFINED_FILE  # noqa: E402
from tsq.stages.run_metrics import RunMetrics  # noqa: E402
from tsq.stages.samples import SAMPLES_FILE  # noqa: E402

PAGE = Environment(autoescape=True).from_string("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
 body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
 table { border-collapse: collapse; margin: 1em 0; } td, th { border: 1px solid #ccc; padding: 3px 8px; }
 th { background: #f3f3f3; } td { text-align: right; } img { max-width: 48%; margin: 0.5%; }
 .trace { font-family: ui-monospace, monospace; white-space: pre-wrap; border: 1px solid #ddd; padding: 0.6em; }
 del { background: #fdd; color: #900; } ins { background: #dfd; color: #060; text-decoration: underline; }
 .meta { color: #666; font-size: 90%; }
</style></head><body>
<h1>{{ title }}</h1>
<p class="meta">{{ subtitle }}</p>
<h2>Tables</h2>
{% for name, table in tables %}<h3>{{ name }}</h3>{{ table | safe }}{% endfor %}
<h2>Figures</h2>
{% for name, uri in figures %}<img alt="{{ name }}" title="{{ name }}" src="{{ uri }}">{% endfor %}
<h2>Chosen positives per problem (k)</h2>
{% if k_table %}{{ k_table | safe }}{% else %}<p>These runs record no construction statistics.</p>{% endif %}
<h2>Traces before and after refinement</h2>
{% for t in traces %}
<h3>{{ t.run }}: problem {{ t.problem_id }} (sample {{ t.sample }}), {{ t.words_before }} → {{ t.words_after }} words,
{{ t.steps_accepted }} step(s) replaced</h3>
<div class="trace">{{ t.diff | safe }}</div>
{% else %}<p>No refined trace changed in these runs.</p>{% endfor %}
</body></html>
""")


def png_uri(path: Path) -> str:
    """A PNG file as a data URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def refined_records(record: RunMetrics) -> list[dict]:
    """The refined chosen traces of a run (its `refined` artifact, as recorded in metrics.json)."""
    paths = record.artifact_paths("refined")
    return read_jsonl(paths[-1] / REFINED_FILE) if paths else []


def word_diff_html(before: str, after: str) -> str:
    """`before` turned into `after`, escaped: removed words in <del>, inserted words in <ins>."""
    a, b = re.split(r"(\s+)", before), re.split(r"(\s+)", after)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(html.escape("".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(f"<del>{html.escape(''.join(a[i1:i2]))}</del>")
        if j2 > j1:
            out.append(f"<ins>{html.escape(''.join(b[j1:j2]))}</ins>")
    return "".join(out)


def trace_examples(records: list[dict], run: str, n: int = 3) -> list[dict]:
    """The `n` refined traces that lost the most words (ties: file order), with their marked diff."""
    changed = [r for r in records if r["text"] != r["original"]]
    changed.sort(key=lambda r: len(r["text"].split()) - len(r["original"].split()))
    return [
        {
            "run": run,
            "problem_id": r["problem_id"],
            "sample": r["sample"],
            "words_before": len(r["original"].split()),
            "words_after": len(r["text"].split()),
            "steps_accepted": r["steps_accepted"],
            "diff": word_diff_html(r["original"], r["text"]),
        }
        for r in changed[:n]
    ]


def k_section(record: RunMetrics, out: Path, name: str) -> tuple[str, list[Path]]:
    """The k table (problems per k) and its bar chart; ("", []) without construction."""
    table = k_table([(record, "trained")])
    if table.empty:
        return "", []
    return table.to_html(), k_figure(table, out, name)


def render(title: str, subtitle: str, tables, figures: list[Path], k_html: str, traces: list[dict]) -> str:
    return PAGE.render(
        title=title,
        subtitle=subtitle,
        tables=tables,
        figures=[(p.stem, png_uri(p)) for p in figures if p.suffix == ".png"],
        k_table=k_html,
        traces=traces,
    )


def run_report(run_dir: Path, out: Path) -> Path:
    """`<out>/<run folder name>.html` from one run's metrics.json."""
    if not (run_dir / "metrics.json").is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.json (not a finished tsq run folder)")
    record = RunMetrics.read(run_dir)
    name = run_dir.name
    out.mkdir(parents=True, exist_ok=True)
    series = [
        (role, read_samples(Path(where["path"]) / SAMPLES_FILE), "--" if role == "base" else "-")
        for role, where in record.evaluations.items()
    ]
    b_max = int(max((c["budget"] for c in record.curves), default=1))
    figures = budget_figure(series, b_max, out, f"{name}_budget") if series else []
    figures += length_figure(record.length_histograms, out, f"{name}_lengths")
    k_html, k_fig = k_section(record, out, f"{name}_k")
    rows = display_rows(record.rows)
    tables = [
        (
            "metrics (Acc and AUC in %; Acc, Len-T and Len-A with 95% bootstrap intervals over problems)",
            rows.to_html(index=False, float_format=lambda v: f"{v:.2f}"),
        )
    ]
    if record.construction:
        scalars = {k: v for k, v in record.construction.items() if isinstance(v, (int, float, str))}
        tables.append(("preference data", pd.Series(scalars, name="value").to_frame().to_html()))
    choices = record.run.get("choices", {})
    subtitle = ", ".join(f"{k}={v}" for k, v in choices.items() if v) or str(run_dir)
    traces = trace_examples(refined_records(record), name, 4)
    page = render(f"tsq run {name}", subtitle, tables, figures + k_fig, k_html, traces)
    return atomic_write_text(out / f"{name}.html", page)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run folder (with its metrics.json)")
    parser.add_argument("--out", default="results")
    args = parser.parse_args()
    print(run_report(Path(args.run_dir), Path(args.out)))


if __name__ == "__main__":
    main()
