"""Causal-LM training on (prompt, response) pairs: the LightningModule, batches and length bucketing.

Used to pretrain the tiny base model on teacher traces; later stages reuse the same batching.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence

import lightning as L
import torch
from torch.utils.data import Sampler
from transformers import PreTrainedTokenizerBase

from tsq.progress import StageProgress

IGNORE_INDEX = -100


class StepLog(L.Callback):
    """Log lines at every tenth of a run of `total` optimizer steps (step, loss, elapsed, time left), so that
    progress shows in a log file, where Lightning draws no progress bar (`tsq.progress.StageProgress`)."""

    def __init__(self, what: str, total: int, loss_key: str = "train/loss") -> None:
        self.what, self.total, self.loss_key = what, total, loss_key
        self.progress: StageProgress | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.progress = StageProgress(self.what, self.total, "step", initial=trainer.global_step, bar=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.progress is None or trainer.global_step == self.progress.done:
            return
        loss = trainer.callback_metrics.get(self.loss_key)
        note = f"loss {float(loss):.3f}" if loss is not None else "loss n/a"
        self.progress.update(trainer.global_step - self.progress.done, note)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.progress is not None:
            self.progress.close()


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], responses: Sequence[str]
) -> list[tuple[list[int], list[int]]]:
    """Token ids of each prompt and of each response followed by EOS."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    p_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    return [(p, r + [tokenizer.eos_token_id]) for p, r in zip(p_ids, r_ids, strict=True)]


def collate_pairs(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask and labels that score response tokens only."""
    width = max(len(p) + len(r) for p, r in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (p, r) in enumerate(examples):
        n = len(p) + len(r)
        ids[i, :n] = torch.tensor(p + r)
        labels[i, len(p) : n] = torch.tensor(r)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar length: sort within windows of `window` batches, then shuffle.

    Padding to the longest row of a random batch wastes close to half the compute on these traces.
    The window is kept small on purpose: with wide windows (HF's 50) the shortest batches hold nothing
    but one kind of trace (here, System-1 shortcuts), and a few such batches late in training skewed
    the tiny model's first-token choice from the teacher's 10% to 69%.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, window: int = 4) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.lengths, self.batch_size, self.seed, self.window = list(lengths), batch_size, seed, window
        self.epoch = 0

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        span = self.batch_size * self.window
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start : start + span], key=self.lengths.__getitem__)
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.0) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to `floor` (0: the last batches barely move it)."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def token_nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token NLL over labelled positions, and how many there were."""
    logits, targets = logits[:, :-1], labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return nll, (targets != IGNORE_INDEX).sum()


class CausalLMModule(L.LightningModule):
    """Next-token loss on response tokens of a Hugging Face causal LM.

    With `tokens_per_batch` set, the loss is the batch's summed token NLL divided by that constant, so
    every token weighs the same whichever batch it lands in. A per-batch token mean would not: with
    length-bucketed batches it up-weights the tokens of short sequences (here it pushed the tiny
    model's System-1 shortcut rate on the hardest level from the teacher's 10% to 73%).
    """

    def __init__(
        self,
        model,
        lr: float,
        weight_decay: float,
        warmup_steps: int,
        total_steps: int,
        tokens_per_batch: float | None = None,
        schedule: str = "cosine",
    ) -> None:
        super().__init__()
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be cosine or constant, got {schedule!r}")
        self.schedule = schedule
        self.model = model
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self.tokens_per_batch = tokens_per_batch

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll, count = token_nll_sum(logits, batch["labels"])
        loss = nll / (self.tokens_per_batch or count.clamp(min=1))
        self.log("train/loss", nll / count.clamp(min=1), prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.schedule == "constant":  # linear warm-up, then flat (TL;DR's setting)
            multiplier = lambda s: min(1.0, (s + 1) / max(1, self.warmup_steps))  # noqa: E731
        else:
            multiplier = lambda s: warmup_cosine(s, self.warmup_steps, self.total_steps)  # noqa: E731
        sched = torch.optim.lr_scheduler.LambdaLR(opt, multiplier)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
