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
        """The completion's length, tsq's one convention: the tokens the model generated, the EOS that ended it
        included (as vLLM's `token_ids` count it, as the training losses score it, as the pairs file records it)."""
        return completion_length(len(self.token_ids), self.finish_reason == "eos")


def completion_length(n_ids: int, ended_with_eos: bool) -> int:
    """Tokens of a completion whose text has `n_ids` tokens, plus its EOS when one ended it (`Completion.n_tokens`)."""
    return n_ids + int(ended_with_eos)


MIN_TEMPERATURE = 1e-2


@dataclass(frozen=True)
class SamplingParams:
    """Validated before any model is loaded, so a bad value fails fast and names its key."""

    n: int = 1
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name, ok, rule in (
            ("n", self.n > 0, "> 0"),
            ("max_new_tokens", self.max_new_tokens > 0, "> 0"),
            # below MIN_TEMPERATURE the logits overflow once divided (1e-40 gives inf and NaN probabilities)
            ("temperature", self.temperature == 0 or self.temperature >= MIN_TEMPERATURE,
             f"0 (greedy) or at least {MIN_TEMPERATURE}"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("seed", 0 <= self.seed < 2**32, "a whole number from 0 to 2**32 - 1"),
        ):  # fmt: skip
            if not ok:
                raise InvalidSetting(name, f"{name} must be {rule}, got {getattr(self, name)}")

    @classmethod
    def configured(cls, group: str, names: dict[str, str] | None = None, **values) -> SamplingParams:
        """SamplingParams from the config group `group`, whose errors name the config key (`names` maps a
        parameter to the group's own name for it, e.g. n -> n_samples)."""
        try:
            return cls(**values)
        except InvalidSetting as err:
            key = f"{group}.{(names or {}).get(err.name, err.name)}"
            raise ValueError(f"{key}{str(err)[len(err.name) :]}") from None


class InvalidSetting(ValueError):
    """A bad value of the setting `name`."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


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

    def close(self) -> None:
        """Free the model (and any engine process); the sampler is not used afterwards."""
        ...
