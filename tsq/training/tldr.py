"""TL;DR (arXiv 2506.02678, "Too Long, Do Re-weighting for Efficient LLM Reasoning Compression"):
SFT on a System-1 / System-2 data mixture whose weights follow the dev set.

System-1 data: a short-reasoning model's correct answers to easy problems. System-2 data: the base
model's correct long reasoning on hard problems. Every `update_every` optimizer steps the policy is
evaluated on the dev set, and the mixture weights move by TL;DR's rule (`update_weights`); the weights
decide how many slots of a resampling buffer each source fills (`MixtureStream`), they never weight the
loss. Bounds (T_short, Acc_short) and (T_long, Acc_long) are measured once on the dev set and cached.
The kept checkpoint is the one with the fewest dev tokens, from the second dev evaluation on (the first after a
re-weighting: `TLDRSettings.first_eligible_step`), among those whose dev accuracy exceeds
(1 - accuracy_drop) * Acc_long (`select_checkpoint`); when none does, the most accurate one is kept and the
summary says so (`selected.met_bar` false; the tables print it). `rule=constant` is the static-mixture baseline.
System-1 data are short chains of thought: responses with fewer than `system1_min_steps` reasoning steps (a
bare answer) are not System-1 data, and how many were left out is in the summary.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, IterableDataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from tsq.data.base import ProblemSource
from tsq.sampling.base import SamplingParams
from tsq.sampling.hf import HFSampler
from tsq.training.lm import CausalLMModule, collate_pairs, encode_pairs

log = logging.getLogger(__name__)


RULES = ("dynamic", "constant", "schedule", "random")


# ---------------------------------------------------------------------------------------------- pure rules
@dataclass(frozen=True)
class Bounds:
    """Dev-set mean tokens and accuracy of the short (System-1) and the long (System-2, base) model."""

    t_short: float
    acc_short: float
    t_long: float
    acc_long: float


def benefits(t_now: float, acc_now: float, b: Bounds) -> tuple[float, float]:
    """(benefit_short, benefit_long) = (max((T_now - T_short) / |T_long - T_short|, 0),
    max((Acc_long - Acc_now) / |Acc_long - Acc_short|, 0)); a zero gap is floored at 1e-6."""
    short = max((t_now - b.t_short) / max(abs(b.t_long - b.t_short), 1e-6), 0.0)
    long = max((b.acc_long - acc_now) / max(abs(b.acc_long - b.acc_short), 1e-6), 0.0)
    return short, long


def update_weights(alpha: Sequence[float], benefit: Sequence[float], eta: float, smoothing: float) -> list[float]:
    """alpha <- softmax(log alpha + eta * benefit), then (1 - c) alpha + c / K (DoReMi's smoothing)."""
    logits = np.log(np.asarray(alpha, dtype=float)) + eta * np.asarray(benefit, dtype=float)
    new = np.exp(logits - logits.max())
    new /= new.sum()
    new = (1 - smoothing) * new + smoothing / len(new)
    return (new / new.sum()).tolist()


def scheduled_weights(init: Sequence[float], end: Sequence[float], update: int, updates: int) -> list[float]:
    """The fixed-schedule ablation: after `update` of `updates` re-weightings, the weights lie that fraction of the
    way from `init` to `end` (linearly), whatever the dev set says."""
    if updates <= 0 or not 0 <= update <= updates:
        raise ValueError(f"update {update} of {updates}: need 0 <= update <= updates and updates > 0")
    fraction = update / updates
    return [(1 - fraction) * a + fraction * b for a, b in zip(init, end, strict=True)]


def random_weights(seed: int, update: int) -> list[float]:
    """The random re-weighting ablation: the System-1 weight of re-weighting `update` drawn uniformly from [0, 1]
    (seeded by the run's seed and the update), so the weights move as often as TL;DR's, in no informed direction."""
    short = random.Random(seed * 1_000_003 + update).random()
    return [short, 1.0 - short]


def buffer_counts(alpha: Sequence[float], size: int) -> list[int]:
    """Slots per source: int(alpha_d * size) each, the remainder to source 0 (as TL;DR's code does)."""
    counts = [int(a * size) for a in alpha]
    counts[0] += size - sum(counts)
    return counts


def select_checkpoint(
    history: Sequence[dict], acc_long: float, accuracy_drop: float = 0.3, min_step: int = 0
) -> tuple[int, bool]:
    """(index into `history`, whether it met the bar) of the kept checkpoint. `history` holds dicts with step,
    dev_tokens, dev_acc. The rule: fewest dev tokens among steps >= min_step with dev_acc > (1 - accuracy_drop)
    * acc_long (the bar); if none meets the bar, the most accurate one (fewest tokens on ties), flagged False."""
    if not history:
        raise ValueError("no dev evaluations to select a checkpoint from")
    eligible = [i for i, h in enumerate(history) if h["step"] >= min_step]
    if not eligible:
        raise ValueError(f"no dev evaluation at step {min_step} or later among steps {[h['step'] for h in history]}")
    good = [i for i in eligible if history[i]["dev_acc"] > (1 - accuracy_drop) * acc_long]
    if good:
        return min(good, key=lambda i: (history[i]["dev_tokens"], i)), True
    return min(eligible, key=lambda i: (-history[i]["dev_acc"], history[i]["dev_tokens"], i)), False


class MixtureStream(IterableDataset):
    """An endless stream drawing from K sources through a shuffled buffer of `size` slots, refilled with
    the current weights whenever it runs out or the weights change. Each source is read in order and
    wraps around (TL;DR's `DynamicLong2ShortDataset`)."""

    def __init__(self, sources: Sequence[Sequence], alpha: Sequence[float], size: int, seed: int = 0) -> None:
        if any(len(s) == 0 for s in sources):
            raise ValueError(f"every mixture source needs data; sizes {[len(s) for s in sources]}")
        if size <= 0:
            raise ValueError(f"buffer size must be > 0, got {size}")
        self.sources, self.size, self.seed = [list(s) for s in sources], size, seed
        self.cursors = [0] * len(sources)
        self.refills = 0
        self.set_weights(alpha)

    def set_weights(self, alpha: Sequence[float]) -> None:
        self.alpha = list(alpha)
        slots = [d for d, n in enumerate(buffer_counts(self.alpha, self.size)) for _ in range(n)]
        random.Random(self.seed + self.refills).shuffle(slots)
        self.refills += 1
        self.buffer, self.position = slots, 0

    def next_source(self) -> int:
        if self.position == len(self.buffer):
            self.set_weights(self.alpha)
        d = self.buffer[self.position]
        self.position += 1
        return d

    def __iter__(self) -> Iterator:
        while True:
            d = self.next_source()
            item = self.sources[d][self.cursors[d] % len(self.sources[d])]
            self.cursors[d] += 1
            yield item


# ---------------------------------------------------------------------------------------------- settings
@dataclass
class TLDRSettings:
    """`tldr=`: dynamic (TL;DR), static (1:1, never updated) or short_only (System-1 data alone)."""

    name: str = "tldr"
    # dynamic (TL;DR), constant (the static mixture), and two ablations of the dev feedback: schedule (the weights
    # move linearly from init to schedule_end whatever the dev set says) and random (re-drawn at every update)
    rule: str = "dynamic"
    schedule_end: list[float] = field(default_factory=lambda: [0.8, 0.2])
    init: list[float] = field(default_factory=lambda: [0.5, 0.5])
    eta: float = 4.0
    smoothing: float = 1e-4
    update_every: int = 32
    steps: int = 256
    batch_size: int = 16
    lr: float = 5e-5
    warmup_steps: int = 5
    weight_decay: float = 0.0
    easy_levels: list[int] = field(default_factory=lambda: [1, 2])
    hard_levels: list[int] = field(default_factory=lambda: [3, 4, 5])
    short_model_path: str | None = None  # a real short-CoT model (Qwen2.5-Instruct in the paper)
    short_model_style: str = "concise"  # synthetic world: the tiny twin's teacher style (concise or system1)
    system1_samples: int = 4
    # a System-1 example is a short chain of thought: at least this many reasoning steps (0 admits bare answers)
    system1_min_steps: int = 1
    system2_pick: str = "shortest"
    dev_samples: int = 1
    dev_temperature: float = 1.0
    bound_samples: int = 4
    bound_temperature: float = 0.7
    bound_top_p: float = 0.95
    max_new_tokens: int = 256
    accuracy_drop: float = 0.3
    seed: int = 0

    def key_material(self) -> dict:
        return asdict(self)

    @property
    def updates(self) -> int:
        """How many times the weights are re-set in a training (one per dev evaluation)."""
        return self.steps // self.update_every + (1 if self.steps % self.update_every else 0)

    @property
    def first_eligible_step(self) -> int:
        """The first step whose checkpoint may be kept: the second dev evaluation, the first after a re-weighting (the
        checkpoint of the first evaluation was trained on the initial mixture alone, so with the dynamic rule it is
        the static mixture's). The static rule keeps to the same steps, so the two rows are chosen alike."""
        return 2 * self.update_every

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"tldr.rule must be one of {RULES}, got {self.rule!r}")
        if len(self.schedule_end) != 2 or min(self.schedule_end) < 0 or not math.isclose(sum(self.schedule_end), 1.0):
            raise ValueError(
                f"tldr.schedule_end must be two non-negative weights summing to 1, got {self.schedule_end}"
            )
        if len(self.init) != 2 or min(self.init) < 0 or not math.isclose(sum(self.init), 1.0):
            raise ValueError(f"tldr.init must be two non-negative weights summing to 1, got {self.init}")
        if self.rule == "dynamic" and min(self.init) == 0:
            raise ValueError("tldr.init: the dynamic rule needs both weights > 0 (it works in log space)")
        for key in ("update_every", "steps", "batch_size", "system1_samples", "dev_samples", "bound_samples"):
            if getattr(self, key) <= 0:
                raise ValueError(f"tldr.{key} must be > 0, got {getattr(self, key)}")
        if self.system1_min_steps < 0:
            raise ValueError(f"tldr.system1_min_steps must be >= 0, got {self.system1_min_steps}")
        if self.system2_pick not in ("shortest", "all"):
            raise ValueError(f"tldr.system2_pick must be shortest or all, got {self.system2_pick!r}")
        if not 0 <= self.accuracy_drop < 1:
            raise ValueError(f"tldr.accuracy_drop must lie in [0, 1), got {self.accuracy_drop}")
        if self.steps < self.first_eligible_step:
            raise ValueError(
                f"tldr.steps={self.steps} ends before the first checkpoint trained on a re-weighted mixture (step "
                f"{self.first_eligible_step} = 2 x tldr.update_every): no checkpoint could be kept"
            )


