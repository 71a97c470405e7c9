"""The interface of a `sampler=` config group and what it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

FinishReason = Literal["eos", "stop", "length"]


@dataclass(frozen=True)
class Completion:
    """One sampled continuation. `token_ids` excludes the prompt, padding and EOS (a stop token is kept)."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class SamplingParams:
    """Validated before any model is loaded, so a bad value fails fast and names its key."""

    n: int = 1
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise ValueError(f"n (samples per prompt) must be > 0, got {self.n}")
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be > 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")


class Sampler(Protocol):
    """`generate` returns, for each prompt, `params.n` completions in a fixed order. A completion ends at
    EOS (dropped), at the end of a `stop` string (kept, finish reason "stop") or at max_new_tokens."""

    def generate(
        self, prompts: list[str], params: SamplingParams, stop: list[str] | None = None
    ) -> list[list[Completion]]: ...

    def generate_ids(
        self, prompt_ids: list[list[int]], params: SamplingParams, stop: list[str] | None = None
    ) -> list[list[Completion]]: ...

    def count_tokens(self, texts: list[str]) -> list[int]: ...
