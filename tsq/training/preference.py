"""Preference training: the Lightning module, the pairs data, cached reference log-probs, the stage.

The reference model is the base policy frozen. Its log-probs are computed once per pair set and
stored as an artifact keyed on (pairs, base model, train.max_length, train.overlength), so no reference
model sits in memory while training, and a sweep over losses computes them once.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer

from tsq.cache import Artifact, Build, Stage
from tsq.context import RunContext
from tsq.models.base import ModelHandle
from tsq.progress import StageProgress
from tsq.training.checkpoints import AtomicCheckpointIO, resume_point
from tsq.training.lm import warmup_cosine
from tsq.training.logps import sequence_logps
from tsq.training.losses import PreferenceLoss
from tsq.training.strategy import build_strategy

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("prompt", "chosen", "rejected")
PAIRS_FILE = "pairs.jsonl"


def read_pairs(path: str | Path) -> list[dict]:
    """Rows of a pairs JSONL file; a missing field or an empty chosen/rejected names file and row."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, row {n}: not JSON ({err})") from err
            for key in REQUIRED_FIELDS:
                if key not in row:
                    raise ValueError(f"{path}, row {n}: missing field {key!r}")
                if not isinstance(row[key], str) or (key != "prompt" and not row[key].strip()):
                    raise ValueError(f"{path}, row {n}: field {key!r} is empty or not text")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no preference pairs")
    return rows


OVERLENGTH = ("error", "drop", "truncate")


def tokenize_pairs(tokenizer, rows: list[dict], max_length: int, overlength: str = "error") -> list[dict]:
    """Token ids per pair; completions end with EOS, and `chosen_len` / `rejected_len` count the tokens the loss
    scores, that EOS included: tsq's one length convention (`tsq.sampling.base.completion_length`), so a length
    normalisation (SFT's mean NLL, SimPO) divides a sum over n tokens by n, and DPO-L's length ratio is over
    the same counts as the metrics and the pairs file.

    A pair is over length when its prompt plus its longer completion (EOS included) exceeds `max_length`.
    `overlength` says what happens then: `error` (default) refuses the whole set naming the count,
    `drop` leaves such pairs out (`pairs_dropped` in the training summary), `truncate` keeps the start of each
    completion (losing its EOS; lengths are then the kept tokens).
    """
    if overlength not in OVERLENGTH:
        raise ValueError(f"train.overlength must be one of {OVERLENGTH}, got {overlength!r}")
    eos = tokenizer.eos_token_id
    enc = {k: tokenizer([r[k] for r in rows], add_special_tokens=False)["input_ids"] for k in REQUIRED_FIELDS}
    out, over = [], []
    for i in range(len(rows)):
        p, c, r = enc["prompt"][i], enc["chosen"][i] + [eos], enc["rejected"][i] + [eos]
        size = len(p) + max(len(c), len(r))
        if size > max_length:
            over.append(size)
            if overlength != "truncate":
                continue
            room = max_length - len(p)
            if room <= 0:
                raise ValueError(
                    f"pair {i}: its prompt alone has {len(p)} tokens, at least train.max_length={max_length}; "
                    "truncating completions cannot make it fit"
                )
            c, r = c[:room], r[:room]
        out.append(
            {
                "index": i,
                "prompt": p,
                "chosen": c,
                "rejected": r,
                "chosen_len": len(c),
                "rejected_len": len(r),
                "truncated": size > max_length,
            }
        )
    if over and overlength == "error":
        raise ValueError(
            f"{len(over)} of {len(rows)} pairs are longer than train.max_length={max_length} tokens (prompt + longer "
            f"completion with EOS; the longest has {max(over)}): raise train.max_length, or choose "
            "train.overlength=drop (leave them out) or train.overlength=truncate (cut completions)"
        )
    if over:
        log.warning(
            "train.overlength=%s: %d of %d pairs exceed train.max_length=%d tokens (longest %d) and were %s",
            overlength,
            len(over),
            len(rows),
            max_length,
            max(over),
            "dropped" if overlength == "drop" else "truncated",
        )
    return out


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


REF_LOGPS = Stage("ref_logps", 2)
POLICY = Stage("policy", 4)  # 4: lengths count the EOS; train.max_steps


def ref_logps_key_parts(model: ModelHandle, pairs_key: str, settings: TrainSettings) -> tuple[dict, dict]:
    own = {"max_length": settings.max_length, "overlength": settings.overlength}
    return own, {"pairs": pairs_key, "model": model.key}


