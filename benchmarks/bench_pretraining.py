"""Pretraining cost of the tiny base model per optimizer step, for several batch sizes, interleaved.

    python benchmarks/bench_pretraining.py [--batch-sizes 64,32] [--steps 60] [--runs 3] [--out results]

Each run is the real pretraining path (`TinyReasoningModel._pretrain`: teacher corpus, tokenization, the
Lightning loop) for `--steps` steps; runs alternate between batch sizes (A B A B ...) so that a noisy shared
machine slows both alike. Writes `bench_pretraining.csv` (every run) and prints the median and range of
seconds per step. The step count changes nothing per step except the learning-rate schedule.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from benchmarks.common import median_and_range  # noqa: E402
from tsq.data.synthetic import SyntheticWorld  # noqa: E402
from tsq.models.tiny import Architecture, Pretraining, TinyReasoningModel  # noqa: E402


def one_run(batch_size: int, steps: int, architecture: Architecture) -> float:
    """Wall seconds of pretraining `steps` steps at `batch_size` (into a throw-away folder)."""
    model = TinyReasoningModel(
        architecture=architecture,
        pretrain=Pretraining(steps=steps, batch_size=batch_size, warmup_steps=max(1, steps // 12)),
    )
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        model._pretrain(SyntheticWorld(), Path(out))
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="64,32")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=Architecture.hidden_size, help="smaller for a smoke run")
    parser.add_argument("--out", default="results")
    args = parser.parse_args()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    architecture = Architecture(hidden_size=args.hidden, intermediate_size=3 * args.hidden)
    records = []
    for run in range(args.runs):
        for batch_size in sizes:  # interleaved
            seconds = one_run(batch_size, args.steps, architecture)
            per_step = seconds / args.steps
            records.append({"run": run, "batch_size": batch_size, "seconds": seconds, "s_per_step": per_step})
            print(f"run {run} batch {batch_size}: {seconds:.1f} s, {seconds / args.steps:.3f} s per step", flush=True)
    frame = pd.DataFrame(records)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "bench_pretraining.csv", index=False)
    print(median_and_range(frame, "batch_size", ["s_per_step"]).to_string())


if __name__ == "__main__":
    main()
