"""Training throughput and peak memory: tsq's TokenSqueeze-style loss (DPO + SFT, 0.5/0.5) against TRL's
DPOTrainer configured as close as TRL allows (loss_type sigmoid + sft, loss_weights 0.5/0.5, precomputed
reference log-probs, its fused chunked LM head), on the same model, pairs, batch size and steps.

    python benchmarks/bench_train_vs_trl.py --model smollm2     # 3 interleaved runs each, ~1k-token rejected
    python benchmarks/bench_train_vs_trl.py --model smollm2 --runs 0 --memory_lengths 256,512,1024,2048
    python benchmarks/bench_train_vs_trl.py                     # tiny Llama, word vocabulary
    python benchmarks/bench_train_vs_trl.py --pairs 8 --batch 4 --hidden 32 --layers 1 --runs 1  # the test's size

Pairs have the length imbalance of real Long2Short data: chosen is a concise trace, rejected an
overthinking one about twice as long (`--model tiny`: the synthetic world's teacher in its word vocabulary;
`--model smollm2`: the same teacher's traces written out in English, "6 plus 1 gives 7 ...", tokenized by
SmolLM2's 49,152-word BPE, with the number of operands chosen so that rejected traces have about
`--rejected_tokens` tokens). Each run trains in its own child process; runs alternate tsq, TRL, tsq, TRL, ...
so that machine noise lands on both sides, and the table gives the median and range over `--runs` runs.
Reference log-probs are computed before the clock starts in both, both read the pairs in the same order
and clip gradients at 1. Throughput is completion tokens per second over steps 2..N (step 1 holds one-off
set-up in both). Memory is the peak resident set while training (sampled every 2 ms, children run with a
fixed mmap threshold so that freed tensors leave it), absolute and above the level before training.
Before timing, the loss of both on one identical batch is checked equal (exit 1 otherwise). Writes
bench_train_vs_trl.csv (summary), bench_train_vs_trl_runs.csv (every run) and
bench_train_vs_trl_memory.csv (peak memory against length).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import MEMORY_ENV, PeakRSS, median_and_range, smollm2_dir  # noqa: E402
from tsq.data.synthetic import SyntheticWorld, TeacherStyle, vocabulary  # noqa: E402
from tsq.training.logps import sequence_logps  # noqa: E402
from tsq.training.losses import PreferenceLoss  # noqa: E402

OVERTHINK = TeacherStyle(p_shortcut=0.0, p_check=0.95, p_again=0.9, p_filler=0.95, p_slip=0.0)
LOSS = PreferenceLoss(kind="dpo", eta=0.5, beta=0.1, sft_norm="token")  # = TRL sigmoid + sft at 0.5 / 0.5


def make_pairs(n: int, seed: int = 0, operands: tuple[int, ...] = (4, 5, 6), english: bool = False) -> list[dict]:
    """Concise (chosen) and overthinking (rejected) teacher traces of the same problems."""
    world = SyntheticWorld(operands=list(operands), split_sizes={"test": 1, "dev": 1, "train": 1})
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        problem = world.sample_problem(rng, set())
        chosen = world.teacher_response(problem, rng, TeacherStyle.concise())
        rejected = world.teacher_response(problem, rng, OVERTHINK)
        if english:
            question = f"Work out {in_english(problem.prompt.removesuffix(' = ?'))}, keeping only the last digit."
            pairs.append(
                {"prompt": CHATML.format(question), "chosen": in_english(chosen), "rejected": in_english(rejected)}
            )
        else:
            pairs.append({"prompt": problem.prompt, "chosen": chosen, "rejected": rejected})
    return pairs


CHATML = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
WORDS = {"<think>": "", "</think>": "The answer is", ";": ".\n\n", "=": "gives", "check": "let me check:",
         "again": "once more,"}  # fmt: skip


def in_english(trace: str) -> str:
    """A synthetic trace in words: "6 +1 = 7 ;" -> "6 plus 1 gives 7." (steps end with a blank line)."""
    words = []
    for word in trace.split():
        if word in WORDS:
            words.append(WORDS[word])
        elif word[:1] in "+-" and word[1:].isdigit():
            words.append(("plus " if word[0] == "+" else "minus ") + word[1:])
        else:
            words.append(word)
    return " ".join(w for w in words if w).replace(" .\n\n", ".\n\n").replace("\n\n ", "\n\n").strip()


def operands_for(tok, rejected_tokens: int) -> int:
    """The chain length whose rejected (overthinking) traces come closest to `rejected_tokens` tokens."""
    best, gap = 4, float("inf")
    for operands in range(4, 80):
        sample = make_pairs(4, seed=99, operands=(operands,), english=True)
        mean = sum(len(tok(p["rejected"], add_special_tokens=False)["input_ids"]) for p in sample) / len(sample)
        if abs(mean - rejected_tokens) < gap:
            best, gap = operands, abs(mean - rejected_tokens)
        if mean > rejected_tokens:
            break
    return best


def bench_pairs(args, tok, n: int, seed: int = 0) -> list[dict]:
    if args.model == "tiny":
        return make_pairs(n, seed)
    return make_pairs(n, seed, operands=(operands_for(tok, args.rejected_tokens),), english=True)


def load_model(args):
    """(model, tokenizer) of the benchmark: the tiny Llama (random weights) or SmolLM2-135M-Instruct."""
    if args.model == "tiny":
        return make_model(args.hidden, args.layers)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_dir(args.cache)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def make_model(hidden: int, layers: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    from tsq.models.tiny import build_word_tokenizer

    torch.manual_seed(seed)
    tok = build_word_tokenizer(vocabulary())
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return LlamaForCausalLM(config), tok


def trl_trainer(model, tok, pairs, batch: int, steps: int, out: Path, gradient_checkpointing: bool = False):
    import datasets
    import trl

    config = trl.DPOConfig(
        output_dir=str(out),
        loss_type=["sigmoid", "sft"],
        loss_weights=[0.5, 0.5],
        beta=0.1,
        per_device_train_batch_size=batch,
        max_steps=steps,
        precompute_ref_log_probs=True,
        learning_rate=5e-5,
        lr_scheduler_type="constant",
        use_cpu=True,
        bf16=False,
        report_to="none",
        max_length=8192,  # no truncation of the pairs here
        save_strategy="no",
        logging_steps=1,
        gradient_checkpointing=gradient_checkpointing,
        dataloader_num_workers=0,
        disable_tqdm=True,
        train_sampling_strategy="sequential",  # both frameworks see the same batches in the same order
    )
    return trl.DPOTrainer(
        model=model, args=config, train_dataset=datasets.Dataset.from_list(pairs), processing_class=tok
    )


def tsq_loss_on_trl_batch(model, batch: dict, loss: PreferenceLoss) -> torch.Tensor:
    """tsq's loss on the exact rows of a TRL batch (TRL stacks chosen rows, then rejected rows)."""
    prompts, completions = [], []
    for row, comp, mask in zip(
        batch["input_ids"].tolist(), batch["completion_mask"].tolist(), batch["attention_mask"].tolist(), strict=True
    ):
        start, end = comp.index(1), sum(mask)
        prompts.append(row[:start])
        completions.append(row[start:end])
    n = len(prompts) // 2
    logps = sequence_logps(model, prompts, completions, "bucket", rows_per_forward=2 * n)
    lens = torch.tensor([len(c) for c in completions])
    per_pair = loss(logps[:n], logps[n:], batch["ref_chosen_logps"], batch["ref_rejected_logps"], lens[:n], lens[n:])
    return per_pair.mean()


