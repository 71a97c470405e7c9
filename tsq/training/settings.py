"""`train=`: how the policy is optimised on the preference pairs (and `train.lora`, its LoRA adapters)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from tsq.training.pairs_data import OVERLENGTH


@dataclass
class TrainSettings:
    """`train=`: optimisation of the policy on the pairs."""

    epochs: int = 4
    # exactly this many optimizer steps, whatever the number of pairs (epochs is then unused): the pairs are
    # cycled through in fresh permutations, or only part of one is trained on. This is how rows with different
    # pair counts get the same training budget (the tables' protocol); null: `epochs` passes over the pairs.
    max_steps: int | None = None
    # pairs per optimizer step and process (micro-batch); with global_batch_size set, gradients are
    # accumulated over global_batch_size / (batch_size x processes) micro-batches per step
    batch_size: int = 16
    global_batch_size: int | None = None
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_steps: int = 5
    max_length: int = 512
    # what to do with pairs longer than max_length: error (default), drop, truncate (tokenize_pairs)
    overlength: str = "error"
    batching: str = "bucket"
    rows_per_forward: int = 16
    # completion positions projected to the vocabulary at once (memory: about 3 x chunk x vocab x 4 bytes)
    logit_chunk_tokens: int = 1024
    # keep no activations of any forward: the backward recomputes one forward of rows_per_forward rows at a
    # time (one extra forward pass; a step's activation memory becomes one forward's, not the batch's)
    checkpoint_forwards: bool = False
    seed: int = 0
    checkpoint_every: int = 20
    # precomputed: reference log-probs computed once per pair set and cached (no reference model in
    # memory while training); online: a frozen copy of the base model scores every batch (with LoRA,
    # the policy itself with its adapters disabled).
    reference: str = "precomputed"
    # Recompute activations in the backward pass (HF gradient checkpointing; per block under FSDP).
    gradient_checkpointing: bool = False
    # LoRA adapters through peft instead of full fine-tuning: {r, alpha, dropout, target_modules}
    lora: dict | None = None

    def key_material(self) -> dict:
        return asdict(self)

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "max_length", "rows_per_forward", "checkpoint_every", "logit_chunk_tokens"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"train.{key} must be a whole number > 0, got {value!r}")
        if self.max_steps is not None and (
            isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or self.max_steps <= 0
        ):
            raise ValueError(f"train.max_steps must be null or a whole number > 0, got {self.max_steps!r}")
        if self.global_batch_size is not None and (
            not isinstance(self.global_batch_size, int) or self.global_batch_size % self.batch_size
        ):
            raise ValueError(
                f"train.global_batch_size={self.global_batch_size} must be a multiple of "
                f"train.batch_size={self.batch_size} (it is reached by gradient accumulation)"
            )
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if self.warmup_steps < 0:
            raise ValueError(f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.max_steps is not None and self.warmup_steps > self.max_steps:
            raise ValueError(f"train.warmup_steps={self.warmup_steps} is longer than train.max_steps={self.max_steps}")
        if self.reference not in ("precomputed", "online"):
            raise ValueError(f"train.reference must be precomputed or online, got {self.reference!r}")
        if self.batching not in ("bucket", "packed", "padded"):
            raise ValueError(f"train.batching must be bucket, packed or padded, got {self.batching!r}")
        if self.overlength not in OVERLENGTH:
            raise ValueError(f"train.overlength must be one of {OVERLENGTH}, got {self.overlength!r}")
        if self.lora is not None:
            self.lora = LoraSettings(**self.lora).as_dict()

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per optimizer step that make `global_batch_size` pairs over `world_size` processes."""
        if self.global_batch_size is None:
            return 1
        per_step = self.batch_size * world_size
        if self.global_batch_size % per_step:
            raise ValueError(
                f"train.global_batch_size={self.global_batch_size} is not a multiple of train.batch_size="
                f"{self.batch_size} x {world_size} processes"
            )
        return self.global_batch_size // per_step

    def optimizer_steps(self, pairs: int, world_size: int) -> int:
        """Optimizer steps of a run over `pairs` pairs: `max_steps` when set, else `epochs` epochs (each process
        reads ceil(pairs / world_size) of them; Lightning steps on a partial accumulation at an epoch's end)."""
        if pairs and self.max_steps is not None:
            return self.max_steps
        return self.steps_per_epoch(pairs, world_size) * self.epochs

    def steps_per_epoch(self, pairs: int, world_size: int) -> int:
        batches = math.ceil(math.ceil(pairs / world_size) / self.batch_size)
        return math.ceil(batches / self.accumulation(world_size))


@dataclass
class LoraSettings:
    """`train.lora`: LoRA adapters (peft) on `target_modules`; `alpha` scales them by alpha / r."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"

    def __post_init__(self) -> None:
        if self.r <= 0 or self.alpha <= 0:
            raise ValueError(f"train.lora.r and train.lora.alpha must be > 0, got r={self.r}, alpha={self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"train.lora.dropout must lie in [0, 1), got {self.dropout}")

    def as_dict(self) -> dict:
        target = self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        return {"r": self.r, "alpha": self.alpha, "dropout": self.dropout, "target_modules": target}

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            task_type="CAUSAL_LM",
        )
