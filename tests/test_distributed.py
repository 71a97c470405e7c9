"""Several processes for real: DDP training on CPU (2 processes over gloo) against one process with the
same global batch, and `python run.py trainer=ddp_cpu` end to end. (Two runs sharing one empty cache:
tests/test_run.py's fault-injection slice.)"""

import json
import re
import subprocess
from pathlib import Path

import pytest
from helpers import PAIRS, compose_config, start

ROOT = Path(__file__).resolve().parents[1]
ENV = {"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "WANDB_MODE": "offline"}


def train(tmp_path: Path, name: str, model: Path, pairs: Path, devices: int, batch_size: int) -> dict:
    """Train through tests/ddp_train.py in its own processes; rank 0's loss curve and policy path."""
    job = {
        "cache": str(tmp_path / f"cache-{name}"),
        "model": str(model),
        "pairs": str(pairs),
        "out": str(tmp_path / f"{name}.json"),
        "trainer": {"accelerator": "cpu", "devices": devices, "strategy": "ddp" if devices > 1 else "auto",
                    "enable_progress_bar": False},
        "train": {"epochs": 2, "batch_size": batch_size, "lr": 1e-3, "seed": 3},
    }  # fmt: skip
    (tmp_path / f"{name}-job.json").write_text(json.dumps(job))
    done = start("tests/ddp_train.py", str(tmp_path / f"{name}-job.json"), env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp_path / f"{name}.json").read_text())


@pytest.mark.slow
def test_two_process_ddp_gives_the_one_process_loss_curve_and_weights(micro_model_dir, tmp_path):
    """32 pairs, global batch 8: 2 processes x 4 pairs against 1 process x 8 pairs, 8 optimizer steps."""
    import torch
    from safetensors.torch import load_file

    rows = PAIRS * 8
    pairs = tmp_path / "pairs" / "pairs.jsonl"
    pairs.parent.mkdir()
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    one = train(tmp_path, "one", micro_model_dir, pairs, devices=1, batch_size=8)
    ddp = train(tmp_path, "ddp", micro_model_dir, pairs, devices=2, batch_size=4)
    assert len(one["losses"]) == len(ddp["losses"]) == 8
    assert one["losses"][0] != one["losses"][-1]  # training moved the loss
    assert ddp["losses"] == pytest.approx(one["losses"], rel=1e-4, abs=1e-5)
    a = load_file(Path(one["policy"]) / "model.safetensors")
    b = load_file(Path(ddp["policy"]) / "model.safetensors")
    base = load_file(micro_model_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-4), name
    assert any(not torch.equal(a[n], base[n]) for n in a)  # the compared weights are trained ones
    summary = json.loads((Path(ddp["policy"]) / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 8


def run_ddp(args: list[str], cache: Path, logs: Path) -> subprocess.CompletedProcess:
    """`python run.py` with its logs (every rank's) below `logs`: Lightning's launcher starts rank 1 from rank 0."""
    args = [*args, f"paths.log_dir={logs}", "trainer.enable_progress_bar=false"]
    return start("run.py", *args, env={**ENV, "TSQ_CACHE_DIR": str(cache)})


def built_stages(text: str) -> list[str]:
    return re.findall(r"stage (\w+): built ", text)


@pytest.mark.slow
def test_run_py_with_ddp_builds_each_stage_once_and_rank_0_alone_evaluates(tmp_path):
    cache, logs = tmp_path / "cache", tmp_path / "logs"
    done = run_ddp(["debug=smoke", "trainer=ddp_cpu", "train.batch_size=4"], cache, logs)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0 = next(logs.rglob("run.log")).read_text()
    rank1 = next(logs.rglob("train_ddp_process_1.log")).read_text()
    assert sorted(built_stages(rank0)) == sorted(
        ["base_model", "eval", "samples", "refined", "pairs", "pairs_export", "ref_logps", "policy", "eval"]
    )
    assert built_stages(rank1) == []  # rank 1 found every artifact built and wrote none
    assert "stage policy: cache miss" in rank1 and "rank 1: training done" in rank1
    assert "trained_eval" not in rank1
    metrics = json.loads(next(logs.rglob("metrics.json")).read_text())
    assert metrics["training"]["processes"] == 2
    assert {r["role"] for r in metrics["rows"]} == {"base", "trained"}


@pytest.mark.slow
def test_a_ddp_trainer_is_refused_for_tldr_and_inside_a_local_sweep(tmp_path):
    from tsq.stages.recipe import build_parts

    cfg = compose_config(["debug=smoke", "trainer=ddp_cpu", "steps=[base_eval,tldr]"])
    with pytest.raises(ValueError, match="tldr trains in one process"):
        build_parts(cfg)
    args = ("-m", "debug=smoke", "trainer=ddp_cpu", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    done = start("run.py", *args, env={**ENV, "TSQ_CACHE_DIR": str(tmp_path / "cache")}, timeout=300)
    assert done.returncode != 0 and "inside a -m sweep" in done.stderr
    assert not (tmp_path / "cache" / "base_model").exists()  # refused before any compute