def positions(pairs: list[dict], batch: int, rows_per_forward: int, tok) -> dict[str, int]:
    """Token positions each layout feeds through the model over steps 2..N (padding included): TRL pads
    all 2B rows of a batch to the longest; tsq's bucket layout pads each forward of `rows_per_forward`
    length-sorted rows to its own longest. Compute scales with these (the profile is all matmuls)."""
    trl = tsq = 0
    for s in range(batch, len(pairs) - len(pairs) % batch, batch):
        rows = sorted(
            len(tok(p["prompt"], add_special_tokens=False)["input_ids"])
            + len(tok(p[k], add_special_tokens=False)["input_ids"])
            + 1
            for p in pairs[s : s + batch]
            for k in ("chosen", "rejected")
        )
        trl += len(rows) * rows[-1]
        tsq += sum(
            len(c) * c[-1] for c in (rows[i : i + rows_per_forward] for i in range(0, len(rows), rows_per_forward))
        )
    return {"trl": trl, "tsq": tsq}


def steady_seconds(stamps: list[float]) -> float:
    """Wall time of steps 2..N from the end-of-step timestamps (step 1 holds one-off set-up in both)."""
    if len(stamps) < 2:
        raise ValueError("need at least 2 steps to time steady state")
    return stamps[-1] - stamps[0]


