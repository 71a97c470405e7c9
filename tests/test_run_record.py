"""What a finished run leaves for others: provenance in metrics.json, the policy as a carded HF directory,
and the HTML report, rendered in a real headless browser."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tsq.stages.model_card import markdown_table


def test_markdown_table_escapes_pipes_and_leaves_missing_cells_blank():
    rows = [{"a": 1, "b": 0.123456}, {"a": "x|y"}, {"a": 2, "b": float("nan")}]
    expected = ["| a | b |", "| --- | --- |", "| 1 | 0.1235 |", "| x\\|y |  |", "| 2 |  |"]
    assert markdown_table(rows, ["a", "b"]).splitlines() == expected


@pytest.mark.slow
def test_metrics_record_artifacts_versions_and_commit(smoke_run):
    folder, _ = smoke_run
    payload = json.loads((folder / "a" / "metrics.json").read_text())
    stages = [a["stage"] for a in payload["artifacts"]]
    for stage in ("base_model", "eval", "samples", "refined", "pairs", "pairs_export", "ref_logps", "policy"):
        assert stage in stages, stage
    for artifact in payload["artifacts"]:
        meta = json.loads((Path(artifact["path"]) / "artifact.json").read_text())
        assert meta["key"] == artifact["key"] and meta["stage"] == artifact["stage"]
    assert all(a["built"] for a in payload["artifacts"])  # a cold cache: this run built each of them
    packages = payload["provenance"]["packages"]
    import torch
    import transformers

    assert packages["torch"] == torch.__version__ and packages["transformers"] == transformers.__version__
    git = payload["provenance"]["git"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
    if head.returncode == 0:  # (a source checkout; an installed copy records None)
        assert git["commit"] == head.stdout.strip() and isinstance(git["dirty"], bool)
    resolved = (folder / "a" / "config.yaml").read_text()
    assert "${" not in resolved and "selector:" in resolved  # the resolved config next to metrics.json


@pytest.mark.slow
def test_the_run_policy_folder_is_a_carded_hf_model_directory(smoke_run):
    """`<run>/policy` loads with transformers as is, shares the cached weights, and its card names the base model,
    the method's settings, the data and the evaluation rows of this run."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, _ = smoke_run
    payload = json.loads((folder / "a" / "metrics.json").read_text())
    policy_dir = Path(payload["policy_path"])
    assert policy_dir == folder / "a" / "policy"
    cached = Path(next(a["path"] for a in payload["artifacts"] if a["stage"] == "policy"))
    model = AutoModelForCausalLM.from_pretrained(policy_dir)
    reference = AutoModelForCausalLM.from_pretrained(cached)
    weights, cached_weights = model.state_dict(), reference.state_dict()
    assert weights.keys() == cached_weights.keys() and all(torch.equal(weights[k], cached_weights[k]) for k in weights)
    assert AutoTokenizer.from_pretrained(policy_dir).eos_token == "<eos>"
    card = (policy_dir / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: transformers" in card
    assert "- **loss**:" in card and "name: tokensqueeze" in card and "- **selector**:" in card
    assert payload["construction"]["pairs_path"] in card and f"| {payload['construction']['pairs']} |" in card
    trained = next(r for r in payload["rows"] if r["role"] == "trained" and r["level"] == "all")
    len_t = "" if trained["len_t"] is None else f"{trained['len_t']:.4g}"  # (no correct response: no Len-T)
    assert f"| trained | {trained['benchmark']} | all | {trained['acc']:.4g} | {len_t} |" in card
    assert payload["provenance"]["git"] is None or payload["provenance"]["git"]["commit"] in card


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.slow
def test_the_run_report_renders_in_headless_chromium(smoke_run, tmp_path):
    """`python -m analysis.report <run dir>` writes one self-contained page; Chromium loads it, every figure
    decodes, and the page shows the metric table, the k table and a refined trace with marked edits."""
    browser = chromium()
    if browser is None:
        pytest.skip("needs Chromium (Debian: apt-get install chromium); .ci/run installs it")
    from analysis.report import run_report

    folder, _ = smoke_run
    page = run_report(folder / "a", out=tmp_path)
    text = page.read_text()
    assert 'src="http' not in text and 'href="http' not in text  # nothing loaded from elsewhere
    probe = tmp_path / "probe.html"  # the page plus a script that records what the browser decoded
    probe.write_text(text.replace("</body>", PROBE + "</body>"))
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom",
         probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert 'data-images="3"' in dom and 'data-broken="0"' in dom  # budget, lengths, k: all decoded
    assert "<th>len_t</th>" in dom and "Chosen positives per problem (k)" in dom and "<th>k</th>" in dom
    assert "<del>" in dom or "No refined trace changed" in dom


PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  document.body.dataset.images = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.broken = images.filter((i) => !i.complete || i.naturalWidth === 0).length;
});
</script>"""
