"""The tiny base reasoning model: a randomly initialised Llama pretrained here on teacher traces.

The result is a standard Hugging Face directory (config, safetensors weights, tokenizer files) that
`AutoModelForCausalLM` / `AutoTokenizer` load like any hub model, cached under a content key of the
world and of this config, so a second run only loads it.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import lightning as L
from tokenizers import Tokenizer, models, pre_tokenizers
from torch.utils.data import DataLoader
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from tsq.cache import world_key
from tsq.data.base import ProblemSource, Teacher
from tsq.models.base import ModelHandle
from tsq.training.lm import CausalLMModule, LengthBucketBatchSampler, StepLog, collate_pairs, encode_pairs

log = logging.getLogger(__name__)

SPECIAL_TOKENS = {"pad_token": "<pad>", "unk_token": "<unk>", "bos_token": "<bos>", "eos_token": "<eos>"}


def build_word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A word-level HF tokenizer: whitespace split, one id per word, special tokens first.

    Prompts are left-padded, as batched generation needs.
    """
    vocab: dict[str, int] = {}
    for w in [*SPECIAL_TOKENS.values(), *words]:
        vocab.setdefault(w, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, padding_side="left", **SPECIAL_TOKENS)


@dataclass
class Architecture:
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_position_embeddings: int = 256


@dataclass
class Pretraining:
    steps: int = 1200
    # 32 rather than 64 (conf/model/tiny.yaml): half the compute for the same dev quality; 16 never learns the
    # arithmetic in 1,200 steps, nor does 64 in 400 (docs/measurements.md, "The base model's pretraining size")
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    seed: int = 0
    # Batches of similar length, sorted within windows of this many batches (see LengthBucketBatchSampler).
    bucket_window: int = 4

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "lr"):
            if getattr(self, key) <= 0:
                raise ValueError(f"model.pretrain.{key} must be > 0, got {getattr(self, key)}")


def check_teacher_style(style: str) -> None:
    """Refuse a `model.teacher_style` the world's teacher does not write (see TeacherStyle)."""
    if style not in ("default", "concise", "system1"):
        raise ValueError(f"model.teacher_style must be default, concise or system1, got {style!r}")


def teacher_corpus(world: Teacher, pretrain: Pretraining, teacher_style: str) -> tuple[list[str], list[str]]:
    """(prompts, responses): a teacher trace for every example of `pretrain` (steps x batch size), each on a fresh
    problem, never on a dev or test prompt."""
    rng = random.Random(pretrain.seed)
    style = world.style(teacher_style)
    held_out = world.held_out_prompts()
    prompts, responses = [], []
    for _ in range(pretrain.steps * pretrain.batch_size):
        problem = world.sample_problem(rng, held_out)
        prompts.append(problem.prompt)
        responses.append(world.teacher_response(problem, rng, style))
    return prompts, responses


