"""Sampling-stage wall time by executor: `executor=ray` with 1 replica (all CPUs) against 2 replicas (half each), and
`executor=local`, interleaved (+bench.reps rounds of local, ray x1, ray x2), each build into an empty store.

    python benchmarks/bench_executors.py                       # default world: 64 training problems x 16 samples
    python benchmarks/bench_executors.py +bench.problems=32 +bench.reps=3

Every build writes the same artifact (checked: the samples files are byte-identical). Prints the median and range
over rounds and writes bench_executors.csv in the run's output folder. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import median_and_range  # noqa: E402
from tsq.cache import ArtifactStore  # noqa: E402
from tsq.sampling.executors import LocalExecutor, RayExecutor  # noqa: E402
from tsq.stages.recipe import base_model_step, build_parts, quiet_libraries  # noqa: E402
from tsq.stages.samples import samples  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    bench = cfg.get("bench") or {}
    problems, reps = int(bench.get("problems", 64)), int(bench.get("reps", 3))
    cpus = os.cpu_count() or 2
    ctx, parts = build_parts(cfg)
    ctx, model = base_model_step(ctx, parts)
    settings = replace(parts.sampling, max_problems=problems, shard_size=max(1, problems // 8))
    executors = {
        "local": LocalExecutor(),
        "ray x1": RayExecutor(replicas=1, cpus_per_replica=cpus),
        "ray x2": RayExecutor(replicas=2, cpus_per_replica=cpus / 2),
    }
    RayExecutor().connect()  # the cluster's start-up is not part of any build
    runs, files = [], {}
    for rep in range(reps):
        for name, executor in executors.items():
            with tempfile.TemporaryDirectory() as store:
                run_ctx = replace(ctx, store=ArtifactStore(store), executor=executor)
                start = time.perf_counter()
                built = samples(run_ctx, model, settings)
                seconds = time.perf_counter() - start
                files.setdefault(name, (built.artifact.path / "samples.jsonl").read_bytes())
                ctx.sampler.release()
            rows = len(built.frame)
            runs.append({"executor": name, "rep": rep, "seconds": seconds, "responses_per_s": rows / seconds})
            print(f"round {rep}: {name}: {seconds:.1f} s ({rows / seconds:.1f} responses/s)", flush=True)
    identical = len(set(files.values())) == 1
    frame = pd.DataFrame(runs)
    summary = median_and_range(frame, "executor", ["seconds", "responses_per_s"])
    print(summary.to_string())
    print(f"samples files identical across executors: {identical}")
    frame.to_csv(Path(cfg.paths.output_dir) / "bench_executors.csv", index=False)
    if not identical:
        raise SystemExit("the executors wrote different samples")


if __name__ == "__main__":
    main()
