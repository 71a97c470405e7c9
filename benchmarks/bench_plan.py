"""How far `python -m tsq.plan` is from a measured run: the plan (throughputs measured here, `+plan.measure=true`),
then the run itself (`python run.py` with the same overrides, in a fresh output folder), step by step.

    python benchmarks/bench_plan.py debug=smoke seed=7
    python benchmarks/bench_plan.py sampling=paper sampling.max_problems=64 eval.max_problems=40 \
        train.max_steps=20 seed=7

Use a `seed` whose artifacts are not cached yet (the base model may be: the plan does not cover building it). Prints
planned and measured seconds per recipe step, twice planned: with the plan's default response length and with the
length the run then measured, and with that length and the run's counts (positives refined, pairs, tokens per
step), so the throughput model and the assumptions are judged apart; all at the throughputs measured once, before
the run. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tsq.cache import Artifact  # noqa: E402
from tsq.plan import Plan, Throughput, plan  # noqa: E402
from tsq.stages.refined import read_refined  # noqa: E402

# which plan stages make up each step of the recipe (metrics.json timings)
STEP_STAGES = {
    "base_eval": ("eval (base)",),
    "construct": ("samples", "refined"),
    "train": ("ref_logps", "policy", "tldr_policy", "rl_policy"),
    "trained_eval": ("eval (trained)",),
}


def planned_steps(overrides: list[str], rate: Throughput | None = None) -> tuple[dict[str, float], Plan]:
    """Planned seconds per recipe step, at throughputs measured here or, given `rate`, at those (no new probe: only
    the token counts change)."""
    if rate is None:
        made = plan([*overrides, "+plan.measure=true"])
    else:
        unused = ["+plan.generate_tokens_per_s=1", "+plan.score_tokens_per_s=1", "+plan.train_tokens_per_s=1"]
        made = replace(plan([*overrides, *unused]), rate=rate)
    seconds = {c.stage: c.seconds(made.rate) for c in made.costs}
    steps = {step: sum(seconds.get(s, 0.0) for s in stages) for step, stages in STEP_STAGES.items()}
    return steps, made


def run_counts(record: dict) -> list[str]:
    """The plan's count assumptions as the run measured them, per training problem: traces refined (the `refined`
    artifact's records), pairs, and tokens per step (construction statistics of metrics.json)."""
    construction = record.get("construction")
    if not construction or not construction.get("problems"):
        return []
    problems = construction["problems"]
    artifact = next(a for a in record["artifacts"] if a["stage"] == "refined")
    refined = len(read_refined(Artifact("refined", artifact["key"], Path(artifact["path"]), built=False)))
    counts = [
        f"+plan.refined_per_problem={refined / problems}",
        f"+plan.pairs_per_problem={construction['pairs'] / problems}",
    ]
    if construction.get("step_len_before"):
        counts.append(f"+plan.step_tokens={construction['step_len_before']}")
    return counts


def main(overrides: list[str]) -> None:
    default, made = planned_steps(overrides)
    notes = made.notes
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "run.py", *overrides, f"hydra.run.dir={out}"], cwd=ROOT, check=True)
        record = json.loads((Path(out) / "metrics.json").read_text())
    base = next(r for r in record["rows"] if r["role"] == "base" and r["level"] == "all")
    measured_len = base["len_a"]
    informed, _ = planned_steps([*overrides, f"+plan.response_tokens={measured_len}"], made.rate)
    counts = run_counts(record)
    counted, _ = planned_steps([*overrides, f"+plan.response_tokens={measured_len}", *counts], made.rate)
    rows = []
    for step in STEP_STAGES:
        if step not in record["timings"]:
            continue
        took = record["timings"][step]
        rows.append(
            {
                "step": step,
                "measured (s)": round(took, 1),
                "planned (s)": round(default[step], 1),
                "planned / measured": round(default[step] / took, 2) if took else None,
                "planned, measured length (s)": round(informed[step], 1),
                "ratio": round(informed[step] / took, 2) if took else None,
                "planned, measured length and counts (s)": round(counted[step], 1),
                "ratio ": round(counted[step] / took, 2) if took else None,
            }
        )
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"plan's response length: {notes['response_tokens']}; the run's base Len-A: {measured_len:.1f}")
    print(f"throughputs (tokens/s): {made.rate}")
    print(f"the run's counts: {' '.join(counts) or 'none (no construction)'}")


if __name__ == "__main__":
    main(sys.argv[1:])
