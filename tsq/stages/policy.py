"""Stage `policy`: the policy trained from the base model on the preference pairs (an HF directory), keyed on the
pairs, the base model, the loss, `train=` and `trainer=`."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from tsq.cache import Build, Stage
from tsq.models.base import ModelHandle
from tsq.stages.context import RunContext
from tsq.stages.pairs import Pairs
from tsq.stages.ref_logps import reads, reference_logps
from tsq.training.checkpoints import AtomicCheckpointIO, resume_point
from tsq.training.data_order import CountBatches, ResumableLoader, rows_read
from tsq.training.losses import PreferenceLoss
from tsq.training.module import PreferenceModule, changed_tensors
from tsq.training.pairs_data import read_pairs, tokenize_pairs
from tsq.training.settings import LoraSettings, TrainSettings
from tsq.training.strategy import build_strategy, world_size

log = logging.getLogger(__name__)

POLICY = Stage("policy", 4)  # 4: lengths count the EOS; train.max_steps


def policy_key_parts(
    ctx: RunContext, model: ModelHandle, pairs_key: str, loss: PreferenceLoss, settings: TrainSettings
) -> tuple[dict, dict]:
    own = {"loss": loss.key_material(), "train": settings.key_material(), "trainer": ctx.trainer_key_material()}
    return own, {"pairs": pairs_key, "model": model.key}


def train_policy(
    ctx: RunContext,
    model: ModelHandle,
    pairs: Pairs,
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


@dataclass
class TrainingData:
    """The tokenized pairs of one training and the optimizer steps they make on `processes` processes."""

    tokenizer: PreTrainedTokenizerBase
    rows: list[dict]
    data: list[dict]
    processes: int
    accumulate: int
    total_steps: int
    steps_per_epoch: int


def _train_policy(
    ctx: RunContext,
    model: ModelHandle,
    pairs: Pairs,
    loss: PreferenceLoss,
    settings: TrainSettings,
    callbacks: list | None,
    job: Build,
) -> bool:
    """Train into `job.dir`; False on the ranks of a distributed run that do not write the artifact."""
    ctx.sampler.release()  # a live sampler (a vLLM engine holds most of a GPU) would hold the training's memory
    L.seed_everything(settings.seed, verbose=False)
    plan = _training_data(ctx, model, pairs, settings)
    _attach_reference(ctx, model, pairs, loss, settings, plan)
    policy, adapters = _policy_model(model, settings)
    trainer, module, loader = _trainer(ctx, model, loss, settings, plan, policy, adapters, callbacks, job)
    _fit(trainer, module, loader, plan, job)
    if not trainer.is_global_zero:
        _full_state(trainer)  # every rank takes part in gathering the sharded weights
        return False
    _save(trainer, model, settings, plan, policy, adapters, job)
    return True


def _training_data(ctx: RunContext, model: ModelHandle, pairs: Pairs, settings: TrainSettings) -> TrainingData:
    """Step 1: read and tokenize the pairs; refuse a training that would take no step or never warm up."""
    tokenizer = AutoTokenizer.from_pretrained(model.path, **model.load_kwargs())
    rows = read_pairs(pairs.path)
    data = tokenize_pairs(tokenizer, rows, settings.max_length, settings.overlength)
    processes = world_size(ctx.trainer)
    total = settings.optimizer_steps(len(data), processes)
    if total == 0:
        raise ValueError(
            f"training would take 0 optimizer steps: {len(data)} of {len(rows)} pairs of {pairs.path} are left "
            f"after train.overlength={settings.overlength} (train.max_length={settings.max_length})"
        )
    if settings.warmup_steps > total:  # the learning rate would never reach its peak: a run that barely trains
        raise ValueError(
            f"train.warmup_steps={settings.warmup_steps} is longer than the {total} optimizer steps this training "
            f"takes ({len(data)} pairs of {pairs.path})"
        )
    if settings.lora is not None and isinstance(ctx.trainer.get("strategy"), dict):
        raise ValueError("train.lora is not supported with a sharded trainer.strategy (fsdp / deepspeed)")
    accumulate = settings.accumulation(processes)
    per_epoch = settings.steps_per_epoch(len(data), processes)
    return TrainingData(tokenizer, rows, data, processes, accumulate, total, per_epoch)


def _attach_reference(
    ctx: RunContext, model: ModelHandle, pairs: Pairs, loss: PreferenceLoss, settings: TrainSettings, plan: TrainingData
) -> None:
    """Step 2: the reference log-probs (the cached `ref_logps` stage) of the pairs this training reads; zeros where
    the loss needs none or an online reference scores every batch. A pair the training reads without a value gets
    NaN, so a miscount would stop training at its first loss, never train on a made-up reference."""
    data = plan.data
    if not (loss.needs_reference and settings.reference == "precomputed"):
        for d in data:
            d["ref_chosen"], d["ref_rejected"] = 0.0, 0.0
        return
    subset = reads(settings, plan.processes)
    rows = None if subset is None else [data[i]["index"] for i in reading(settings, plan)]
    ref = reference_logps(ctx, model, pairs, settings, subset, rows)
    for d in data:
        d["ref_chosen"], d["ref_rejected"] = ref.get(str(d["index"]), (math.nan, math.nan))


def reading(settings: TrainSettings, plan: TrainingData) -> list[int]:
    """The positions of `plan.data` that the planned training reads (all of them when it trains whole epochs)."""
    return rows_read(
        len(plan.data), settings.seed, settings.batch_size, plan.total_steps, plan.accumulate, plan.processes
    )


def _policy_model(model: ModelHandle, settings: TrainSettings):
    """Step 3: the base model in training mode, with gradient checkpointing and LoRA adapters as configured;
    returns it and the peft model that carries its adapters (None without LoRA)."""
    policy = AutoModelForCausalLM.from_pretrained(model.path, **model.load_kwargs()).train()  # (loads in eval mode)
    if settings.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        policy.config.use_cache = False
    adapters = None
    if settings.lora is not None:
        from peft import get_peft_model

        adapters = get_peft_model(policy, LoraSettings(**settings.lora).peft_config())
        policy = adapters.get_base_model()  # the transformer with adapter layers injected, trained in place
    return policy, adapters


def _trainer(
    ctx: RunContext,
    model: ModelHandle,
    loss: PreferenceLoss,
    settings: TrainSettings,
    plan: TrainingData,
    policy,
    adapters,
    callbacks: list | None,
    job: Build,
) -> tuple[L.Trainer, PreferenceModule, ResumableLoader]:
    """Step 4: the Lightning module, the resumable loader and the Trainer (strategy, checkpoints to the build's
    scratch folder, written atomically)."""
    trainer_args = dict(ctx.trainer)
    trainer_args["strategy"] = build_strategy(trainer_args.get("strategy"), policy, settings.gradient_checkpointing)
    online_ref = None
    if loss.needs_reference and settings.reference == "online" and adapters is None:
        online_ref = AutoModelForCausalLM.from_pretrained(model.path, **model.load_kwargs())
    module = PreferenceModule(
        policy, loss, settings, plan.total_steps, plan.tokenizer.pad_token_id, reference=online_ref, adapters=adapters
    )
    loader = ResumableLoader(plan.data, settings.batch_size, settings.seed)
    checkpoint = ModelCheckpoint(dirpath=job.scratch, save_last=True, every_n_train_steps=settings.checkpoint_every)
    trainer = L.Trainer(
        max_epochs=math.ceil(plan.total_steps / plan.steps_per_epoch),
        max_steps=plan.total_steps,
        accumulate_grad_batches=plan.accumulate,
        logger=(ctx.make_loggers() if ctx.make_loggers else None) or False,  # created only when training runs
        callbacks=[CountBatches(loader.sampler), checkpoint, *(callbacks or [])],
        enable_model_summary=False,
        log_every_n_steps=1,
        use_distributed_sampler=False,  # EpochPermutation splits the pairs over the processes itself
        **trainer_args,
    )
    if trainer.world_size != plan.processes:
        raise RuntimeError(
            f"trainer runs {trainer.world_size} processes, but {plan.processes} were planned from trainer="
        )
    if isinstance(trainer.strategy.checkpoint_io, TorchCheckpointIO):  # sharded strategies keep their own writer
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    return trainer, module, loader


def _fit(trainer: L.Trainer, module: PreferenceModule, loader: ResumableLoader, plan: TrainingData, job: Build) -> None:
    """Step 5: train, from the newest intact checkpoint of a killed run if there is one; exactly the planned steps."""
    start = resume_point(job.scratch)
    if start is not None:
        log.info("stage policy: resuming from %s", start)
    trainer.fit(module, loader, ckpt_path=str(start) if start is not None else None)
    if trainer.global_step != plan.total_steps:
        raise RuntimeError(f"training took {trainer.global_step} optimizer steps, {plan.total_steps} were planned")


def _full_state(trainer: L.Trainer) -> dict | None:
    """Sharded (FSDP / DeepSpeed) training: the full weights gathered from every rank; None with one process."""
    return trainer.strategy.lightning_module_state_dict() if trainer.world_size > 1 else None


def _save(
    trainer: L.Trainer,
    model: ModelHandle,
    settings: TrainSettings,
    plan: TrainingData,
    policy,
    adapters,
    job: Build,
) -> None:
    """Step 6 (rank 0): save the trained weights as an HF directory with `train_summary.json`; refuse weights that
    equal the base model's."""
    full_state = _full_state(trainer)
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
            f"training changed none of the {compared} weight tensors of {model.path} ({plan.total_steps} optimizer "
            f"steps, train.lr={settings.lr}); nothing was saved"
        )
    policy.save_pretrained(job.dir, state_dict=state)
    plan.tokenizer.save_pretrained(job.dir)
    data, rows = plan.data, plan.rows
    summary = {
        "pairs": len(data),
        "pairs_in_file": len(rows),
        "overlength": settings.overlength,
        "pairs_dropped": len(rows) - len(data),
        "pairs_truncated": sum(d["truncated"] for d in data),
        "steps": trainer.global_step,
        "max_steps": settings.max_steps,
        # passes over the pairs (fractional when max_steps ends part-way through one)
        "epochs": round(trainer.global_step / plan.steps_per_epoch, 4),
        "accumulate_grad_batches": plan.accumulate,
        "processes": plan.processes,
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
