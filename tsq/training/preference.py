"""Preference training: the Lightning module, the pairs data, cached reference log-probs, the stage.

The reference model is the base policy frozen. Its log-probs are computed once per pair set and
stored as an artifact keyed on (pairs, base model, batching), so no reference model sits in memory
while training, and a sweep over losses computes them once.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer

from tsq.cache import ArtifactStore, stage_key
from tsq.models.base import ModelHandle
from tsq.training.lm import warmup_cosine
from tsq.training.logps import sequence_logps
from tsq.training.losses import PreferenceLoss
from tsq.training.strategy import build_strategy

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("prompt", "chosen", "rejected")


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


def tokenize_pairs(tokenizer, rows: list[dict], max_length: int) -> list[dict]:
    """Token ids per pair (completions end with EOS). Pairs longer than `max_length` are dropped."""
    eos = tokenizer.eos_token_id
    enc = {k: tokenizer([r[k] for r in rows], add_special_tokens=False)["input_ids"] for k in REQUIRED_FIELDS}
    out = []
    for i in range(len(rows)):
        p, c, r = enc["prompt"][i], enc["chosen"][i] + [eos], enc["rejected"][i] + [eos]
        if len(p) + max(len(c), len(r)) <= max_length:
            out.append({"index": i, "prompt": p, "chosen": c, "rejected": r})
    return out


@dataclass
class TrainSettings:
    """`train=`: optimisation of the policy on the pairs."""

    epochs: int = 4
    batch_size: int = 16
    lr: float = 5e-5
    weight_decay: float = 0.0
    warmup_steps: int = 5
    max_length: int = 512
    batching: str = "bucket"
    rows_per_forward: int = 16
    seed: int = 0
    checkpoint_every: int = 20
    # precomputed: reference log-probs computed once per pair set and cached (no reference model in
    # memory while training); online: a frozen copy of the base model scores every batch.
    reference: str = "precomputed"
    # Recompute activations in the backward pass (HF gradient checkpointing; per block under FSDP).
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "max_length", "rows_per_forward", "checkpoint_every"):
            if getattr(self, key) <= 0:
                raise ValueError(f"train.{key} must be > 0, got {getattr(self, key)}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.reference not in ("precomputed", "online"):
            raise ValueError(f"train.reference must be precomputed or online, got {self.reference!r}")
        if self.batching not in ("bucket", "packed", "padded"):
            raise ValueError(f"train.batching must be bucket, packed or padded, got {self.batching!r}")


def reference_logps(
    handle: ModelHandle, pairs_path: Path, pairs_key: str, settings: TrainSettings, store: ArtifactStore
) -> Path:
    """Cached summed log-probs of chosen and rejected under the frozen base model."""
    key = stage_key("ref_logps", 1, {"max_length": settings.max_length}, {"pairs": pairs_key, "model": handle.key})
    path = store.path("ref_logps", key) / "ref_logps.json"
    if store.exists("ref_logps", key):
        log.info("stage ref_logps: cache hit %s", key)
        return path
    log.info("stage ref_logps: cache miss %s", key)
    tokenizer = AutoTokenizer.from_pretrained(handle.path)
    model = AutoModelForCausalLM.from_pretrained(handle.path).eval()
    data = tokenize_pairs(tokenizer, read_pairs(pairs_path), settings.max_length)
    values = {}
    with torch.inference_mode():
        for s in range(0, len(data), 64):
            chunk = data[s : s + 64]
            prompts = [d["prompt"] for d in chunk] * 2
            completions = [d["chosen"] for d in chunk] + [d["rejected"] for d in chunk]
            logps = sequence_logps(model, prompts, completions, "bucket", 32, pad_id=tokenizer.pad_token_id)
            for j, d in enumerate(chunk):
                values[d["index"]] = (float(logps[j]), float(logps[len(chunk) + j]))
    with store.build("ref_logps", key, {"pairs": pairs_key, "model": handle.key}) as tmp:
        (tmp / "ref_logps.json").write_text(json.dumps({str(k): v for k, v in values.items()}))
    return path


class PreferenceModule(L.LightningModule):
    """The policy under training; reference log-probs come with the batch (precomputed)."""

    def __init__(
        self, policy, loss: PreferenceLoss, settings: TrainSettings, total_steps: int, pad_id: int, reference=None
    ) -> None:
        super().__init__()
        self.policy, self.loss_fn, self.settings = policy, loss, settings
        self.total_steps, self.pad_id = total_steps, pad_id
        self.reference = reference.eval().requires_grad_(False) if reference is not None else None

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
        self.log_dict({k: v for k, v in metrics.items() if k != "loss"}, batch_size=n)
        self.log("loss", metrics["loss"], batch_size=n, prog_bar=True)
        return loss

    def compute(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The batch loss and TRL-named metrics."""
        n = len(batch["prompt"])
        with_rejected = self.loss_fn.needs_rejected
        prompts = batch["prompt"] * (2 if with_rejected else 1)
        completions = batch["chosen"] + (batch["rejected"] if with_rejected else [])
        logps = sequence_logps(
            self.policy,
            prompts,
            completions,
            self.settings.batching,
            self.settings.rows_per_forward,
            pad_id=self.pad_id,
        )
        chosen = logps[:n]
        rejected = logps[n:] if with_rejected else torch.zeros_like(chosen)
        if self.reference is not None and self.loss_fn.needs_reference:
            with torch.no_grad():
                ref = sequence_logps(
                    self.reference,
                    prompts,
                    completions,
                    self.settings.batching,
                    self.settings.rows_per_forward,
                    pad_id=self.pad_id,
                )
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

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.policy.parameters(), lr=self.settings.lr, weight_decay=self.settings.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, self.settings.warmup_steps, self.total_steps)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def collate(examples: list[dict]) -> dict:
    return {
        "prompt": [e["prompt"] for e in examples],
        "chosen": [e["chosen"] for e in examples],
        "rejected": [e["rejected"] for e in examples],
        "ref_chosen": torch.tensor([e["ref_chosen"] for e in examples]),
        "ref_rejected": torch.tensor([e["ref_rejected"] for e in examples]),
        "chosen_len": torch.tensor([len(e["chosen"]) - 1 for e in examples]),  # tokens without EOS
        "rejected_len": torch.tensor([len(e["rejected"]) - 1 for e in examples]),
    }


