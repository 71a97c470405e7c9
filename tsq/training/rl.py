"""`rl=`: online RL with a length-aware reward through TRL's `GRPOTrainer` (group sampling, clipping, KL, rollouts
by HF generate or vLLM). tsq adds the reward (`tsq.training.length_rewards`, graded by the world's grader), the
rollout log, and the per-step logs users ask for (completion lengths of correct and incorrect responses, the share
cut at the cap, reward components), forwarded to the run's `logger=` loggers.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tsq.data.base import Problem, ProblemSource
from tsq.training.length_rewards import Group, LengthReward, total

log = logging.getLogger(__name__)

ROLLOUTS_FILE = "rollouts.jsonl"
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")
SCALE_REWARDS = ("group", "batch", "none")


@dataclass
class RLSettings:
    """`rl=`: how the policy is trained online from its own rollouts (one optimizer step per batch of
    `prompts_per_step` prompts x `num_generations` responses)."""

    lr: float = 1.0e-5
    max_steps: int = 100
    prompts_per_step: int = 8
    num_generations: int = 8
    max_completion_length: int = 256
    temperature: float = 0.9
    top_p: float = 1.0
    # KL coefficient against the base model (0: no reference model, as DAPO and DLER train)
    beta: float = 0.0
    epsilon: float = 0.2
    # the upper clip threshold (DAPO's clip-higher; null: epsilon)
    epsilon_high: float | None = None
    loss_type: str = "dapo"
    # how advantages are scaled: by the group's reward std (GRPO), the batch's (DLER, REINFORCE++), or not at all
    scale_rewards: str = "group"
    # leave responses cut at max_completion_length out of the loss (DAPO's overlong filtering)
    mask_truncated_completions: bool = False
    # optimisation passes over each batch of rollouts
    num_iterations: int = 1
    warmup_steps: int = 5
    weight_decay: float = 0.0
    split: str = "train"
    # rollouts through vLLM inside the training process (TRL's colocate mode) instead of HF generate
    use_vllm: bool = False
    seed: int = 0

    def key_material(self) -> dict:
        return asdict(self)

    def __post_init__(self) -> None:
        for key in ("max_steps", "prompts_per_step", "num_generations", "max_completion_length", "num_iterations"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"rl.{key} must be a whole number > 0, got {value!r}")
        if self.num_generations < 2:
            raise ValueError(
                f"rl.num_generations must be >= 2 (a group-relative advantage), got {self.num_generations}"
            )
        if self.lr <= 0:
            raise ValueError(f"rl.lr must be > 0, got {self.lr}")
        if not 0 < self.temperature or not 0 < self.top_p <= 1:
            raise ValueError(f"rl.temperature must be > 0 and rl.top_p in (0, 1], got {self.temperature}, {self.top_p}")
        if self.beta < 0 or self.epsilon <= 0 or (self.epsilon_high is not None and self.epsilon_high < self.epsilon):
            raise ValueError(
                f"rl.beta must be >= 0, rl.epsilon > 0 and rl.epsilon_high >= rl.epsilon; got {self.beta}, "
                f"{self.epsilon}, {self.epsilon_high}"
            )
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"rl.loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.scale_rewards not in SCALE_REWARDS:
            raise ValueError(f"rl.scale_rewards must be one of {SCALE_REWARDS}, got {self.scale_rewards!r}")
        if not 0 <= self.warmup_steps <= self.max_steps:
            raise ValueError(f"rl.warmup_steps must lie in [0, rl.max_steps], got {self.warmup_steps}")

    @property
    def completions_per_step(self) -> int:
        return self.prompts_per_step * self.num_generations


def rollout_groups(problem_ids: list[str], group_size: int) -> list[range]:
    """The positions of each group in a batch of completions: TRL samples each prompt `group_size` times in a
    row, so a group is a run of `group_size` completions of one problem. Anything else (a group split across
    processes, a batch that is not whole groups) would silently mix groups, so it raises."""
    if len(problem_ids) % group_size:
        raise RuntimeError(
            f"a reward batch of {len(problem_ids)} completions is not whole groups of rl.num_generations={group_size}"
        )
    spans = [range(i, i + group_size) for i in range(0, len(problem_ids), group_size)]
    for span in spans:
        ids = {problem_ids[i] for i in span}
        if len(ids) != 1:
            raise RuntimeError(f"completions {span.start}..{span.stop - 1} mix problems {sorted(ids)}: not one group")
    return spans


class RolloutReward:
    """The reward function TRL calls on each batch of rollouts: grade every completion with the world's grader (its
    text decoded as tsq's samplers decode, special tokens kept and the ending EOS dropped, so that a rollout is graded
    as an evaluation sample with the same tokens would be; TRL's own `completions` drop special tokens),
    score each group with the length reward, log per-step metrics through TRL's `log_metric`, and keep every
    rollout for `rollouts.jsonl`."""

    __name__ = "length_reward"  # TRL names the reward's logs after it

    def __init__(
        self,
        reward: LengthReward,
        world: ProblemSource,
        problems: list[Problem],
        group_size: int,
        eos_ids: set[int],
        decode: Callable[[list[int]], str],
    ) -> None:
        self.reward, self.world, self.group_size, self.eos_ids, self.decode = reward, world, group_size, eos_ids, decode
        self.problems = {p.id: p for p in problems}
        self.rollouts: list[dict] = []

    def __call__(self, prompts, completions, completion_ids, problem_id, trainer_state=None, log_metric=None, **_):
        """TRL's reward interface: one reward per completion (`completions`, TRL's decoding, is not used)."""
        step = int(trainer_state.global_step) if trainer_state is not None else 0
        lengths = [len(ids) for ids in completion_ids]  # the EOS included (tsq's convention)
        truncated = [not ids or ids[-1] not in self.eos_ids for ids in completion_ids]
        texts = [self.decode(ids if cut else ids[:-1]) for ids, cut in zip(completion_ids, truncated, strict=True)]
        correct = self.world.grade_many([self.problems[pid] for pid in problem_id], texts)
        totals: list[float] = [0.0] * len(completions)
        components: dict[str, list[float]] = {}
        for span in rollout_groups(list(problem_id), self.group_size):
            group = Group(
                tuple(lengths[i] for i in span), tuple(correct[i] for i in span), tuple(truncated[i] for i in span)
            )
            parts = self.reward.components(group, step)
            for name, values in parts.items():
                components.setdefault(name, [0.0] * len(completions))
                for i, value in zip(span, values, strict=True):
                    components[name][i] = value
            for i, value in zip(span, total(parts), strict=True):
                totals[i] = value
        for i, pid in enumerate(problem_id):
            self.rollouts.append(
                {
                    "step": step,
                    "problem_id": pid,
                    "group": i // self.group_size,
                    "text": texts[i],
                    "n_tokens": lengths[i],
                    "truncated": truncated[i],
                    "correct": bool(correct[i]),
                    "components": {name: values[i] for name, values in components.items()},
                    "reward": totals[i],
                }
            )
        if log_metric is not None:
            for name, value in step_metrics(lengths, correct, truncated, components).items():
                log_metric(name, value)
        return totals


def step_metrics(
    lengths: list[int], correct: list[bool], truncated: list[bool], components: dict[str, list[float]]
) -> dict[str, float]:
    """What one batch of rollouts logs beside TRL's own metrics: mean lengths of correct and incorrect responses
    (NaN when there are none), accuracy, the share cut at the cap, and each reward component's mean."""

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else math.nan

    out = {
        "rollouts/accuracy": mean([float(c) for c in correct]),
        "rollouts/correct_length": mean([n for n, c in zip(lengths, correct, strict=True) if c]),
        "rollouts/incorrect_length": mean([n for n, c in zip(lengths, correct, strict=True) if not c]),
        "rollouts/cut_at_cap": mean([float(t) for t in truncated]),
    }
    out.update({f"reward_components/{name}": mean(values) for name, values in components.items()})
    return out


