"""executor=ray builds the same sampling and refinement artifacts as executor=local (same key, byte-identical files)
on a local Ray cluster, with the HF sampler and with vLLM's CPU build; a failing replica fails the stage naming its
shards."""

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import compose_config

from tsq.cache import ArtifactStore
from tsq.sampling.base import SamplingParams
from tsq.sampling.executors import ModelReplica, RayExecutor, SampleShard
from tsq.selection import select_all
from tsq.stages.eval import evaluation
from tsq.stages.recipe import base_model_step, build_parts
from tsq.stages.refined import REFINED_FILE, read_refined, refined
from tsq.stages.samples import samples

pytest.importorskip("ray")

SMALL = [
    "debug=smoke",
    "model.pretrain.steps=60",
    "model.pretrain.warmup_steps=1",
    "sampling.shard_size=4",
    "refine_budget.shard_traces=2",
]


@pytest.fixture(scope="module")
def ray_cluster():
    """A local cluster, as executor=ray starts one, from a driver whose environment says OMP_NUM_THREADS=1 (as a
    run limited to one thread would): its replicas must still run at their own CPU count."""
    import signal

    import ray

    before = signal.getsignal(signal.SIGTERM)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")  # inherited by the cluster's processes, not read again by this one's torch
        RayExecutor(replicas=2).connect()
    assert signal.getsignal(signal.SIGTERM) == before  # the run's SIGTERM handling is kept
    yield
    ray.shutdown()


def built(tmp_path: Path, name: str, overrides: list[str], refine: bool = True):
    """The samples, the evaluation and the refined traces (KL refinement, 2 traces a shard) of the smoke base
    model, built into a store of their own."""
    cfg = compose_config([*SMALL, *overrides, f"paths.cache_dir={tmp_path / 'base'}", f"paths.output_dir={tmp_path}"])
    ctx, parts = build_parts(cfg)
    ctx, model = base_model_step(ctx, parts)  # one base model for both executors
    ctx = replace(ctx, store=ArtifactStore(tmp_path / name))
    try:
        sampled = samples(ctx, model, parts.sampling)
        evaluated = evaluation(ctx, model, parts.evaluator)
        if not refine:
            return sampled, evaluated, None
        problems = {p.id: p for p in parts.sampling.problems(ctx.world)}
        selected = select_all(sampled.frame, parts.selector)
        return sampled, evaluated, refined(ctx, model, sampled, selected, problems, parts.selector, parts.refiner)
    finally:
        ctx.sampler.release()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch at `n` threads, as a Ray replica of `n` CPUs runs (`ShardWorker`): KL scores are float sums whose last
    digits depend on the BLAS reduction order, hence on the thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_ray_builds_the_local_executors_artifacts_byte_for_byte(tmp_path, ray_cluster):
    with torch_threads(1):  # as a replica of cpus_per_replica=1
        local_samples, local_eval, local_refined = built(tmp_path, "local", [])
    ray_samples, ray_eval, ray_refined = built(tmp_path, "ray", ["executor=ray", "executor.replicas=2"])
    assert local_samples.key == ray_samples.key and local_eval.artifact.key == ray_eval.artifact.key
    assert len(local_samples.frame) > 4 * 6  # several shards of 4 problems x 6 samples
    for a, b in ((local_samples.artifact, ray_samples.artifact), (local_eval.artifact, ray_eval.artifact)):
        for name in ("samples.jsonl", "diagnostics.json"):
            assert (a.path / name).read_bytes() == (b.path / name).read_bytes(), name
    assert local_refined.key == ray_refined.key
    records = read_refined(local_refined)
    assert len(records) > 2 and any(r["steps_accepted"] for r in records)  # several shards; some steps refined
    assert (local_refined.path / REFINED_FILE).read_bytes() == (ray_refined.path / REFINED_FILE).read_bytes()


@pytest.mark.slow
def test_ray_with_vllm_on_one_replica_matches_local_vllm(tmp_path, ray_cluster):
    if importlib.util.find_spec("vllm") is None:
        if os.environ.get("TSQ_REQUIRE_VLLM"):
            pytest.fail("TSQ_REQUIRE_VLLM is set but vLLM is not installed")
        pytest.skip("vLLM is not installed")
    vllm = ["sampler=vllm", "sampler.cpu_kv_cache_gb=1"]
    with torch_threads(2):  # as a replica of cpus_per_replica=2
        local_samples, _, local_refined = built(tmp_path, "local", vllm)
    one_replica = ["executor=ray", "executor.replicas=1", "executor.cpus_per_replica=2"]
    ray_samples, _, ray_refined = built(tmp_path, "ray", [*vllm, *one_replica])
    assert local_samples.key == ray_samples.key
    assert (local_samples.artifact.path / "samples.jsonl").read_bytes() == (
        ray_samples.artifact.path / "samples.jsonl"
    ).read_bytes()
    assert local_refined.key == ray_refined.key and read_refined(local_refined)
    assert (local_refined.path / REFINED_FILE).read_bytes() == (ray_refined.path / REFINED_FILE).read_bytes()


@pytest.mark.slow
def test_a_replica_that_cannot_start_fails_the_stage_naming_its_shards(tmp_path, ray_cluster):
    def broken_sampler(**kwargs):
        raise OSError("no model here")

    jobs = [SampleShard(i, (), SamplingParams(), tmp_path / f"shard-{i}.jsonl") for i in range(2)]
    replica = ModelReplica(broken_sampler, tmp_path / "missing", None)
    with pytest.raises(RuntimeError, match=r"shard\(s\) \[0, 1\] failed"):
        RayExecutor(replicas=1, max_retries=0).run(jobs, None, lambda: None, replica, lambda i, a: None)
    assert not any(job.path.exists() for job in jobs)


@pytest.mark.parametrize(
    ("bad", "key"), [({"replicas": 0}, "executor.replicas"), ({"cpus_per_replica": 0}, "executor.cpus_per_replica")]
)
def test_bad_executor_settings_are_refused_by_key(bad, key):
    with pytest.raises(ValueError, match=key):
        RayExecutor(**bad)


def test_the_slurm_ray_recipe_is_valid_bash_and_its_run_composes(tmp_path):
    import shlex
    import subprocess

    from hydra.utils import instantiate

    script = Path(__file__).resolve().parents[1] / "experiments" / "slurm" / "ray_cluster.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text().replace("\\\n", " ")
    line = next(x for x in text.splitlines() if x.startswith("python run.py"))
    for name, value in {"TP": "2", "HEAD_IP": "10.0.0.1", "PORT": "6379", "REPLICAS": "16"}.items():
        line = line.replace(f'"${name}"', value).replace(f"${name}", value)
    overrides = [o for o in shlex.split(line)[2:] if o != "$@"]
    assert "$" not in " ".join(overrides), overrides  # every variable of the line is one this test fills in
    cfg = compose_config([*overrides, "model=r1_distill_qwen_7b", f"paths.output_dir={tmp_path}"])
    executor = instantiate(cfg.executor, _convert_="all")
    assert isinstance(executor, RayExecutor) and executor.address == "10.0.0.1:6379" and executor.replicas == 16
    assert executor.gpus_per_replica == cfg.sampler.tensor_parallel_size == 2
    assert cfg.sampler._target_.endswith("VLLMSampler") and cfg.sampling.n == 64  # preset=paper
