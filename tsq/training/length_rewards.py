"""`reward=`: the length-aware rewards of online RL (GRPO family), as pure functions of one group.

A *group* is the G responses sampled for one prompt: their token lengths (tsq's one convention: the tokens
generated, the end-of-sequence token that ended a response included; `tsq.sampling.base.Completion.n_tokens`),
whether each is correct, and whether each was cut at the generation cap (no end-of-sequence token). Every
reward returns one value per response, split into named components whose sum is the reward (the components are
logged per training step). The formulas follow the papers named in each docstring; where tsq's rendering differs
from a paper's recipe, the docstring says how.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from tsq.cache import ConfiguredPart


@dataclass(frozen=True)
class Group:
    """The responses to one prompt: token lengths, correctness, and cut at the generation cap."""

    lengths: tuple[int, ...]
    correct: tuple[bool, ...]
    truncated: tuple[bool, ...]

    def __post_init__(self) -> None:
        if not len(self.lengths) == len(self.correct) == len(self.truncated):
            raise ValueError(
                f"a group needs one length, correctness and truncation flag per response; got "
                f"{len(self.lengths)}, {len(self.correct)}, {len(self.truncated)}"
            )
        if not self.lengths:
            raise ValueError("a group needs at least one response")
        if any(n < 0 for n in self.lengths):
            raise ValueError(f"response lengths must be >= 0, got {list(self.lengths)}")


# ------------------------------------------------------------------------------------------ pure functions
def correctness(group: Group) -> list[float]:
    """1 for a correct response, 0 otherwise: the verifiable reward of plain GRPO (DeepSeekMath, arXiv 2402.03300)."""
    return [1.0 if ok else 0.0 for ok in group.correct]


def kimi_length_term(group: Group) -> list[float]:
    """Kimi-k1.5's length reward (arXiv 2501.12599, Sec. 2.3.3): lambda = 0.5 - (len - min) / (max - min) over the
    group; a correct response gets lambda, an incorrect one min(0, lambda). All lengths equal: 0 for every response
    (the formula divides by zero; no length is preferred)."""
    low, high = min(group.lengths), max(group.lengths)
    if high == low:
        return [0.0] * len(group.lengths)
    lam = [0.5 - (n - low) / (high - low) for n in group.lengths]
    return [x if ok else min(0.0, x) for x, ok in zip(lam, group.correct, strict=True)]


def within_limit(group: Group, limit: int) -> list[bool]:
    """Whether each response ended (not cut at the cap) within `limit` tokens."""
    return [not cut and n <= limit for n, cut in zip(group.lengths, group.truncated, strict=True)]


def truncation_correctness(group: Group, limit: int) -> list[float]:
    """DLER's truncation penalty (arXiv 2510.15110) and ThinkPrune's length limit (arXiv 2504.01296): the
    correctness reward, but 0 for a response longer than `limit` tokens or cut at the cap."""
    kept = within_limit(group, limit)
    return [1.0 if ok and keep else 0.0 for ok, keep in zip(group.correct, kept, strict=True)]


def shortest_correct_target(group: Group) -> float:
    """ShorterBetter's sample optimal length (arXiv 2504.21370): the shortest correct length in the group, or the
    group's mean length when no response is correct."""
    right = [n for n, ok in zip(group.lengths, group.correct, strict=True) if ok]
    return float(min(right)) if right else statistics.fmean(group.lengths)


def shorterbetter_terms(group: Group, alpha: float, beta: float) -> tuple[list[float], list[float]]:
    """ShorterBetter's reward, alpha * correct - beta * |len - target|, as its two terms (correctness, length)."""
    target = shortest_correct_target(group)
    right = [alpha if ok else 0.0 for ok in group.correct]
    return right, [-beta * abs(n - target) for n in group.lengths]


def outlier_cut(group: Group, alpha: float) -> list[bool]:
    """DOT's dynamic outlier truncation: in a group whose responses are all correct, the responses longer than
    mean + alpha * std of the group's lengths (population std); no response in any other group."""
    if not all(group.correct) or len(group.lengths) < 2:
        return [False] * len(group.lengths)
    bar = statistics.fmean(group.lengths) + alpha * statistics.pstdev(group.lengths)
    return [n > bar for n in group.lengths]


def limit_at(step: int, schedule: Sequence[Sequence[int]]) -> int:
    """The length limit in force at training step `step` of a schedule [[first_step, limit], ...] (ThinkPrune's
    rounds, tightened as training goes on)."""
    current = None
    for first, limit in schedule:
        if step >= first:
            current = limit
    if current is None:
        raise ValueError(f"the limit schedule {list(map(list, schedule))} has no limit for step {step}")
    return int(current)


# ------------------------------------------------------------------------------------------ config parts
class LengthReward(ConfiguredPart):
    """The interface of `reward=`: the components of each response's reward in one group at a training step; the
    reward is their sum."""

    name: ClassVar[str] = "reward"

    def components(self, group: Group, step: int) -> dict[str, list[float]]:
        raise NotImplementedError

    def rewards(self, group: Group, step: int) -> list[float]:
        return total(self.components(group, step))