# ---------------------------------------------------------------------------------------------- data
def system1_data(frame: pd.DataFrame, prompts: dict, levels: Sequence[int], min_steps: int = 0) -> list[dict]:
    """The first correct short-model response with at least `min_steps` reasoning steps of each easy problem."""
    rows = frame[frame["correct"] & frame["level"].astype(int).isin(list(levels)) & (frame["n_steps"] >= min_steps)]
    first = rows.sort_values(["problem_id", "sample"]).groupby("problem_id", sort=True).head(1)
    return [{"prompt": prompts[r.problem_id], "response": r.text, "n_tokens": r.n_tokens} for r in first.itertuples()]


def system2_data(frame: pd.DataFrame, prompts: dict, levels: Sequence[int], pick: str) -> list[dict]:
    """The base model's correct responses to hard problems: the shortest per problem, or all."""
    rows = frame[frame["correct"] & frame["level"].astype(int).isin(list(levels))]
    if pick == "shortest":
        rows = rows.sort_values(["problem_id", "n_tokens", "sample"]).groupby("problem_id", sort=True).head(1)
    return [{"prompt": prompts[r.problem_id], "response": r.text, "n_tokens": r.n_tokens} for r in rows.itertuples()]


def dev_stats(frame: pd.DataFrame) -> tuple[float, float]:
    return float(frame["n_tokens"].mean()), float(frame["correct"].mean())


