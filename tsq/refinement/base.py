"""The interface of a `refiner=` config group: what data construction hands a refiner and gets back.

A refiner rewrites chosen (positive) traces before they become preference pairs. `Refiner` is what
the `refined` stage (`tsq.stages.refined`) calls; `ModelRefiner` is the base of refiners that rewrite steps
with a model (they get a `ScoringSampler` over the policy); `NoRefiner` keeps every trace as sampled and
loads nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol, runtime_checkable

from tsq.cache import ConfiguredPart
from tsq.sampling.base import Sampler, completion_length


@dataclass(frozen=True)
class ChosenTrace:
    """A sampled response chosen as a positive, with the counts the samples stage measured for it."""

    prompt: str
    text: str
    n_tokens: int  # the EOS that ended it included (tsq.sampling.base.completion_length)
    n_steps: int
    step_tokens: int
    ended_with_eos: bool = True


@dataclass
class RefinedTrace:
    """A trace after refinement, with what happened to its steps. `token_ids` is None for a trace that
    was kept as sampled (its length is the sampled one)."""

    text: str
    n_tokens: int
    steps_before: int
    steps_after: int
    step_tokens_before: int
    step_tokens_after: int
    steps_scored: int
    steps_accepted: int
    accepted_kl: list[float] = field(default_factory=list)
    # candidates sampled for its steps, and those discarded because they reached refiner.max_step_tokens
    # before the step delimiter (a cut step is not a shorter step)
    candidates: int = 0
    candidates_cut: int = 0
    token_ids: list[int] | None = None

    @property
    def acceptance_rate(self) -> float:
        return self.steps_accepted / self.steps_before if self.steps_before else 0.0

    @classmethod
    def unchanged(cls, trace: ChosenTrace) -> RefinedTrace:
        return cls(
            text=trace.text,
            n_tokens=trace.n_tokens,
            steps_before=trace.n_steps,
            steps_after=trace.n_steps,
            step_tokens_before=trace.step_tokens,
            step_tokens_after=trace.step_tokens,
            steps_scored=0,
            steps_accepted=0,
        )


@runtime_checkable
class ScoringSampler(Sampler, Protocol):
    """A sampler over an HF model in memory, whose `model` and `tokenizer` a refiner also uses to
    tokenize traces and score candidates (`tsq.sampling.hf.HFSampler`; vLLM's sampler loads an HF copy)."""

    model: Any
    tokenizer: Any


class Refiner(Protocol):
    """`needs_policy`: whether `refine_chosen` gets a `ScoringSampler` over the policy (else None, and no
    model is loaded). Results come back in the order of `traces`. The `refined` stage cuts the traces into shards
    of `shard_traces` (None: one shard of them all), each refined by `for_shard(index)` and written on its own, so
    a killed run resumes from its last shard and `executor=ray` spreads them over model replicas."""

    name: str
    needs_policy: bool
    shard_traces: int | None

    def key_material(self) -> dict: ...

    def for_shard(self, index: int) -> Refiner:
        """The refiner of shard `index`: its random draws its own (shard 0's are the refiner's), so a shard is the
        same whichever worker builds it."""
        ...

    def refine_chosen(
        self, policy: ScoringSampler | None, traces: Sequence[ChosenTrace], step_delimiter: str
    ) -> list[RefinedTrace]: ...


class ModelRefiner(ConfiguredPart):
    """Base of refiners that rewrite steps with a model: `refine` works on (prompt, response) texts."""

    needs_policy: ClassVar[bool] = True
    shard_traces: ClassVar[int | None] = None  # (a refiner that samples may make it a setting: StepRefiner)

    def for_shard(self, index: int) -> Refiner:
        # greedy or rule-based rewriting draws nothing at random: every shard's refiner is this one
        return self

    def refine(
        self, sampler: ScoringSampler, prompts: list[str], responses: list[str], step_delimiter: str
    ) -> list[RefinedTrace]:
        raise NotImplementedError

    def refine_chosen(
        self, policy: ScoringSampler | None, traces: Sequence[ChosenTrace], step_delimiter: str
    ) -> list[RefinedTrace]:
        if policy is None:
            raise ValueError(f"refiner={getattr(self, 'name', type(self).__name__)} needs the policy's sampler")
        refined = self.refine(policy, [t.prompt for t in traces], [t.text for t in traces], step_delimiter)
        # `refine` counts the tokens of the new text; the EOS that ended the sampled trace ends the refined one too
        return [
            r if r.token_ids is None else replace(r, n_tokens=completion_length(len(r.token_ids), t.ended_with_eos))
            for r, t in zip(refined, traces, strict=True)
        ]


@dataclass
class NoRefiner(ConfiguredPart, part="refiner/none"):
    """`refiner=none`: chosen traces are used as sampled (no model is loaded)."""

    name: str = "none"
    needs_policy: ClassVar[bool] = False
    shard_traces: ClassVar[int | None] = None

    def for_shard(self, index: int) -> Refiner:
        return self

    def refine_chosen(
        self, policy: ScoringSampler | None, traces: Sequence[ChosenTrace], step_delimiter: str
    ) -> list[RefinedTrace]:
        return [RefinedTrace.unchanged(t) for t in traces]