def lightning_logs_callback(loggers: list):
    """A `transformers.TrainerCallback` that sends every numeric log of the trainer to the run's Lightning loggers
    (`logger=`: CSV, W&B), at the trainer's global step."""
    from transformers import TrainerCallback

    class LightningLogs(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            numbers = {f"rl/{k}": float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            for logger in loggers:
                logger.log_metrics(numbers, step=state.global_step)

        def on_train_end(self, args, state, control, **kwargs):
            for logger in loggers:
                logger.save()
                logger.finalize("success")

    return LightningLogs()


def grpo_config(settings: RLSettings, trainer_config: dict, out: Path):
    """TRL's `GRPOConfig` for these settings on the `trainer=` hardware (one process: CPU, or one GPU in bf16 when
    `trainer.precision` says so)."""
    from trl import GRPOConfig

    precision = str(trainer_config.get("precision", "32-true"))
    return GRPOConfig(
        output_dir=str(out / "trl"),
        learning_rate=settings.lr,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_steps,
        lr_scheduler_type="constant_with_warmup",
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.completions_per_step,
        gradient_accumulation_steps=1,
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        top_p=settings.top_p,
        beta=settings.beta,
        epsilon=settings.epsilon,
        epsilon_high=settings.epsilon_high,
        loss_type=settings.loss_type,
        scale_rewards=settings.scale_rewards,
        mask_truncated_completions=settings.mask_truncated_completions,
        num_iterations=settings.num_iterations,
        use_vllm=settings.use_vllm,
        vllm_mode="colocate",
        max_grad_norm=float(trainer_config.get("gradient_clip_val") or 0.0) or 1.0,
        use_cpu=trainer_config.get("accelerator", "cpu") == "cpu",
        bf16=precision.startswith("bf16"),
        seed=settings.seed,
        data_seed=settings.seed,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=not trainer_config.get("enable_progress_bar", True),
    )


def train_grpo(
    settings: RLSettings,
    reward: LengthReward,
    world: ProblemSource,
    model_dir: Path,
    load_kwargs: dict,
    trainer_config: dict,
    out: Path,
    loggers: list | None = None,
) -> dict:
    """GRPO from the model in `model_dir` on the prompts of `settings.split` with `reward`; saves the policy and
    its tokenizer into `out`, the rollouts into `out/rollouts.jsonl`, and returns the summary (steps, compute, the
    trainer's log history)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    problems = world.split(settings.split)
    if not problems:
        raise ValueError(f"rl.split={settings.split!r}: the world {world.name} has no problems in it")
    tokenizer = AutoTokenizer.from_pretrained(model_dir, **load_kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, **load_kwargs)
    eos = model.generation_config.eos_token_id
    eos_ids = {eos} if isinstance(eos, int) else set(eos or [tokenizer.eos_token_id])
    scorer = RolloutReward(
        reward,
        world,
        problems,
        settings.num_generations,
        eos_ids,
        lambda ids: tokenizer.decode(ids, skip_special_tokens=False),
    )
    data = Dataset.from_list([{"prompt": p.prompt, "problem_id": p.id} for p in problems])
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=scorer,
        args=grpo_config(settings, trainer_config, out),
        train_dataset=data,
        processing_class=tokenizer,
        callbacks=[lightning_logs_callback(loggers)] if loggers else None,
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    trainer.model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    with open(out / ROLLOUTS_FILE, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in scorer.rollouts)
    generated = sum(r["n_tokens"] for r in scorer.rollouts)
    trained = sum(
        r["n_tokens"] for r in scorer.rollouts if not (settings.mask_truncated_completions and r["truncated"])
    )
    history = [{k: v for k, v in h.items() if isinstance(v, (int, float))} for h in trainer.state.log_history]
    return {
        "steps": int(trainer.state.global_step),
        "rollouts": len(scorer.rollouts),
        "prompts": len(problems),
        "generated_tokens": generated,
        # completion tokens in the loss, over every optimisation pass (rl.num_iterations)
        "trained_tokens": trained * settings.num_iterations,
        "rollout_accuracy_first": _mean_at(scorer.rollouts, "correct", first=True),
        "rollout_accuracy_last": _mean_at(scorer.rollouts, "correct", first=False),
        "rollout_length_first": _mean_at(scorer.rollouts, "n_tokens", first=True),
        "rollout_length_last": _mean_at(scorer.rollouts, "n_tokens", first=False),
        "train_seconds": seconds,
        "rollout_engine": "vllm" if settings.use_vllm else "hf",
        "log_history": history,
    }


def _mean_at(rollouts: list[dict], field: str, first: bool) -> float:
    """The mean of `field` over the rollouts of the first (or last) training step."""
    if not rollouts:
        return math.nan
    step = rollouts[0]["step"] if first else rollouts[-1]["step"]
    values = [float(r[field]) for r in rollouts if r["step"] == step]
    return sum(values) / len(values)