def train_policy(
    handle: ModelHandle,
    pairs_path: Path,
    pairs_key: str,
    loss: PreferenceLoss,
    loss_config: dict,
    settings: TrainSettings,
    trainer_config: dict,
    store: ArtifactStore,
    make_loggers=None,
    callbacks: list | None = None,
) -> ModelHandle:
    """Train the policy from the base model on the pairs; the result is an HF directory artifact.

    Checkpoints go to `<cache>/policy/<key>.partial/`; a killed run started again resumes from the
    last one. `trainer_config` holds Lightning Trainer arguments (accelerator, precision, ...).
    """
    own = {"loss": loss_config, "train": asdict(settings), "trainer": trainer_config}
    key = stage_key("policy", 1, own, {"pairs": pairs_key, "model": handle.key})
    name = f"{handle.name}+{loss.name}"
    if store.exists("policy", key):
        log.info("stage policy: cache hit %s", key)
        return ModelHandle(name=name, path=store.path("policy", key), key=key)
    log.info("stage policy: cache miss %s, training loss=%s", key, loss.name)
    L.seed_everything(settings.seed, verbose=False)
    tokenizer = AutoTokenizer.from_pretrained(handle.path)
    data = tokenize_pairs(tokenizer, read_pairs(pairs_path), settings.max_length)
    if loss.needs_reference and settings.reference == "precomputed":
        ref = json.loads(reference_logps(handle, pairs_path, pairs_key, settings, store).read_text())
    else:
        ref = {}
    for d in data:
        d["ref_chosen"], d["ref_rejected"] = ref.get(str(d["index"]), (0.0, 0.0))
    steps_per_epoch = math.ceil(len(data) / settings.batch_size)
    total = steps_per_epoch * settings.epochs
    policy = AutoModelForCausalLM.from_pretrained(handle.path).train()  # from_pretrained returns eval mode
    if settings.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        policy.config.use_cache = False
    trainer_args = dict(trainer_config)
    trainer_args["strategy"] = build_strategy(trainer_args.get("strategy"), policy, settings.gradient_checkpointing)
    online_ref = None
    if loss.needs_reference and settings.reference == "online":
        online_ref = AutoModelForCausalLM.from_pretrained(handle.path)
    module = PreferenceModule(policy, loss, settings, total, tokenizer.pad_token_id, reference=online_ref)
    generator = torch.Generator().manual_seed(settings.seed)
    loader = DataLoader(data, batch_size=settings.batch_size, shuffle=True, collate_fn=collate, generator=generator)
    scratch = store.scratch("policy", key)
    checkpoint = ModelCheckpoint(dirpath=scratch, save_last=True, every_n_train_steps=settings.checkpoint_every)
    last = scratch / "last.ckpt"
    trainer = L.Trainer(
        max_epochs=settings.epochs,
        logger=(make_loggers() if make_loggers else None) or False,  # created only when training runs
        callbacks=[checkpoint, *(callbacks or [])],
        enable_model_summary=False,
        log_every_n_steps=1,
        **trainer_args,
    )
    if last.exists():
        log.info("stage policy: resuming from %s", last)
    trainer.fit(module, loader, ckpt_path=str(last) if last.exists() else None)
    # Sharded (FSDP / DeepSpeed) training: gather the full weights; only rank 0 writes the artifact.
    full_state = trainer.strategy.lightning_module_state_dict() if trainer.world_size > 1 else None
    if not trainer.is_global_zero:
        return ModelHandle(name=name, path=store.path("policy", key), key=key)
    with store.build("policy", key, {"pairs": pairs_key, "model": handle.key, "loss": loss.name}) as tmp:
        if full_state is not None:
            state = {k.removeprefix("policy."): v for k, v in full_state.items() if k.startswith("policy.")}
            policy.save_pretrained(tmp, state_dict=state)
        else:
            policy.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "train_summary.json").write_text(
            json.dumps({"pairs": len(data), "steps": trainer.global_step, "epochs": settings.epochs}, indent=2)
        )
    shutil.rmtree(scratch, ignore_errors=True)
    return ModelHandle(name=name, path=store.path("policy", key), key=key)
