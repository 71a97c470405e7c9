"""A generating stage's wall time by executor: `executor=ray` with 1 replica (all CPUs) against 2 replicas (half
each), and `executor=local`, interleaved (+bench.reps rounds of local, ray x1, ray x2), each build into an empty store.

    python benchmarks/bench_executors.py                       # default world: 64 training problems x 16 samples
    python benchmarks/bench_executors.py +bench.problems=32 +bench.reps=3
    python benchmarks/bench_executors.py +bench.stage=refined refine_budget.shard_traces=8   # KL refinement

`+bench.stage=refined` times the `refined` stage instead, on samples built once beforehand (not timed), in shards
of `refine_budget.shard_traces` traces. Every build writes the same artifact: sampling files are checked
byte-identical; refinement records are checked identical but for the last digits of the accepted KLs (to a
relative 1e-3), which follow the torch thread count (2 threads in `local` and `ray x1`, 1 per replica in `ray x2`;
measured: `local` and `ray x1` byte-identical, `ray x2` 6 of 181 KLs off by at most 5e-5 relative, every chosen
step the same). Prints the median and range over rounds and writes bench_executors.csv in the run's output folder.
Run it on an otherwise idle machine.
"""

from __future__ import annotations

import json
import math
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
from tsq.selection import select_all  # noqa: E402
from tsq.stages.recipe import base_model_step, build_parts, quiet_libraries  # noqa: E402
from tsq.stages.refined import read_refined, refined  # noqa: E402
from tsq.stages.samples import SAMPLES_FILE, samples  # noqa: E402


def same_refinement(a: list[dict], b: list[dict]) -> bool:
    """The same refined records (texts, steps chosen, counts), accepted KLs equal to a relative 1e-3 (their last
    digits follow the torch thread count: BLAS reduction order)."""

    def without_kl(records: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "accepted_kl"} for r in records]

    kls = [(x, y) for r, q in zip(a, b, strict=True) for x, y in zip(r["accepted_kl"], q["accepted_kl"], strict=True)]
    return without_kl(a) == without_kl(b) and all(math.isclose(x, y, rel_tol=1e-3) for x, y in kls)


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    bench = cfg.get("bench") or {}
    problems, reps = int(bench.get("problems", 64)), int(bench.get("reps", 3))
    cpus = os.cpu_count() or 2
    ctx, parts = build_parts(cfg)
    ctx, model = base_model_step(ctx, parts)
    settings = replace(parts.sampling, max_problems=problems, shard_size=max(1, problems // 8))
    stage = bench.get("stage", "samples")
    if stage not in ("samples", "refined"):
        raise SystemExit(f"+bench.stage must be samples or refined, got {stage!r}")
    executors = {
        "local": LocalExecutor(),
        "ray x1": RayExecutor(replicas=1, cpus_per_replica=cpus),
        "ray x2": RayExecutor(replicas=2, cpus_per_replica=cpus / 2),
    }
    if stage == "refined":  # the samples it refines, built once (not timed)
        sampled = samples(ctx, model, settings)
        ctx.sampler.release()
        problems_by_id = {p.id: p for p in settings.problems(ctx.world)}
        selected = select_all(sampled.frame, parts.selector)
    RayExecutor().connect()  # the cluster's start-up is not part of any build
    runs, outputs = [], {}
    for rep in range(reps):
        for name, executor in executors.items():
            with tempfile.TemporaryDirectory() as store:
                run_ctx = replace(ctx, store=ArtifactStore(store), executor=executor)
                start = time.perf_counter()
                if stage == "samples":
                    built = samples(run_ctx, model, settings)
                    seconds, rows = time.perf_counter() - start, len(built.frame)
                    outputs.setdefault(name, (built.artifact.path / SAMPLES_FILE).read_bytes())
                else:
                    artifact = refined(run_ctx, model, sampled, selected, problems_by_id, parts.selector, parts.refiner)
                    seconds, records = time.perf_counter() - start, read_refined(artifact)
                    rows = len(records)
                    outputs.setdefault(name, records)
                ctx.sampler.release()
            unit = "responses" if stage == "samples" else "traces"
            runs.append({"executor": name, "rep": rep, "seconds": seconds, f"{unit}_per_s": rows / seconds})
            print(f"round {rep}: {name}: {seconds:.1f} s ({rows / seconds:.1f} {unit}/s)", flush=True)
    first = next(iter(outputs.values()))
    if stage == "samples":
        identical = all(out == first for out in outputs.values())
    else:
        identical = all(same_refinement(first, out) for out in outputs.values())
        for name, records in outputs.items():  # kept for a look when they differ
            path = Path(cfg.paths.output_dir) / f"refined-{name.replace(' ', '_')}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in records))
    frame = pd.DataFrame(runs)
    summary = median_and_range(frame, "executor", ["seconds", frame.columns[-1]])
    print(summary.to_string())
    print(f"{stage} identical across executors: {identical}")
    frame.to_csv(Path(cfg.paths.output_dir) / "bench_executors.csv", index=False)
    if not identical:
        raise SystemExit(f"the executors wrote different {stage}")


if __name__ == "__main__":
    main()