def reference_logps(ctx: RunContext, model: ModelHandle, pairs: Artifact, settings: TrainSettings) -> Path:
    """Cached summed log-probs of chosen and rejected under the frozen base model."""
    pairs_path = pairs.path / PAIRS_FILE

    def build(job: Build) -> None:
        tokenizer = AutoTokenizer.from_pretrained(model.path, **model.load_kwargs())
        policy = AutoModelForCausalLM.from_pretrained(model.path, **model.load_kwargs()).eval()
        data = tokenize_pairs(tokenizer, read_pairs(pairs_path), settings.max_length, settings.overlength)
        if not data:
            raise ValueError(f"{pairs_path}: no pair left to score after train.overlength={settings.overlength}")
        values = {}
        with torch.inference_mode(), StageProgress("ref_logps: scoring pairs", len(data), "pairs") as progress:
            for s in range(0, len(data), 64):
                chunk = data[s : s + 64]
                prompts = [d["prompt"] for d in chunk] * 2
                completions = [d["chosen"] for d in chunk] + [d["rejected"] for d in chunk]
                logps = sequence_logps(
                    policy,
                    prompts,
                    completions,
                    "bucket",
                    settings.rows_per_forward,
                    pad_id=tokenizer.pad_token_id,
                    chunk_tokens=settings.logit_chunk_tokens,
                )
                for j, d in enumerate(chunk):
                    values[d["index"]] = (float(logps[j]), float(logps[len(chunk) + j]))
                progress.update(len(chunk))
        (job.dir / "ref_logps.json").write_text(json.dumps({str(k): v for k, v in values.items()}))

    own, inputs = ref_logps_key_parts(model, pairs.key, settings)
    artifact = ctx.store.cached(
        REF_LOGPS, own, inputs, build, doing="scoring pairs under the base model", description=inputs
    )
    return artifact.path / "ref_logps.json"


