"""KL refinement: batched, KV-cached scoring against the straightforward per-candidate loop, and the refiner's
choice with every candidate scored against the exact shortcuts (`refine_budget.score_batch`, `score_positions`).

    python benchmarks/bench_refine.py                      # default world and base model (cached)
    python benchmarks/bench_refine.py debug=smoke bench.traces=4

Both scorers get the same traces, steps and candidates (sampled once from the model); the script
checks that their KL values agree, then prints steps/s of each, the speed-up, and how the batched
refiner's wall time splits between candidate generation and scoring. Then the refiner's choice (`choose`) with
every candidate scored, shortest first (`+bench.score_batch`, default 4 at a time) and shortest first dropping a
candidate once its KL so far reaches epsilon (`+bench.score_positions`, default 4 window tokens a pass),
interleaved `+bench.reps` times (default 3): candidates scored, window tokens fed, median and range of the wall
time; the chosen steps must agree. Writes `bench_refine.csv` in the run's output folder. A benchmark, not a test:
the suite only runs it at smoke size.
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import median_and_range  # noqa: E402
from tsq.cache import ArtifactStore  # noqa: E402
from tsq.refinement.kl import StepRefiner, TraceScorer, trace_step_spans  # noqa: E402
from tsq.stages.base_model import base_model  # noqa: E402
from tsq.stages.recipe import quiet_libraries  # noqa: E402


def candidate_work(refiner, sampler, world, problems, seed: int):
    """Teacher traces on `problems`, their step spans and model-sampled candidates per step."""
    rng = random.Random(seed)
    tok = sampler.tokenizer
    prompts = [p.prompt for p in problems]
    responses = [world.teacher_response(p, rng) for p in problems]
    p_ids = tok(prompts, add_special_tokens=False)["input_ids"]
    r_ids = tok(responses, add_special_tokens=False)["input_ids"]
    spans = [trace_step_spans(tok, r, world.step_delimiter) for r in r_ids]
    delimiter_id = tok.convert_tokens_to_ids(world.step_delimiter)
    start = time.perf_counter()
    candidates, _ = refiner.sample_candidates(sampler, p_ids, r_ids, spans, world.step_delimiter)
    generation = time.perf_counter() - start
    vocab = list(range(4, len(tok)))
    work = []
    for t, sp in enumerate(spans):
        steps = []
        for (a, b), cands in zip(sp, candidates[t], strict=True):
            if not cands:  # an untrained (smoke) model rarely closes a step: score random short steps instead
                cands = [[rng.choice(vocab) for _ in range(rng.randint(1, 3))] + [delimiter_id] for _ in range(4)]
            steps.append((a, b, cands))
        work.append(steps)
    return p_ids, r_ids, work, generation


def timed(fn, *args) -> tuple[list, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def compare_choice(refiner: StepRefiner, model, p_ids, r_ids, work, score_batch: int, positions: int, reps: int):
    """The refiner's choice with every candidate scored, shortest first, and shortest first dropping candidates once
    their KL so far reaches epsilon, interleaved; the choices must agree."""
    variants = {
        "every candidate": (None, None),
        f"shortest first, {score_batch} at a time": (score_batch, None),
        f"... + drop at epsilon, {positions} tokens a pass": (score_batch, positions),
    }
    runs, chosen = [], {}
    for rep in range(reps):
        for name, (batch, stop) in variants.items():
            variant = dataclasses.replace(refiner, score_batch=batch, score_positions=stop)
            start, scored, fed, picks = time.perf_counter(), 0, 0, []
            for p, r, w in zip(p_ids, r_ids, work, strict=True):
                scorer = TraceScorer.of(variant, model, p, r)
                choices, n = variant.choose(scorer, w)
                scored, fed = scored + n, fed + scorer.forwarded_tokens
                picks.append([c and c[0] for c in choices])
            chosen[name] = picks
            runs.append(
                {
                    "scorer": name,
                    "rep": rep,
                    "scored": scored,
                    "window_tokens": fed,
                    "seconds": time.perf_counter() - start,
                }
            )
    table = pd.DataFrame(runs)
    summary = median_and_range(table, "scorer", ["seconds"]).merge(
        table.groupby("scorer")[["scored", "window_tokens"]].first(), on="scorer"
    )
    accepted = sum(c is not None for trace in next(iter(chosen.values())) for c in trace)
    print(
        f"\nthe refiner's choice (epsilon {refiner.epsilon}, {accepted} steps accepted), {reps} interleaved repetitions"
    )
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if len({str(v) for v in chosen.values()}) > 1:
        raise SystemExit("the scorers chose different steps")
    print("chosen steps equal: True")


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    with open_dict(cfg):
        bench = cfg.get("bench", {})
    n_traces = int(bench.get("traces", 48))
    world = instantiate(cfg.data, _convert_="all")
    handle = base_model(world, ArtifactStore(cfg.paths.cache_dir), instantiate(cfg.model, _convert_="all"))
    sampler = instantiate(cfg.sampler)(model_path=handle.path)
    refiner = instantiate(cfg.refiner, _convert_="all")
    train = world.split("train")
    problems = train[:: max(1, len(train) // n_traces)][:n_traces]  # every level, not just the first
    p_ids, r_ids, work, generation = candidate_work(refiner, sampler, world, problems, seed=0)
    model = sampler.model

    fast, fast_s = timed(lambda: [refiner.score(model, p, r, w) for p, r, w in zip(p_ids, r_ids, work, strict=True)])
    slow, slow_s = timed(
        lambda: [refiner.score_loop(model, p, r, w) for p, r, w in zip(p_ids, r_ids, work, strict=True)]
    )
    a = np.array([x for trace in fast for step in trace for x in step])
    b = np.array([x for trace in slow for step in trace for x in step])
    finite = np.isfinite(a) & np.isfinite(b)
    max_diff = float(np.max(np.abs(a[finite] - b[finite]))) if finite.any() else 0.0
    steps = sum(len(w) for w in work)
    cands = sum(len(c) for w in work for *_, c in w)
    rows = [
        {
            "scorer": "per-candidate loop",
            "steps": steps,
            "candidates": cands,
            "seconds": slow_s,
            "steps_per_s": steps / slow_s,
        },
        {
            "scorer": "batched + KV cache",
            "steps": steps,
            "candidates": cands,
            "seconds": fast_s,
            "steps_per_s": steps / fast_s,
        },
    ]
    table = pd.DataFrame(rows)
    print(f"\nKL refinement scoring: {len(problems)} traces, {steps} steps, {cands} candidates, model {handle.name}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"speed-up {slow_s / fast_s:.2f}x; max |KL difference| {max_diff:.2e}")
    print(
        f"batched refiner wall time: generation {generation:.2f}s ({100 * generation / (generation + fast_s):.0f}%), "
        f"scoring {fast_s:.2f}s ({100 * fast_s / (generation + fast_s):.0f}%)"
    )
    compare_choice(
        refiner,
        model,
        p_ids,
        r_ids,
        work,
        int(bench.get("score_batch", 4)),
        int(bench.get("score_positions", 4)),
        int(bench.get("reps", 3)),
    )
    out = Path(cfg.paths.output_dir) / "bench_refine.csv"
    table.assign(speedup=slow_s / fast_s, max_kl_diff=max_diff, generation_s=generation).to_csv(out, index=False)
    print(f"csv: {out}")
    if max_diff > 1e-3:
        raise SystemExit(f"batched and looped KL disagree by {max_diff}")


if __name__ == "__main__":
    main()