def measured(train, stamps: list[float], profile: Path | None = None) -> dict:
    """Run `train()`: its wall time, steady-state time (from the step stamps) and peak resident memory.
    With `profile`, torch's profiler runs too and its table of operators by own CPU time is written there
    (the timing of a profiled run is not a throughput figure)."""
    from contextlib import nullcontext

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    profiler = torch_profile(activities=[ProfilerActivity.CPU]) if profile else nullcontext()
    with PeakRSS() as peak, profiler as prof:
        start = time.perf_counter()
        train()
        seconds = time.perf_counter() - start
    if profile:
        profile.write_text(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    return {"seconds": seconds, "steady_seconds": steady_seconds(stamps), "peak_rss_mb": peak.peak,
            "train_growth_mb": peak.growth_mb}  # fmt: skip


# ------------------------------------------------------------------------------------------------ children
def profile_path(args, framework: str) -> Path | None:
    return Path(args.out) / f"profile_{framework}.txt" if args.profile else None


def run_trl(args) -> dict:
    model, tok = load_model(args)
    pairs = bench_pairs(args, tok, args.pairs)
    trainer = trl_trainer(
        model, tok, pairs, args.batch, args.steps, Path(args.out) / "trl", args.gradient_checkpointing
    )
    from transformers import TrainerCallback

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, *_, **__):
            stamps.append(time.perf_counter())

    trainer.add_callback(Stamp())
    trainer.get_train_dataloader()  # precomputes reference log-probs (outside the clock)
    return measured(trainer.train, stamps, profile_path(args, "trl"))


def run_tsq(args) -> dict:
    import lightning as L
    from torch.utils.data import DataLoader

    from tsq.training.module import PreferenceModule
    from tsq.training.pairs_data import collate, tokenize_pairs
    from tsq.training.settings import TrainSettings

    model, tok = load_model(args)
    pairs = bench_pairs(args, tok, args.pairs)
    settings = TrainSettings(
        epochs=1,
        batch_size=args.batch,
        lr=5e-5,
        warmup_steps=0,
        max_length=8192,
        rows_per_forward=args.rows_per_forward,
        batching=args.batching,
        checkpoint_forwards=bool(args.checkpoint_forwards),
    )
    data = tokenize_pairs(tok, pairs, settings.max_length)
    with torch.no_grad():  # precomputed reference log-probs, as TRL's precompute_ref_log_probs
        for d in data:
            lp = sequence_logps(model, [d["prompt"]] * 2, [d["chosen"], d["rejected"]], "bucket", 2)
            d["ref_chosen"], d["ref_rejected"] = lp.tolist()
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    module = PreferenceModule(
        model.train(),
        PreferenceLoss(kind="dpo", eta=0.5, beta=0.1, sft_norm="token", name="dpo_sft"),
        settings,
        args.steps,
        tok.pad_token_id,
    )
    loader = DataLoader(data, batch_size=args.batch, shuffle=False, collate_fn=collate)  # sequential, as TRL's here

    stamps: list[float] = []

    class Stamp(L.Callback):
        def on_train_batch_end(self, *_):
            stamps.append(time.perf_counter())

    trainer = L.Trainer(
        max_steps=args.steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,  # TRL's max_grad_norm default
        callbacks=[Stamp()],
    )
    return measured(lambda: trainer.fit(module, loader), stamps, profile_path(args, "tsq"))