# ---------------------------------------------------------------------------------------------- training
class DevReweighting(L.Callback):
    """Every `update_every` steps: evaluate on dev, record, update the mixture weights, keep the best."""

    def __init__(self, settings: TLDRSettings, stream: MixtureStream, bounds: Bounds, world, tokenizer) -> None:
        self.settings, self.stream, self.bounds, self.world, self.tokenizer = settings, stream, bounds, world, tokenizer
        self.dev = world.split("dev")
        self.history: list[dict] = []
        self.best_state: dict | None = None
        self.best_index: int | None = None

    def evaluate(self, model: torch.nn.Module) -> tuple[float, float]:
        was_training = model.training
        model.eval()
        sampler = HFSampler.from_model(model, self.tokenizer)
        s = self.settings
        params = SamplingParams(
            n=s.dev_samples,
            max_new_tokens=s.max_new_tokens,
            temperature=s.dev_temperature,
            seed=s.seed + len(self.history),
        )
        groups = sampler.generate([p.prompt for p in self.dev], params)
        flat = [(p, c) for p, g in zip(self.dev, groups, strict=True) for c in g]
        correct = self.world.grade_many([p for p, _ in flat], [c.text for _, c in flat])
        model.train(was_training)
        return float(np.mean([c.n_tokens for _, c in flat])), float(np.mean(correct))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.settings.update_every and step != trainer.max_steps:
            return
        tokens, acc = self.evaluate(pl_module.model)
        benefit = benefits(tokens, acc, self.bounds)
        alpha, s, update = self.stream.alpha, self.settings, len(self.history) + 1
        if s.rule == "dynamic":
            alpha = update_weights(alpha, benefit, s.eta, s.smoothing)
        elif s.rule == "schedule":
            alpha = scheduled_weights(s.init, s.schedule_end, update, s.updates)
        elif s.rule == "random":
            alpha = random_weights(s.seed, update)
        if s.rule != "constant":
            self.stream.set_weights(alpha)
        self.history.append(
            {
                "step": step,
                "dev_tokens": tokens,
                "dev_acc": acc,
                "benefit_short": benefit[0],
                "benefit_long": benefit[1],
                "alpha_short": alpha[0],
                "alpha_long": alpha[1],
            }
        )
        log.info("tldr step %d: dev tokens %.1f acc %.3f -> weights %.3f / %.3f", step, tokens, acc, *alpha)
        for logger in trainer.loggers:  # the mixture weights and dev metrics as series (W&B, CSV)
            logger.log_metrics({f"tldr/{k}": v for k, v in self.history[-1].items() if k != "step"}, step=step)
        if step < self.settings.first_eligible_step:
            return
        chosen, _ = select_checkpoint(
            self.history, self.bounds.acc_long, self.settings.accuracy_drop, self.settings.first_eligible_step
        )
        if chosen == len(self.history) - 1 and chosen != self.best_index:
            self.best_index = chosen
            self.best_state = {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()}