@dataclass
class TinyReasoningModel:
    """`model=tiny`: builds the base model for a synthetic world (or loads it from the cache)."""

    name: str = "tiny"
    artifact: ClassVar[str] = "base_model"  # (tsq.stages.base_model)
    architecture: Architecture = field(default_factory=Architecture)
    pretrain: Pretraining = field(default_factory=Pretraining)
    accelerator: str = "cpu"
    trust_remote_code: bool = False
    # "concise" / "system1": pretrain on the teacher's concise traces (with glances half the time for
    # system1), for TL;DR's short-reasoning model; see TeacherStyle
    teacher_style: str = "default"

    def __post_init__(self) -> None:
        check_teacher_style(self.teacher_style)
        if not isinstance(self.architecture, Architecture):
            self.architecture = Architecture(**dict(self.architecture))
        if not isinstance(self.pretrain, Pretraining):
            self.pretrain = Pretraining(**dict(self.pretrain))
        if self.architecture.hidden_size % self.architecture.num_heads:
            raise ValueError("model.architecture.hidden_size must be divisible by num_heads")

    def key_material(self) -> dict:
        own = {"architecture": asdict(self.architecture), "pretrain": asdict(self.pretrain)}
        if self.teacher_style != "default":  # (keeps the keys of existing default models)
            own["teacher_style"] = self.teacher_style
        return own

    def key_inputs(self, world: ProblemSource) -> dict[str, str]:
        if not isinstance(world, Teacher):
            raise ValueError(f"model=tiny is trained on a synthetic world's teacher; data={world.name} has none")
        return {"world": world_key(world)}

    def existing(self) -> ModelHandle:
        raise TypeError("model=tiny is built (pretrained) by the base_model stage, not found")

    def build(self, world: ProblemSource, out_dir: Path) -> None:
        """Pretrain on the world's teacher traces and save an HF directory into `out_dir`."""
        self._pretrain(world, out_dir)

    # -----------------------------------------------------------------------
    def corpus(self, world: Teacher) -> tuple[list[str], list[str]]:
        return teacher_corpus(world, self.pretrain, self.teacher_style)

    def _pretrain(self, world, out_dir: Path) -> None:
        start = time.perf_counter()
        L.seed_everything(self.pretrain.seed, verbose=False)
        tokenizer = build_word_tokenizer(world.vocabulary())
        arch = self.architecture
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=arch.hidden_size,
            intermediate_size=arch.intermediate_size,
            num_hidden_layers=arch.num_layers,
            num_attention_heads=arch.num_heads,
            num_key_value_heads=arch.num_heads,
            max_position_embeddings=arch.max_position_embeddings,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        model = LlamaForCausalLM(config)
        examples = encode_pairs(tokenizer, *self.corpus(world))
        too_long = max(len(p) + len(r) for p, r in examples)
        if too_long > arch.max_position_embeddings:
            raise ValueError(
                f"model.architecture.max_position_embeddings={arch.max_position_embeddings} is shorter "
                f"than the longest teacher trace ({too_long} tokens)"
            )
        fit_on_traces(model, tokenizer, examples, self.pretrain, self.accelerator, out_dir, "pretraining", start)


def fit_on_traces(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[tuple[list[int], list[int]]],
    pretrain: Pretraining,
    accelerator: str,
    out_dir: Path,
    what: str,
    start: float,
) -> None:
    """Train `model` on (prompt ids, response ids + EOS) examples for `pretrain.steps` steps (loss on the responses),
    then save it, its tokenizer and `pretrain_summary.json` into `out_dir`; `start`: when the build began."""
    model.train()  # (from_pretrained returns a model in eval mode)
    lengths = [len(p) + len(r) for p, r in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sampler = LengthBucketBatchSampler(lengths, pretrain.batch_size, pretrain.seed, pretrain.bucket_window)
    loader = DataLoader(examples, batch_sampler=sampler, collate_fn=lambda b: collate_pairs(b, pad))
    module = CausalLMModule(
        model,
        lr=pretrain.lr,
        weight_decay=pretrain.weight_decay,
        warmup_steps=pretrain.warmup_steps,
        total_steps=pretrain.steps,
        tokens_per_batch=pretrain.batch_size * sum(len(r) for _, r in examples) / len(examples),
    )
    trainer = L.Trainer(
        max_steps=pretrain.steps,
        # the epochs those steps span (left unset, the progress bar reads "Epoch 0/-2")
        max_epochs=math.ceil(pretrain.steps / len(loader)),
        callbacks=[StepLog(what, pretrain.steps)],
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        log_every_n_steps=50,
        default_root_dir=str(out_dir),
    )
    trainer.fit(module, loader)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=pad, bos_token_id=tokenizer.bos_token_id
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    summary = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": pretrain.steps,
        "final_loss": float(trainer.callback_metrics.get("train/loss", float("nan"))),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    (out_dir / "pretrain_summary.json").write_text(json.dumps(summary, indent=2))
    log.info(
        "%s: %s parameters in %.0fs, final loss %.3f",
        what,
        summary["parameters"],
        summary["wall_seconds"],
        summary["final_loss"],
    )