def total(components: dict[str, list[float]]) -> list[float]:
    """Each response's reward: the sum of its components."""
    return [sum(values) for values in zip(*components.values(), strict=True)]


@dataclass
class Correctness(LengthReward, part="reward/correctness"):
    """Plain GRPO: correctness only, the reference point of every length reward."""

    name: ClassVar[str] = "correctness"

    def components(self, group: Group, step: int) -> dict[str, list[float]]:
        return {"correctness": correctness(group)}


@dataclass
class KimiLength(LengthReward, part="reward/kimi"):
    """Kimi-k1.5's long2short RL (arXiv 2501.12599): correctness plus `weight` x its group length reward. The paper
    warms up on correctness alone before adding the length term; here the weight is constant from step 0."""

    weight: float = 1.0
    name: ClassVar[str] = "kimi"

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"reward.weight must be >= 0, got {self.weight}")

    def components(self, group: Group, step: int) -> dict[str, list[float]]:
        return {"correctness": correctness(group), "length": [self.weight * x for x in kimi_length_term(group)]}


@dataclass
class TruncationPenalty(LengthReward, part="reward/truncation"):
    """DLER's truncation penalty (arXiv 2510.15110): a correct response earns 1 only when it ends within `limit`
    tokens. DLER's optimisation fixes are settings of `rl=` (method=grpo_dler sets them): batch-wise reward
    normalisation (`rl.scale_rewards=batch`) and a higher clip threshold (`rl.epsilon_high=0.28`). Its dynamic
    sampling (drawing more prompts until the batch holds only groups with mixed rewards) TRL's GRPOTrainer does not
    offer: an all-right or all-wrong group stays in the batch with advantage 0 (it adds no gradient, but its tokens
    count in the loss's normaliser)."""

    limit: int = 64
    name: ClassVar[str] = "truncation"

    def __post_init__(self) -> None:
        if self.limit <= 0:
            raise ValueError(f"reward.limit must be > 0, got {self.limit}")

    def components(self, group: Group, step: int) -> dict[str, list[float]]:
        right = correctness(group)
        kept = truncation_correctness(group, self.limit)
        return {"correctness": right, "over_limit": [k - r for k, r in zip(kept, right, strict=True)]}


@dataclass
class ThinkPrune(LengthReward, part="reward/thinkprune"):
    """ThinkPrune (arXiv 2504.01296): a response longer than the current limit earns nothing, and the limit is
    tightened in rounds (`schedule`: [[first_step, limit], ...]). ThinkPrune cuts generation at the limit; here
    rollouts run to `rl.max_completion_length` and a response over the limit gets reward 0, which is the same
    reward, but the policy is also trained on the part beyond the limit."""

    schedule: list = field(default_factory=lambda: [[0, 64]])
    name: ClassVar[str] = "thinkprune"

    def __post_init__(self) -> None:
        if not self.schedule:
            raise ValueError("reward.schedule must list at least one [first_step, limit]")
        firsts = [int(first) for first, _ in self.schedule]
        if firsts[0] != 0 or firsts != sorted(set(firsts)):
            raise ValueError(f"reward.schedule must start at step 0 and increase, got {self.schedule}")
        if any(int(limit) <= 0 for _, limit in self.schedule):
            raise ValueError(f"reward.schedule limits must be > 0, got {self.schedule}")

    def components(self, group: Group, step: int) -> dict[str, list[float]]:
        right = correctness(group)
        kept = truncation_correctness(group, limit_at(step, self.schedule))
        return {"correctness": right, "over_limit": [k - r for k, r in zip(kept, right, strict=True)]}


@dataclass
class ShorterBetter(LengthReward, part="reward/shorterbetter"):
    """ShorterBetter (arXiv 2504.21370): alpha * correct - beta * |len - target|, target the group's shortest correct
    length (its mean length when none is correct). Its repository uses alpha 2.0 and beta 0.001 at lengths of
    thousands of tokens; beta scales with the lengths of the world (conf/reward/shorterbetter.yaml)."""

    alpha: float = 2.0
    beta: float = 0.001
    name: ClassVar[str] = "shorterbetter"

    def __post_init__(self) -> None:
        if self.alpha <= 0 or self.beta < 0:
            raise ValueError(f"reward.alpha must be > 0 and reward.beta >= 0, got {self.alpha}, {self.beta}")

    def components(self, group: Group, step: int) -> dict[str, list[float]]:
        right, length = shorterbetter_terms(group, self.alpha, self.beta)
        return {"correctness": right, "length": length}


@dataclass
class OutlierTruncation(LengthReward, part="reward/dot"):
    """DOT's dynamic outlier truncation: inside a group whose responses are all correct, a response longer than
    mean + alpha * std of the group earns 0 instead of 1 (other groups: correctness). DOT truncates such outliers;
    a reward of 0 is how TRL's reward interface can express it (the outlier's tokens are still trained on)."""

    alpha: float = 1.0
    name: ClassVar[str] = "dot"

    def components(self, group: Group, step: int) -> dict[str, list[float]]:
        cut = outlier_cut(group, self.alpha)
        return {"correctness": correctness(group), "outlier": [-1.0 if c else 0.0 for c in cut]}
