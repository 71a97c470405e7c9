"""Sampling overhead: tsq's HF sampler against a bare `model.generate` loop on the same prompts.

    python benchmarks/bench_sampling.py                      # the default base model (built or cached)
    python benchmarks/bench_sampling.py debug=smoke bench.problems=8

Both sides generate n completions per prompt for the test split's prompts, in batches of
`sampler.batch_size` rows with the same sampling settings; the bare loop does only tokenise → pad →
generate → decode. tsq adds length-sorted batching, per-batch seeding and EOS / stop bookkeeping.
Prints completions per second and writes bench_sampling.csv in the run's output folder.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tsq.cache import ArtifactStore  # noqa: E402
from tsq.pipeline import quiet_libraries  # noqa: E402
from tsq.sampling.base import SamplingParams  # noqa: E402
from tsq.sampling.hf import HFSampler  # noqa: E402


@torch.inference_mode()
def bare_generate(sampler: HFSampler, prompts: list[str], params: SamplingParams) -> int:
    """The plain loop: the same model and tokenizer, rows in the given order, no bookkeeping."""
    tok, model = sampler.tokenizer, sampler.model
    rows = [p for p in prompts for _ in range(params.n)]
    done = 0
    for s in range(0, len(rows), sampler.batch_size):
        enc = tok(rows[s : s + sampler.batch_size], add_special_tokens=False, padding=True, return_tensors="pt")
        out = model.generate(
            **enc,
            max_new_tokens=params.max_new_tokens,
            do_sample=True,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=0,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        done += len(tok.batch_decode(out[:, enc["input_ids"].shape[1] :]))
    return done


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    with open_dict(cfg):
        bench = cfg.get("bench", {})
    store = ArtifactStore(cfg.paths.cache_dir)
    world = instantiate(cfg.data, _convert_="all")
    handle = instantiate(cfg.model, _convert_="all").materialize(world, store)
    evaluator = instantiate(cfg.eval, _convert_="all")
    prompts = [p.prompt for p in world.split(evaluator.split)][: int(bench.get("problems", 100))]
    params = SamplingParams(
        n=evaluator.n_samples,
        max_new_tokens=evaluator.max_new_tokens,
        temperature=evaluator.temperature,
        top_p=evaluator.top_p,
        seed=0,
    )
    sampler = instantiate(cfg.sampler)(model_path=handle.path, progress=False)
    sampler.generate(prompts[:2], SamplingParams(n=1, max_new_tokens=4))  # warm-up
    rows = []
    for name, fn in (
        ("bare generate", lambda: bare_generate(sampler, prompts, params)),
        ("tsq HFSampler", lambda: sum(map(len, sampler.generate(prompts, params)))),
    ):
        torch.manual_seed(0)
        start = time.perf_counter()
        n = fn()
        seconds = time.perf_counter() - start
        rows.append({"sampler": name, "completions": n, "seconds": seconds, "completions_per_s": n / seconds})
    table = pd.DataFrame(rows)
    table["overhead"] = table["seconds"] / table.loc[0, "seconds"] - 1
    print(
        f"\n{len(prompts)} prompts x {params.n} samples, max {params.max_new_tokens} new tokens, "
        f"batch {sampler.batch_size} rows, model {handle.name}"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    out = Path(cfg.paths.output_dir) / "bench_sampling.csv"
    table.to_csv(out, index=False)
    print(f"csv: {out}")


if __name__ == "__main__":
    main()
