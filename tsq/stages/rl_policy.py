"""Stage `rl_policy`: the policy trained online from the base model with a length reward (`tsq.training.rl`, TRL's
GRPOTrainer), an HF directory with its rollouts (`rollouts.jsonl`) and summary; keyed on the base model, the
world, `rl=`, `reward=` and `trainer=`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tsq.cache import Build, Stage, world_key
from tsq.models.base import ModelHandle
from tsq.stages.context import RunContext
from tsq.training.length_rewards import LengthReward
from tsq.training.rl import RLSettings, train_grpo

RL_POLICY = Stage("rl_policy", 1)
SUMMARY_FILE = "rl_summary.json"


@dataclass(frozen=True)
class RLPolicy:
    """What the stage returns: the trained policy and its summary (steps, compute, per-step logs)."""

    model: ModelHandle
    summary: dict


def rl_key_parts(ctx: RunContext, model: ModelHandle, settings: RLSettings, reward: LengthReward) -> tuple[dict, dict]:
    own = {"rl": settings.key_material(), "reward": reward.key_material(), "trainer": ctx.trainer_key_material()}
    return own, {"model": model.key, "world": world_key(ctx.world)}


def train_rl(ctx: RunContext, model: ModelHandle, settings: RLSettings, reward: LengthReward) -> RLPolicy:
    """Train (or load) the RL policy."""

    def build(job: Build) -> None:
        loggers = ctx.make_loggers() if ctx.make_loggers else []  # created only when training runs
        summary = train_grpo(
            settings, reward, ctx.world, model.path, model.load_kwargs(), ctx.trainer, job.dir, loggers
        )
        (job.dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))

    size = f"{settings.max_steps} steps of {settings.prompts_per_step} prompts x {settings.num_generations} rollouts"
    artifact = ctx.store.cached(
        RL_POLICY,
        *rl_key_parts(ctx, model, settings, reward),
        build,
        doing=f"GRPO with reward {reward.name}: {size}",
        description={"model": model.key, "reward": reward.name},
    )
    summary = json.loads((artifact.path / SUMMARY_FILE).read_text())
    return RLPolicy(model.derived(f"{model.name}+grpo_{reward.name}", artifact.path, artifact.key), summary)
