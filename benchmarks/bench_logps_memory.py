"""Where the memory of a log-prob forward + backward goes on a real vocabulary (SmolLM2-135M, 49,152 words).

    python benchmarks/bench_logps_memory.py                          # 4 rows of 256, 512 and 1,024 tokens
    python benchmarks/bench_logps_memory.py --lengths 64 --rows 1    # the test's tiny size

Each (variant, length) runs in its own child process: load the model, measure the resident set, run one
forward and backward of summed completion log-probs, and report the peak resident set above that level
(sampled every 2 ms by a thread; children run with a fixed glibc mmap threshold, so freed tensors leave
the resident set and the peak is live memory, not allocator reuse). A warm-up on a short row runs first,
so parameter gradients and lazy initialisation are not counted. Variants:

* `full`: the path tsq used before (and TRL before 1.16): full-vocabulary logits for every position,
  `log_softmax` in fp32, gather of the targets;
* `chunked`: `tsq.training.logps.sequence_logps` (completion positions only, `chunk_tokens` at a time,
  recomputed in the backward);
* `chunked_gc`: the same with the model's gradient checkpointing (activations recomputed per layer);
* `body`: the transformer body alone (hidden states, no vocabulary projection): what is left when the
  head costs nothing; `body_gc` with gradient checkpointing.

`full - body` is what the vocabulary projection costs; `body` is activations (attention included).
Prints a table and writes bench_logps_memory.csv.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import MEMORY_ENV, PeakRSS, smollm2_dir  # noqa: E402

VARIANTS = ("full", "chunked", "chunked_gc", "body", "body_gc")
PROMPT_TOKENS = 32


def full_vocab_logps(model, ids: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return logp.gather(-1, ids[:, 1:, None]).squeeze(-1)[:, PROMPT_TOKENS - 1 :].sum(-1)


def child(args) -> dict:
    from transformers import AutoModelForCausalLM

    from tsq.training.logps import sequence_logps

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir(Path(args.cache))).train()
    if args.variant.endswith("_gc"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def step(ids: torch.Tensor) -> None:
        if args.variant == "full":
            value = full_vocab_logps(model, ids).sum()
        elif args.variant.startswith("chunked"):
            prompts = [row[:PROMPT_TOKENS] for row in ids.tolist()]
            completions = [row[PROMPT_TOKENS:] for row in ids.tolist()]
            value = sequence_logps(model, prompts, completions, "bucket", rows_per_forward=args.rows).sum()
        else:
            value = model.base_model(input_ids=ids).last_hidden_state.float().sum()
        value.backward()

    # Warm-up on a short row: lazy initialisation and the parameters' gradient buffers (kept, zeroed) are
    # then outside the measurement, which sees only what grows with length.
    step(torch.randint(100, model.config.vocab_size, (1, PROMPT_TOKENS + 8)))
    model.zero_grad(set_to_none=False)
    ids = torch.randint(100, model.config.vocab_size, (args.rows, args.length))
    with PeakRSS() as peak:
        start = time.perf_counter()
        step(ids)
        seconds = time.perf_counter() - start
    return {"growth_mb": peak.growth_mb, "seconds": seconds, "rss_before_mb": peak.start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="256,512,1024")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--cache", default=os.environ.get("TSQ_CACHE_DIR", str(ROOT / ".cache" / "tsq")))
    parser.add_argument("--out", default=str(ROOT / "results" / "bench"))
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--variant", default="chunked")
    parser.add_argument("--length", type=int, default=256)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    smollm2_dir(Path(args.cache))  # convert once, before any child measures
    env = {**os.environ, **MEMORY_ENV}
    rows = []
    for length in map(int, args.lengths.split(",")):
        for variant in args.variants.split(","):
            cmd = [sys.executable, __file__, "--child", f"--variant={variant}", f"--length={length}",
                   f"--rows={args.rows}", f"--cache={args.cache}"]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{variant} at {length} tokens failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            logits_gb = args.rows * length * 49152 * 4 / 2**30
            rows.append({"tokens": length, "variant": variant, **result, "one_fp32_logits_gb": logits_gb})
            print(f"{length:>6} {variant:<11} +{result['growth_mb']:8.0f} MB  {result['seconds']:6.1f} s", flush=True)
    table = pd.DataFrame(rows)
    wide = table.pivot(index="tokens", columns="variant", values="growth_mb").reindex(columns=args.variants.split(","))
    print(f"\npeak resident memory above the loaded model (MB), forward + backward of {args.rows} rows (SmolLM2, fp32)")
    print(wide.round(0).to_string())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "bench_logps_memory.csv", index=False)
    print(f"csv: {out / 'bench_logps_memory.csv'}")


if __name__ == "__main__":
    main()