def first_step_losses(args) -> tuple[float, float]:
    """Both losses on one identical batch, policy moved off the reference so margins are not zero."""
    model, tok = load_model(args)
    pairs = bench_pairs(args, tok, args.batch, seed=1)
    trainer = trl_trainer(model, tok, pairs, args.batch, 1, Path(args.out) / "trl_check")
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
        model.eval()
        ours = float(tsq_loss_on_trl_batch(model, batch, LOSS))
        theirs = float(trainer._compute_loss(model, batch, return_outputs=False))
    return ours, theirs


# What each compared row runs: tsq's plain layout, tsq recomputing each forward in the backward
# (train.checkpoint_forwards: one forward's activations per step), TRL.
FRAMEWORKS = {
    "tsq": ("tsq", {"checkpoint_forwards": 0}),
    "tsq+ckpt": ("tsq", {"checkpoint_forwards": 1}),
    "trl": ("trl", {}),
}


def child_run(args, framework: str, **overrides) -> dict:
    """One training run of `framework` in a fresh process (its own memory and threads)."""
    child, settings = FRAMEWORKS[framework]
    options = {**{k: getattr(args, k) for k in CHILD_ARGS}, **settings, **overrides}
    cmd = [sys.executable, __file__, "--child", child] + [f"--{k}={v}" for k, v in options.items()]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **MEMORY_ENV}, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{framework} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


CHILD_ARGS = ("model", "pairs", "batch", "hidden", "layers", "batching", "rows_per_forward", "rejected_tokens",
              "gradient_checkpointing", "cache", "out", "profile")  # fmt: skip