def train_mixture(
    settings: TLDRSettings,
    world: ProblemSource,
    model_dir: Path,
    load_kwargs: dict,
    sources,
    bounds: Bounds,
    trainer_config: dict,
    out: Path,
    loggers: list | None = None,
) -> dict:
    """SFT from the model in `model_dir` (loaded with `load_kwargs`) on the System-1 / System-2 mixture `sources`
    with dev re-weighting; saves the kept checkpoint into `out` and returns the summary (bounds, weight history,
    the kept checkpoint)."""
    L.seed_everything(settings.seed, verbose=False)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, **load_kwargs)
    policy = AutoModelForCausalLM.from_pretrained(model_dir, **load_kwargs).train()
    encoded = [encode_pairs(tokenizer, [d["prompt"] for d in s], [d["response"] for d in s]) for s in sources]
    alpha = list(settings.init)
    usable = [w > 0 for w in alpha]
    if any(u and not e for u, e in zip(usable, encoded, strict=True)):
        raise RuntimeError(f"tldr: a source with weight > 0 has no data (sizes {[len(e) for e in encoded]})")
    stream = MixtureStream(
        [e or [None] for e in encoded], alpha, settings.batch_size * settings.update_every, settings.seed
    )
    mean_response = np.mean([len(r) for e in encoded for _, r in e])
    module = CausalLMModule(
        policy,
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup_steps,
        total_steps=settings.steps,
        tokens_per_batch=settings.batch_size * mean_response,
        schedule="constant",
    )
    callback = DevReweighting(settings, stream, bounds, world, tokenizer)
    # the base model on dev exactly as the checkpoints are (n, temperature, seed): the bar's own reference
    base_tokens, base_acc = callback.evaluate(policy)
    loader = DataLoader(
        stream, batch_size=settings.batch_size, collate_fn=lambda b: collate_pairs(b, tokenizer.pad_token_id)
    )
    args = {k: v for k, v in trainer_config.items() if k != "strategy"}
    trainer = L.Trainer(
        max_steps=settings.steps,
        logger=loggers or False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[callback],
        **args,
    )
    trainer.fit(module, loader)
    chosen, met_bar = select_checkpoint(
        callback.history, bounds.acc_long, settings.accuracy_drop, settings.first_eligible_step
    )
    # The rule never returns to an evaluation it once passed over, so the kept snapshot is the chosen one.
    assert callback.best_index == chosen and callback.best_state is not None
    policy.load_state_dict(callback.best_state)
    policy.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {
        "bounds": asdict(bounds),
        "history": callback.history,
        "base_dev": {"dev_tokens": base_tokens, "dev_acc": base_acc, "temperature": settings.dev_temperature},
        "bar": (1 - settings.accuracy_drop) * bounds.acc_long,
        "selected": {**callback.history[chosen], "met_bar": met_bar},
        "system1_examples": len(sources[0]),
        "system2_examples": len(sources[1]),
    }


def plot_weights(history: Sequence[dict], path: Path) -> Path:
    """The mixture weights and dev tokens / accuracy over training steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(history)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    top.plot(frame["step"], frame["alpha_short"], marker="o", label="System-1 (short)")
    top.plot(frame["step"], frame["alpha_long"], marker="o", label="System-2 (long)")
    top.set_ylabel("mixture weight")
    top.legend()
    bottom.plot(frame["step"], frame["dev_tokens"], marker="o", color="tab:green")
    bottom.set_ylabel("dev tokens")
    twin = bottom.twinx()
    twin.plot(frame["step"], frame["dev_acc"], marker="s", color="tab:red")
    twin.set_ylabel("dev accuracy")
    bottom.set_xlabel("step")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