class PreferenceModule(L.LightningModule):
    """The policy under training; reference log-probs come with the batch (precomputed)."""

    def __init__(
        self,
        policy,
        loss: PreferenceLoss,
        settings: TrainSettings,
        total_steps: int,
        pad_id: int,
        reference=None,
        adapters=None,
    ) -> None:
        """`reference`: a frozen model that scores every batch (online reference); `adapters`: the peft
        model whose adapters `policy` carries (LoRA), whose disabled adapters give the online reference."""
        super().__init__()
        self.policy, self.loss_fn, self.settings = policy, loss, settings
        self.total_steps, self.pad_id = total_steps, pad_id
        self.reference = reference.eval().requires_grad_(False) if reference is not None else None
        self.adapters = adapters

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, metrics = self.compute(batch)
        if not torch.isfinite(loss):
            # Stop before the optimizer step and before any checkpoint holds the broken state.
            raise FloatingPointError(
                f"non-finite loss {loss.item()} at step {self.global_step} (loss={self.loss_fn.name}); "
                "nothing from this step was saved"
            )
        n = len(batch["prompt"])
        # TRL's metric names, so dashboards compare side by side
        # averaged over data-parallel processes: the logged curve is the global batch's, as with one process
        sync = self.trainer.world_size > 1
        self.log_dict({k: v for k, v in metrics.items() if k != "loss"}, batch_size=n, sync_dist=sync)
        self.log("loss", metrics["loss"], batch_size=n, prog_bar=True, sync_dist=sync)
        return loss

    def compute(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The batch loss and TRL-named metrics."""
        n = len(batch["prompt"])
        with_rejected = self.loss_fn.needs_rejected
        prompts = batch["prompt"] * (2 if with_rejected else 1)
        completions = batch["chosen"] + (batch["rejected"] if with_rejected else [])
        logps = self.logps(self.policy, prompts, completions)
        chosen = logps[:n]
        rejected = logps[n:] if with_rejected else torch.zeros_like(chosen)
        if self.settings.reference == "online" and self.loss_fn.needs_reference:
            with torch.no_grad():
                if self.adapters is not None:
                    with self.adapters.disable_adapter():
                        ref = self.logps(self.policy, prompts, completions)
                else:
                    ref = self.logps(self.reference, prompts, completions)
            ref_c, ref_r = ref[:n], ref[n:]
        else:
            ref_c, ref_r = batch["ref_chosen"].to(chosen), batch["ref_rejected"].to(chosen)
        len_c, len_r = batch["chosen_len"].to(chosen.device), batch["rejected_len"].to(chosen.device)
        loss = self.loss_fn(chosen, rejected, ref_c, ref_r, len_c, len_r).mean()
        beta = self.loss_fn.beta
        metrics = {"loss": loss.detach(), "logps/chosen": chosen.mean(), "len/chosen": len_c.float().mean()}
        if with_rejected:
            reward_c, reward_r = beta * (chosen - ref_c).detach(), beta * (rejected - ref_r).detach()
            metrics.update(
                {
                    "rewards/chosen": reward_c.mean(),
                    "rewards/rejected": reward_r.mean(),
                    "rewards/margins": (reward_c - reward_r).mean(),
                    "rewards/accuracies": (reward_c > reward_r).float().mean(),
                    "logps/rejected": rejected.mean(),
                    "len/rejected": len_r.float().mean(),
                }
            )
        return loss, metrics

    def logps(self, model, prompts: list, completions: list) -> torch.Tensor:
        return sequence_logps(
            model,
            prompts,
            completions,
            self.settings.batching,
            self.settings.rows_per_forward,
            pad_id=self.pad_id,
            chunk_tokens=self.settings.logit_chunk_tokens,
            checkpoint_forwards=self.settings.checkpoint_forwards,
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the RNG streams a resumed run must continue (dropout, LoRA dropout); data order is the loader's
        checkpoint["rng_states"] = {"torch": torch.get_rng_state(), "python": random.getstate()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng_states" in checkpoint:
            torch.set_rng_state(checkpoint["rng_states"]["torch"])
            random.setstate(checkpoint["rng_states"]["python"])

    def configure_optimizers(self):
        trainable = [p for p in self.policy.parameters() if p.requires_grad]  # LoRA: the adapters only
        opt = torch.optim.AdamW(trainable, lr=self.settings.lr, weight_decay=self.settings.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, self.settings.warmup_steps, self.total_steps)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class EpochPermutation(torch.utils.data.Sampler[int]):
    """A fresh permutation every epoch, seeded by (seed, epoch) alone, that a resumed run can enter part-way.

    Under data parallelism each process reads every `world`-th pair of the permutation from its rank on
    (padded with its first pairs to a multiple of `world`, as torch's `DistributedSampler` does), so the
    pairs of one global batch are the pairs of the one-process batch of the same global size, and the
    loss curve is the one-process curve. Lightning calls `set_epoch` at each epoch start;
    `batches_started` counts this epoch's batches (a callback raises it), and `resume_at` makes the next
    pass skip those already trained on.
    """

    def __init__(self, size: int, seed: int, batch_size: int) -> None:
        self.size, self.seed, self.batch_size = size, seed, batch_size
        self.epoch, self.batches_started, self._skip = 0, 0, 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:  # the skip belongs to the epoch a checkpoint was taken in, never to the next
            self._skip = 0
        self.epoch = epoch

    def resume_at(self, epoch: int, batches: int) -> None:
        self.epoch, self.batches_started, self._skip = epoch, batches, batches * self.batch_size

    @staticmethod
    def rank_and_world() -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        return math.ceil(self.size / self.rank_and_world()[1])

    def __iter__(self):
        rank, world = self.rank_and_world()
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        order += order[: len(self) * world - self.size]
        mine = order[rank::world]
        skip, self._skip = self._skip, 0
        if not skip:
            self.batches_started = 0
        return iter(mine[skip:])


class ResumableLoader(DataLoader):
    """The pairs in `EpochPermutation` order; Lightning stores its `state_dict` in every checkpoint and hands it
    back on resume, so a resumed run trains on exactly the batches an uninterrupted one would."""

    def __init__(self, data: list[dict], batch_size: int, seed: int) -> None:
        super().__init__(data, batch_size=batch_size, sampler=EpochPermutation(len(data), seed, batch_size),
                         collate_fn=collate)  # fmt: skip

    def state_dict(self) -> dict:
        return {"epoch": self.sampler.epoch, "batches_started": self.sampler.batches_started}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.resume_at(state["epoch"], state["batches_started"])


class CountBatches(L.Callback):
    """Counts the batches of the current epoch that training started (what a checkpoint's loader state says)."""

    def __init__(self, sampler: EpochPermutation) -> None:
        self.sampler = sampler

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.sampler.batches_started += 1


def collate(examples: list[dict]) -> dict:
    return {
        "prompt": [e["prompt"] for e in examples],
        "chosen": [e["chosen"] for e in examples],
        "rejected": [e["rejected"] for e in examples],
        "ref_chosen": torch.tensor([e["ref_chosen"] for e in examples]),
        "ref_rejected": torch.tensor([e["ref_rejected"] for e in examples]),
        "chosen_len": torch.tensor([e["chosen_len"] for e in examples]),
        "rejected_len": torch.tensor([e["rejected_len"] for e in examples]),
    }


def world_size(trainer_config: dict) -> int:
    """Processes a Lightning Trainer with these arguments trains in (`devices` x `num_nodes`)."""
    devices = trainer_config.get("devices", "auto")
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    elif devices in ("auto", -1, "-1"):
        gpu = trainer_config.get("accelerator") in ("gpu", "cuda") and torch.cuda.is_available()
        count = torch.cuda.device_count() if gpu else 1
    else:
        count = int(devices)
    return count * int(trainer_config.get("num_nodes", 1))


def changed_tensors(base_dir: Path, state: dict[str, torch.Tensor]) -> tuple[int, int, float]:
    """(tensors that differ, tensors compared, largest absolute change) between the base model's
    safetensors files and a trained state dict, read one tensor at a time (no second model in memory)."""
    from safetensors import safe_open

    changed, compared, largest = 0, 0, 0.0
    for file in sorted(Path(base_dir).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as fh:
            for name in fh.keys():  # noqa: SIM118 (safe_open has no __iter__)
                if name not in state:
                    continue
                base = fh.get_tensor(name)
                trained = state[name].detach().to("cpu", base.dtype)
                compared += 1
                if not torch.equal(base, trained):
                    changed += 1
                    largest = max(largest, float((trained.float() - base.float()).abs().max()))
    return changed, compared, largest


def policy_key_parts(
    ctx: RunContext, model: ModelHandle, pairs_key: str, loss: PreferenceLoss, settings: TrainSettings
) -> tuple[dict, dict]:
    own = {"loss": loss.key_material(), "train": settings.key_material(), "trainer": ctx.trainer_key_material()}
    return own, {"pairs": pairs_key, "model": model.key}


def train_policy(
    ctx: RunContext,
    model: ModelHandle,
    pairs: Artifact,
    loss: PreferenceLoss,
    settings: TrainSettings,
    callbacks: list | None = None,
) -> ModelHandle:
    """Train the policy from the base model on the pairs; the result is an HF directory artifact.

    Checkpoints go to the build's scratch folder (`<cache>/policy/<key>.partial/`); a killed run started
    again resumes from the last one. Before any compute it refuses pair sets that do not fit
    `train.max_length` (unless `train.overlength` says otherwise) and runs that would take no optimizer
    step; after training it refuses to save a policy whose weights equal the base model's.
    """
    artifact = ctx.store.cached(
        POLICY,
        *policy_key_parts(ctx, model, pairs.key, loss, settings),
        lambda job: _train_policy(ctx, model, pairs, loss, settings, callbacks, job),
        doing=f"training loss={loss.name}",
        description={"pairs": pairs.key, "model": model.key, "loss": loss.name},
        collective=world_size(ctx.trainer) > 1,  # every rank trains; rank 0 writes
    )
    return model.derived(f"{model.name}+{loss.name}", artifact.path, artifact.key)


def _train_policy(
    ctx: RunContext,
    model: ModelHandle,
    pairs: Artifact,
    loss: PreferenceLoss,
    settings: TrainSettings,
    callbacks: list | None,
    job: Build,
) -> bool:
    """Train into `job.dir`; False on the ranks of a distributed run that do not write the artifact."""
    pairs_path = pairs.path / PAIRS_FILE
    trainer_config = ctx.trainer
    ctx.sampler.release()  # a live sampler (a vLLM engine holds most of a GPU) would hold the training's memory
    L.seed_everything(settings.seed, verbose=False)
    tokenizer = AutoTokenizer.from_pretrained(model.path, **model.load_kwargs())
    rows = read_pairs(pairs_path)
    data = tokenize_pairs(tokenizer, rows, settings.max_length, settings.overlength)
    processes = world_size(trainer_config)
    accumulate = settings.accumulation(processes)
    total = settings.optimizer_steps(len(data), processes)
    if total == 0:
        raise ValueError(
            f"training would take 0 optimizer steps: {len(data)} of {len(rows)} pairs of {pairs_path} are left "
            f"after train.overlength={settings.overlength} (train.max_length={settings.max_length})"
        )
    if settings.warmup_steps > total:  # the learning rate would never reach its peak: a run that barely trains
        raise ValueError(
            f"train.warmup_steps={settings.warmup_steps} is longer than the {total} optimizer steps this training "
            f"takes ({len(data)} pairs of {pairs_path})"
        )
    if settings.lora is not None and isinstance(trainer_config.get("strategy"), dict):
        raise ValueError("train.lora is not supported with a sharded trainer.strategy (fsdp / deepspeed)")
    if loss.needs_reference and settings.reference == "precomputed":
        ref = json.loads(reference_logps(ctx, model, pairs, settings).read_text())
    else:
        ref = {}
    for d in data:
        d["ref_chosen"], d["ref_rejected"] = ref.get(str(d["index"]), (0.0, 0.0))
    policy = AutoModelForCausalLM.from_pretrained(model.path, **model.load_kwargs()).train()  # (loads in eval mode)
    if settings.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        policy.config.use_cache = False
    adapters = None
    if settings.lora is not None:
        from peft import get_peft_model

        adapters = get_peft_model(policy, LoraSettings(**settings.lora).peft_config())
        policy = adapters.get_base_model()  # the transformer with adapter layers injected, trained in place
    trainer_args = dict(trainer_config)
    trainer_args["strategy"] = build_strategy(trainer_args.get("strategy"), policy, settings.gradient_checkpointing)
    online_ref = None
    if loss.needs_reference and settings.reference == "online" and adapters is None:
        online_ref = AutoModelForCausalLM.from_pretrained(model.path, **model.load_kwargs())
    module = PreferenceModule(
        policy, loss, settings, total, tokenizer.pad_token_id, reference=online_ref, adapters=adapters
    )
    loader = ResumableLoader(data, settings.batch_size, settings.seed)
    checkpoint = ModelCheckpoint(dirpath=job.scratch, save_last=True, every_n_train_steps=settings.checkpoint_every)
    per_epoch = settings.steps_per_epoch(len(data), processes)
    trainer = L.Trainer(
        max_epochs=math.ceil(total / per_epoch),
        max_steps=total,
        accumulate_grad_batches=accumulate,
        logger=(ctx.make_loggers() if ctx.make_loggers else None) or False,  # created only when training runs
        callbacks=[CountBatches(loader.sampler), checkpoint, *(callbacks or [])],
        enable_model_summary=False,
        log_every_n_steps=1,
        use_distributed_sampler=False,  # EpochPermutation splits the pairs over the processes itself
        **trainer_args,
    )
    if trainer.world_size != processes:
        raise RuntimeError(f"trainer runs {trainer.world_size} processes, but {processes} were planned from trainer=")
    if isinstance(trainer.strategy.checkpoint_io, TorchCheckpointIO):  # sharded strategies keep their own writer
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    start = resume_point(job.scratch)
    if start is not None:
        log.info("stage policy: resuming from %s", start)
    trainer.fit(module, loader, ckpt_path=str(start) if start is not None else None)
    if trainer.global_step != total:
        raise RuntimeError(f"training took {trainer.global_step} optimizer steps, {total} were planned")
    # Sharded (FSDP / DeepSpeed) training: gather the full weights; only rank 0 writes the artifact.
    full_state = trainer.strategy.lightning_module_state_dict() if trainer.world_size > 1 else None
    if not trainer.is_global_zero:
        return False
    if full_state is not None:
        state = {k.removeprefix("policy."): v for k, v in full_state.items() if k.startswith("policy.")}
    elif adapters is not None:
        # Saved merged: a plain HF directory that evaluation (and transformers) loads like any other;
        # the adapter weights alone go to adapter/ for peft users.
        adapters.save_pretrained(job.dir / "adapter")
        policy = adapters.merge_and_unload()
        state = policy.state_dict()
    else:
        state = policy.state_dict()
    changed, compared, largest = changed_tensors(model.path, state)
    if not compared:
        log.warning("stage policy: no safetensors in %s; could not check that training changed it", model.path)
    if compared and not changed:
        raise RuntimeError(
            f"training changed none of the {compared} weight tensors of {model.path} ({total} optimizer "
            f"steps, train.lr={settings.lr}); nothing was saved"
        )
    policy.save_pretrained(job.dir, state_dict=state)
    tokenizer.save_pretrained(job.dir)
    summary = {
        "pairs": len(data),
        "pairs_in_file": len(rows),
        "overlength": settings.overlength,
        "pairs_dropped": len(rows) - len(data),
        "pairs_truncated": sum(d["truncated"] for d in data),
        "steps": trainer.global_step,
        "max_steps": settings.max_steps,
        # passes over the pairs (fractional when max_steps ends part-way through one)
        "epochs": round(trainer.global_step / per_epoch, 4),
        "accumulate_grad_batches": accumulate,
        "processes": processes,
        "lora": settings.lora,
        "tensors_changed": changed,
        "tensors_compared": compared,
        "largest_change": largest,
    }
    (job.dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    log.info(
        "stage policy: %d steps on %d pairs; %d of %d weight tensors changed (largest change %.3g)",
        trainer.global_step,
        len(data),
        changed,
        compared,
        largest,
    )
    return True
