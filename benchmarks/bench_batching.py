"""Policy forward + backward over the default pair set in each `train.batching` layout.

    python benchmarks/bench_batching.py                 # default world, base model and pairs (cached)
    python benchmarks/bench_batching.py debug=smoke

Builds (or loads from the cache) the base model and the default preference pairs, then times one
pass of summed completion log-probs plus backward over all pairs, in batches of `train.batch_size`
pairs, for `bucket`, `packed` and `padded`, and checks the three give the same log-probs. Prints
completion tokens per second and writes `bench_batching.csv` in the run's output folder.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
import pandas as pd
import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tsq.stages.recipe import base_model_step, build_parts, construct_step, quiet_libraries  # noqa: E402
from tsq.training.logps import MODES, sequence_logps  # noqa: E402
from tsq.training.pairs_data import read_pairs, tokenize_pairs  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    ctx, parts = build_parts(cfg)
    ctx, handle = base_model_step(ctx, parts)
    settings = parts.train
    result = construct_step(ctx, handle, parts.sampling, parts.selector, parts.refiner, parts.pairs)
    tok = AutoTokenizer.from_pretrained(handle.path)
    model = AutoModelForCausalLM.from_pretrained(handle.path)
    data = tokenize_pairs(tok, read_pairs(result.pairs.path), settings.max_length)
    batches = [data[i : i + settings.batch_size] for i in range(0, len(data), settings.batch_size)]
    tokens = sum(len(d["chosen"]) + len(d["rejected"]) for d in data)
    rows, reference = [], None
    for mode in MODES:
        model.zero_grad()
        start = time.perf_counter()
        values = []
        for batch in batches:
            prompts = [d["prompt"] for d in batch] * 2
            completions = [d["chosen"] for d in batch] + [d["rejected"] for d in batch]
            logps = sequence_logps(
                model, prompts, completions, mode, settings.rows_per_forward, pad_id=tok.pad_token_id
            )
            logps.sum().backward()
            values.append(logps.detach())
        seconds = time.perf_counter() - start
        values = torch.cat(values)
        reference = values if reference is None else reference
        rows.append(
            {
                "batching": mode,
                "pairs": len(data),
                "completion_tokens": tokens,
                "seconds": seconds,
                "tokens_per_s": tokens / seconds,
                "max_logp_diff": float((values - reference).abs().max()),
            }
        )
    table = pd.DataFrame(rows)
    print(f"\nforward + backward over {len(data)} pairs, batches of {settings.batch_size} pairs, model {handle.name}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    out = Path(cfg.paths.output_dir) / "bench_batching.csv"
    table.to_csv(out, index=False)
    print(f"csv: {out}")


if __name__ == "__main__":
    main()
