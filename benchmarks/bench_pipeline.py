"""Pipeline wall times: `python run.py` cold (empty cache) and warm, then a 2x3 multirun on that cache.

    python benchmarks/bench_pipeline.py                      # default sizes (~20 min on 2 CPU cores)
    python benchmarks/bench_pipeline.py debug=smoke          # any run.py overrides are passed through
    python benchmarks/bench_pipeline.py debug=smoke "--sweep=loss=dpo,sft"   # another sweep

Every run writes per-step wall times into its metrics.json (`timings`). The multirun
(`selector=qdyn,qfix loss=dpo,sft,dpol`) reuses the base model and the sampled responses; its total is
compared with the sum of its jobs' own step times, which shows what the sweep adds (process and Hydra
start-up, model loading) and that sampling is not repeated. Prints a table and writes bench_pipeline.csv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["selector=qdyn,qfix", "loss=dpo,sft,dpol"]


def run(args: list[str], cache: Path, out: Path) -> float:
    env = {**os.environ, "TSQ_CACHE_DIR": str(cache), "WANDB_MODE": "offline"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], env=env, cwd=out, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"run.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def timings(metrics: Path) -> dict:
    return json.loads(metrics.read_text())["timings"]


def main() -> None:
    sweep = next((a.removeprefix("--sweep=").split() for a in sys.argv[1:] if a.startswith("--sweep=")), SWEEP)
    overrides = [a for a in sys.argv[1:] if not a.startswith("--sweep=")]
    out = Path(tempfile.mkdtemp(prefix="tsq-bench-pipeline-"))
    cache = Path(os.environ.get("TSQ_BENCH_CACHE", out / "cache"))  # kept afterwards when given
    if cache.exists() and any(cache.iterdir()):
        raise SystemExit(f"{cache} is not empty: the cold run needs an empty cache")
    rows = []
    for name in ("cold", "warm"):
        seconds = run([*overrides, f"hydra.run.dir={out / name}"], cache, out)
        rows.append({"run": name, "jobs": 1, "wall_s": seconds, **timings(out / name / "metrics.json")})
    seconds = run(["-m", *overrides, *sweep, f"hydra.sweep.dir={out / 'sweep'}"], cache, out)
    jobs = [timings(p) for p in sorted((out / "sweep").glob("*/metrics.json"))]
    summed = pd.DataFrame(jobs).sum().to_dict()
    rows.append({"run": "multirun " + " ".join(sweep), "jobs": len(jobs), "wall_s": seconds, **summed})
    table = pd.DataFrame(rows)
    steps = [c for c in table.columns if c not in ("run", "jobs", "wall_s")]
    table["steps_s"] = table[steps].sum(axis=1)
    table["outside_steps_s"] = table["wall_s"] - table["steps_s"]
    print(f"\npython run.py {' '.join(overrides)}: wall and step seconds (multirun: step times summed over jobs)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    csv = Path(os.environ.get("TSQ_BENCH_OUT", ROOT / "results" / "bench"))
    csv.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv / "bench_pipeline.csv", index=False)
    print(f"csv: {csv / 'bench_pipeline.csv'}")


if __name__ == "__main__":
    main()
