"""Training throughput and peak memory: tsq's TokenSqueeze-style loss (DPO + SFT, 0.5/0.5) against TRL's
DPOTrainer configured as close as TRL allows (loss_type sigmoid + sft, loss_weights 0.5/0.5, precomputed
reference log-probs), on the same tiny Llama, the same pairs, batch size and number of steps.

    python benchmarks/bench_train_vs_trl.py                        # 160 pairs, batch 8: 20 steps
    python benchmarks/bench_train_vs_trl.py --rows_per_forward 16  # tsq: all 16 rows in one forward
    python benchmarks/bench_train_vs_trl.py --pairs 16 --batch 4   # the test's tiny size

Pairs have the length imbalance of real Long2Short data: chosen is a concise teacher trace, rejected an
overthinking one several times longer. Each framework trains in its own child process (so peak RSS is
its own); reference log-probs are computed before the clock starts in both, both read the pairs in the
same order and clip gradients at 1. Throughput is completion tokens per second over steps 2..N (step 1
holds one-off set-up in both; whole-run figures are printed too). Before timing, the loss of both on
one identical batch is checked equal. Prints a table and writes bench_train_vs_trl.csv.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tsq.data.synthetic import SyntheticWorld, TeacherStyle, vocabulary  # noqa: E402
from tsq.training.logps import sequence_logps  # noqa: E402
from tsq.training.losses import PreferenceLoss  # noqa: E402

OVERTHINK = TeacherStyle(p_shortcut=0.0, p_check=0.95, p_again=0.9, p_filler=0.95, p_slip=0.0)
LOSS = PreferenceLoss(kind="dpo", eta=0.5, beta=0.1, sft_norm="token")  # = TRL sigmoid + sft at 0.5 / 0.5


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    world = SyntheticWorld(operands=[4, 5, 6], split_sizes={"test": 1, "dev": 1, "train": 1})
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        problem = world.sample_problem(rng, set())
        chosen = world.teacher_response(problem, rng, TeacherStyle.concise())
        rejected = world.teacher_response(problem, rng, OVERTHINK)
        pairs.append({"prompt": problem.prompt, "chosen": chosen, "rejected": rejected})
    return pairs


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


def trl_trainer(model, tok, pairs, batch: int, steps: int, out: Path):
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
        max_length=512,
        save_strategy="no",
        logging_steps=1,
        gradient_checkpointing=False,
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
            len(tok(p["prompt"])["input_ids"]) + len(tok(p[k])["input_ids"]) + 1
            for p in pairs[s : s + batch]
            for k in ("chosen", "rejected")
        )
        trl += len(rows) * rows[-1]
        tsq += sum(
            len(c) * c[-1] for c in (rows[i : i + rows_per_forward] for i in range(0, len(rows), rows_per_forward))
        )
    return {"trl": trl, "tsq": tsq}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def steady_seconds(stamps: list[float]) -> float:
    """Wall time of steps 2..N from the end-of-step timestamps (step 1 holds one-off set-up in both)."""
    if len(stamps) < 2:
        raise ValueError("need at least 2 steps to time steady state")
    return stamps[-1] - stamps[0]


def measured(train, stamps: list[float]) -> dict:
    """Run `train()` and report its wall time, steady-state time (from the step stamps) and peak RSS."""
    before = peak_rss_mb()
    start = time.perf_counter()
    train()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "steady_seconds": steady_seconds(stamps), "peak_rss_mb": peak_rss_mb(),
            "rss_before_mb": before}  # fmt: skip


# ------------------------------------------------------------------------------------------------ children
def run_trl(args) -> dict:
    model, tok = make_model(args.hidden, args.layers)
    pairs = make_pairs(args.pairs)
    trainer = trl_trainer(model, tok, pairs, args.batch, args.steps, Path(args.out) / "trl")
    from transformers import TrainerCallback

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, *_, **__):
            stamps.append(time.perf_counter())

    trainer.add_callback(Stamp())
    trainer.get_train_dataloader()  # precomputes reference log-probs (outside the clock)
    return measured(trainer.train, stamps)


def run_tsq(args) -> dict:
    import lightning as L
    from torch.utils.data import DataLoader

    from tsq.training.preference import PreferenceModule, TrainSettings, collate, tokenize_pairs

    model, tok = make_model(args.hidden, args.layers)
    pairs = make_pairs(args.pairs)
    settings = TrainSettings(
        epochs=1,
        batch_size=args.batch,
        lr=5e-5,
        warmup_steps=0,
        max_length=512,
        rows_per_forward=args.rows_per_forward,
        batching=args.batching,
    )
    data = tokenize_pairs(tok, pairs, settings.max_length)
    with torch.no_grad():  # precomputed reference log-probs, as TRL's precompute_ref_log_probs
        for d in data:
            lp = sequence_logps(model, [d["prompt"]] * 2, [d["chosen"], d["rejected"]], "bucket", 2)
            d["ref_chosen"], d["ref_rejected"] = lp.tolist()
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
    return measured(lambda: trainer.fit(module, loader), stamps)


def first_step_losses(args) -> tuple[float, float]:
    """Both losses on one identical batch, policy moved off the reference so margins are not zero."""
    model, tok = make_model(args.hidden, args.layers)
    pairs = make_pairs(args.batch, seed=1)
    trainer = trl_trainer(model, tok, pairs, args.batch, 1, Path(args.out) / "trl_check")
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
        model.eval()
        ours = float(tsq_loss_on_trl_batch(model, batch, LOSS))
        theirs = float(trainer._compute_loss(model, batch, return_outputs=False))
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=160)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batching", default="bucket")
    parser.add_argument("--rows_per_forward", type=int, default=None, help="tsq rows per forward (default: batch)")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench"))
    parser.add_argument("--child", choices=["tsq", "trl"], default=None)
    args = parser.parse_args()
    args.steps = args.pairs // args.batch
    args.rows_per_forward = args.rows_per_forward or args.batch
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.child:
        torch.set_num_threads(torch.get_num_threads())
        print(json.dumps({"tsq": run_tsq, "trl": run_trl}[args.child](args)))
        return
    ours, theirs = first_step_losses(args)
    pairs = make_pairs(args.pairs)
    # the word-level tokenizer makes one token per word; steps 2..N see pairs[batch:] in order in both
    completion_tokens = sum(len(p["chosen"].split()) + len(p["rejected"].split()) for p in pairs)
    steady_tokens = sum(len(p["chosen"].split()) + len(p["rejected"].split()) for p in pairs[args.batch :])
    rows = []
    for name in ("trl", "tsq"):
        cmd = [sys.executable, __file__, "--child", name] + [
            f"--{k}={getattr(args, k)}"
            for k in ("pairs", "batch", "hidden", "layers", "batching", "rows_per_forward", "out")
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{name} child failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(
            {
                "framework": name,
                "pairs": args.pairs,
                "batch": args.batch,
                "steps": args.steps,
                "completion_tokens": completion_tokens,
                **result,
                "tokens_per_s": completion_tokens / result["seconds"],
                "steady_tokens_per_s": steady_tokens / result["steady_seconds"],
            }
        )
    table = pd.DataFrame(rows)
    _, tok = make_model(8, 1)
    table["positions"] = table["framework"].map(positions(pairs, args.batch, args.rows_per_forward, tok))
    trl_row = table.framework == "trl"
    table["speedup_vs_trl"] = table["steady_tokens_per_s"] / table.loc[trl_row, "steady_tokens_per_s"].item()
    table["position_ratio"] = table.loc[trl_row, "positions"].item() / table["positions"]
    chosen = sum(len(p["chosen"].split()) for p in pairs) / len(pairs)
    rejected = sum(len(p["rejected"].split()) for p in pairs) / len(pairs)
    print(
        f"\nTokenSqueeze-style loss (DPO sigmoid + SFT, 0.5/0.5) vs TRL DPOTrainer; mean completion words "
        f"chosen {chosen:.0f}, rejected {rejected:.0f}; first-batch loss tsq {ours:.6f} vs TRL {theirs:.6f}"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    out = Path(args.out) / "bench_train_vs_trl.csv"
    table.assign(first_loss_tsq=ours, first_loss_trl=theirs).to_csv(out, index=False)
    print(f"csv: {out}")
    if abs(ours - theirs) > 1e-4 * max(1.0, abs(theirs)):
        raise SystemExit(f"first-batch losses differ: tsq {ours} vs TRL {theirs}")


if __name__ == "__main__":
    main()