def token_counts(tok, pairs: list[dict], skip: int) -> tuple[int, int]:
    """Completion tokens (EOS excluded) of all pairs, and of the pairs after the first `skip` (steps 2..N)."""
    lengths = [len(tok(p[k], add_special_tokens=False)["input_ids"]) for p in pairs for k in ("chosen", "rejected")]
    return sum(lengths), sum(lengths[2 * skip :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--pairs", type=int, default=None, help="default: 160 (tiny), 6 (smollm2)")
    parser.add_argument("--batch", type=int, default=None, help="pairs per step; default: 8 (tiny), 2 (smollm2)")
    parser.add_argument("--hidden", type=int, default=256, help="tiny model only")
    parser.add_argument("--layers", type=int, default=4, help="tiny model only")
    parser.add_argument("--rejected_tokens", type=int, default=1024, help="smollm2 only")
    parser.add_argument("--batching", default="bucket")
    parser.add_argument("--rows_per_forward", type=int, default=None, help="tsq rows per forward (default: batch)")
    parser.add_argument("--gradient_checkpointing", type=int, default=0, help="both frameworks (HF, per layer)")
    parser.add_argument("--checkpoint_forwards", type=int, default=0, help="tsq child only (see FRAMEWORKS)")
    parser.add_argument("--profile", type=int, default=0, help="write torch profiler tables (profile_*.txt)")
    parser.add_argument("--frameworks", default="tsq,trl", help=f"compared rows, in run order: {', '.join(FRAMEWORKS)}")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs per framework (0: memory table only)")
    parser.add_argument("--memory_lengths", default="", help="e.g. 256,512,1024,2048")
    parser.add_argument("--cache", default=os.environ.get("TSQ_CACHE_DIR", str(ROOT / ".cache" / "tsq")))
    parser.add_argument("--out", default=str(ROOT / "results" / "bench"))
    parser.add_argument("--child", choices=["tsq", "trl"], default=None)
    args = parser.parse_args()
    args.pairs = args.pairs or (160 if args.model == "tiny" else 6)
    args.batch = args.batch or (8 if args.model == "tiny" else 2)
    args.steps = args.pairs // args.batch
    args.rows_per_forward = args.rows_per_forward or args.batch
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.child:
        torch.set_num_threads(torch.get_num_threads())
        print(json.dumps({"tsq": run_tsq, "trl": run_trl}[args.child](args)))
        return
    ours, theirs = first_step_losses(args)
    _, tok = load_model(args)
    pairs = bench_pairs(args, tok, args.pairs)
    all_tokens, steady_tokens = token_counts(tok, pairs, args.batch)
    chosen = sum(len(tok(p["chosen"], add_special_tokens=False)["input_ids"]) for p in pairs) / len(pairs)
    rejected = sum(len(tok(p["rejected"], add_special_tokens=False)["input_ids"]) for p in pairs) / len(pairs)
    print(
        f"TokenSqueeze-style loss (DPO sigmoid + SFT, 0.5/0.5) vs TRL DPOTrainer on {args.model}; {args.pairs} pairs, "
        f"batch {args.batch}, {args.steps} steps; mean completion tokens chosen {chosen:.0f}, rejected "
        f"{rejected:.0f}; first-batch loss tsq {ours:.6f} vs TRL {theirs:.6f}",
        flush=True,
    )
    out = Path(args.out)
    frameworks = args.frameworks.split(",")
    if "trl" not in frameworks or not set(frameworks) <= set(FRAMEWORKS):
        raise SystemExit(f"--frameworks must include trl and name only {sorted(FRAMEWORKS)}, got {args.frameworks}")
    runs = []
    for run in range(args.runs):
        for framework in frameworks:  # interleaved: tsq, TRL, tsq, TRL, ...
            result = child_run(args, framework)
            runs.append({"framework": framework, "run": run, **result,
                         "tokens_per_s": all_tokens / result["seconds"],
                         "steady_tokens_per_s": steady_tokens / result["steady_seconds"]})  # fmt: skip
            print(f"run {run} {framework}: {runs[-1]['steady_tokens_per_s']:.1f} tokens/s, "
                  f"peak {result['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
    if runs:
        frame = pd.DataFrame(runs)
        frame.to_csv(out / "bench_train_vs_trl_runs.csv", index=False)
        table = median_and_range(frame, "framework", ["steady_tokens_per_s", "peak_rss_mb", "train_growth_mb"])
        counted = positions(pairs, args.batch, args.rows_per_forward, tok)
        table["positions"] = table["framework"].map(lambda name: counted[FRAMEWORKS[name][0]])
        trl = table.set_index("framework").loc["trl"]
        table["speedup_vs_trl"] = table["steady_tokens_per_s_median"] / trl["steady_tokens_per_s_median"]
        table["memory_vs_trl"] = table["train_growth_mb_median"] / trl["train_growth_mb_median"]
        table["position_ratio"] = trl["positions"] / table["positions"]
        table = table.assign(model=args.model, pairs=args.pairs, batch=args.batch, steps=args.steps,
                             chosen_tokens=chosen, rejected_tokens=rejected, first_loss_tsq=ours,
                             first_loss_trl=theirs)  # fmt: skip
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        table.to_csv(out / "bench_train_vs_trl.csv", index=False)
        print(f"csv: {out / 'bench_train_vs_trl.csv'}")
    if args.memory_lengths:
        rows = []
        for length in map(int, args.memory_lengths.split(",")):
            for framework in frameworks:
                result = child_run(args, framework, pairs=2, batch=1, rejected_tokens=length)
                rows.append({"rejected_tokens": length, "framework": framework, **result})
                print(f"{length} tokens {framework}: peak {result['peak_rss_mb']:.0f} MB, "
                      f"+{result['train_growth_mb']:.0f} MB while training", flush=True)  # fmt: skip
        memory = pd.DataFrame(rows)
        memory.to_csv(out / "bench_train_vs_trl_memory.csv", index=False)
        print("\npeak memory while training, one pair per step (MB above the level before training)")
        print(memory.pivot(index="rejected_tokens", columns="framework", values="train_growth_mb").round(0).to_string())
    if abs(ours - theirs) > 1e-4 * max(1.0, abs(theirs)):
        raise SystemExit(f"first-batch losses differ: tsq {ours} vs TRL {theirs}")


if __name__ == "__main__":
    main()
