"""KL refinement at the paper's K = 64 and L = 512 on SmolLM2-135M-Instruct (a real 49k BPE vocabulary): its cost
per trace against its floor, and shortest-first scoring (`refiner.score_batch`) against scoring every candidate.

    python benchmarks/bench_refine_floor.py                       # 1 trace x 6 steps, 2 interleaved repetitions
    python benchmarks/bench_refine_floor.py --traces 1 --steps 2 --reps 1 --k 8 --window 64   # a quick look

Traces: reference solutions of the shipped MATH500 file (at most --max-tokens, the most steps followed by a full
L-token window first), as the answer to their problem in SmolLM2's chat template; their first `--steps`
blank-line steps are refined (MATH500's solutions are short: 14 of 500 have any step with 512 tokens after it;
R1-Distill's traces of thousands of tokens would fill the window at almost every step).
Candidates: K samples per step from SmolLM2 at T 1.0 through the refiner's own `sample_candidates` (kept when they
end the step strictly shorter than the original, as refinement keeps them), drawn once and shared by every
scorer. Then, for reduction sum and mean, interleaved in each repetition, three scorers: every candidate of a step
in one batch (`score_batch` and `score_positions` null, how the protocol's artifacts were built), shortest first
(`score_batch` 8: stop at the first batch with one under epsilon), and shortest first dropping a candidate once its
KL so far reaches epsilon (`score_positions` 32: the window fed 32 tokens per pass).

Per scorer: candidates scored, window tokens fed, scoring wall time per trace, and its floor: the time inside
`TraceScorer.forward_kl`, the model's forward pass over each scored candidate window (candidate + L continuation
tokens, on the step prefix's cache) and its KL, which every scored candidate needs in full; the rest (one pass over
the trace, copying the prefix cache, building the batch) is overhead. `ratio` is wall / floor of the same scorer
(the dropping scorer feeds partial windows, so it has no such floor); `vs exhaustive floor` is wall / the
exhaustive scorer's floor. The steps each scorer chooses are compared and must be equal. Writes
bench_refine_floor.csv (every run) at --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import median_and_range, smollm2_dir  # noqa: E402
from tsq.refinement.kl import StepRefiner, TraceScorer, Windows, trace_step_spans  # noqa: E402
from tsq.sampling.hf import HFSampler  # noqa: E402

MATH500 = ROOT / "tsq" / "data" / "files" / "math500.jsonl"
DELIMITER = "\n\n"


@dataclass
class TimedScorer(TraceScorer):
    """A trace scorer that adds up the time of its floor (forward_kl) and of building batches."""

    floor_s: float = 0.0
    windows_s: float = 0.0

    def windows(self, a: int, b: int, cands: list[list[int]]) -> Windows | None:
        start = time.perf_counter()
        batch = super().windows(a, b, cands)
        self.windows_s += time.perf_counter() - start
        return batch

    def forward_kl(self, batch: Windows) -> list[float]:
        start = time.perf_counter()
        out = super().forward_kl(batch)
        self.floor_s += time.perf_counter() - start
        return out


def traces(tok, n: int, steps: int, window: int, max_tokens: int) -> list[tuple[list[int], list[int], list]]:
    """(prompt ids, response ids, the first `steps` step spans) of the `n` MATH500 solutions of at most
    `max_tokens` tokens with the most steps followed by a full `window` of original tokens."""
    ranked = []
    for row in (json.loads(line) for line in MATH500.read_text().splitlines()):
        r_ids = tok(row["solution"], add_special_tokens=False)["input_ids"]
        spans = trace_step_spans(tok, r_ids, DELIMITER)
        if len(r_ids) <= max_tokens:
            ranked.append((-sum(len(r_ids) - b >= window for _, b in spans), row["problem"], r_ids, spans))
    out = []
    for _, problem, r_ids, spans in sorted(ranked, key=lambda x: x[0])[:n]:
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": problem}], tokenize=False, add_generation_prompt=True
        )
        out.append((tok(prompt, add_special_tokens=False)["input_ids"], r_ids, spans[:steps]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6, help="steps refined per trace (its first ones)")
    parser.add_argument("--max-tokens", type=int, default=900, help="longest solution taken as a trace")
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--max-step-tokens", type=int, default=64)
    parser.add_argument("--score-batch", type=int, default=8)
    parser.add_argument("--score-positions", type=int, default=32)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--cache", default=str(ROOT / ".cache" / "tsq"))
    parser.add_argument("--out", default="bench_refine_floor.csv")
    args = parser.parse_args()

    sampler = HFSampler(smollm2_dir(args.cache), batch_size=64, progress=False)
    model, tok = sampler.model, sampler.tokenizer
    work_traces = traces(tok, args.traces, args.steps, args.window, args.max_tokens)
    prompts, responses, spans = (list(x) for x in zip(*work_traces, strict=True))
    sampling = StepRefiner(k=args.k, window=args.window, max_step_tokens=args.max_step_tokens, seed=0)
    start = time.perf_counter()
    candidates, counts = sampling.sample_candidates(sampler, prompts, responses, spans, DELIMITER)
    generation_s = time.perf_counter() - start
    work = [
        [(a, b, c) for (a, b), c in zip(sp, cs, strict=True) if c] for sp, cs in zip(spans, candidates, strict=True)
    ]
    n_steps, n_cands = sum(map(len, spans)), sum(len(c) for w in work for *_, c in w)
    windows = [min(args.window, len(r) - b) for r, sp in zip(responses, spans, strict=True) for _, b in sp]
    print(
        f"SmolLM2-135M, K {args.k}, L {args.window}: {len(work)} traces, {n_steps} steps (window tokens mean "
        f"{sum(windows) / len(windows):.0f}), {sum(s for s, _ in counts)} candidates sampled in {generation_s:.1f} s, "
        f"{n_cands} shorter than their step and distinct (scored); {torch.get_num_threads()} torch threads",
        flush=True,
    )

    runs, chosen = [], {}
    for rep in range(args.reps):
        for reduction in ("sum", "mean"):
            scorers = {  # interleaved: exhaustive, shortest first, shortest first + dropping, exhaustive, ...
                "exhaustive": (None, None),
                f"shortest first, {args.score_batch} at a time": (args.score_batch, None),
                f"... + drop at epsilon, {args.score_positions} tokens a pass": (
                    args.score_batch,
                    args.score_positions,
                ),
            }
            for scorer_name, (score_batch, positions) in scorers.items():
                refiner = StepRefiner(
                    k=args.k,
                    window=args.window,
                    reduction=reduction,
                    score_batch=score_batch,
                    score_positions=positions,
                )
                for t, (p, r, _) in enumerate(work_traces):
                    start = time.perf_counter()
                    scorer = TimedScorer.of(refiner, model, p, r)
                    choices, n_scored = refiner.choose(scorer, work[t])
                    wall = time.perf_counter() - start
                    chosen.setdefault((reduction, t), {})[scorer_name] = [c and c[0] for c in choices]
                    runs.append(
                        {
                            "reduction": reduction,
                            "scorer": scorer_name,
                            "rep": rep,
                            "trace": t,
                            "steps": len(work[t]),
                            "accepted": sum(c is not None for c in choices),
                            "scored": n_scored,
                            "candidates": sum(len(c) for *_, c in work[t]),
                            "window_tokens": scorer.forwarded_tokens,
                            "wall_s": wall,
                            "floor_s": scorer.floor_s if positions is None else float("nan"),
                            "batches_s": scorer.windows_s,
                        }
                    )
                    print({k: round(v, 3) if isinstance(v, float) else v for k, v in runs[-1].items()}, flush=True)
    table = pd.DataFrame(runs)
    table.to_csv(args.out, index=False)
    table["ratio"] = table["wall_s"] / table["floor_s"]
    exhaustive_floor = table[table["scorer"] == "exhaustive"].groupby(["reduction", "rep", "trace"])["floor_s"].sum()
    table["vs_exhaustive_floor"] = [
        w / exhaustive_floor[(red, rep, t)]
        for w, red, rep, t in zip(table["wall_s"], table["reduction"], table["rep"], table["trace"], strict=True)
    ]
    table["key"] = table["reduction"] + " | " + table["scorer"] + " | trace " + table["trace"].astype(str)
    summary = median_and_range(table, "key", ["wall_s", "floor_s", "ratio", "vs_exhaustive_floor"])
    counts = ["steps", "accepted", "candidates", "scored", "window_tokens"]
    counts_table = table.groupby("key", sort=False)[counts].first()
    print("\nper trace, median [min, max] over interleaved repetitions")
    print(summary.merge(counts_table.reset_index(), on="key").to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    differ = {key: by for key, by in chosen.items() if len({json.dumps(v) for v in by.values()}) > 1}
    print(f"chosen steps equal for every trace and reduction: {not differ}; csv: {args.out}")
    if differ:
        raise SystemExit(f"shortest-first and exhaustive scoring chose different steps: {differ}")


if __name__ == "__main__":
    main()
