"""What every problem source (synthetic world or real benchmark) hands to the pipeline."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class Problem:
    """One problem with a known answer. `prompt` is the text the model is conditioned on."""

    id: str
    benchmark: str
    prompt: str
    answer: str
    level: int

    def to_dict(self) -> dict:
        return asdict(self)


# How `max_problems` picks its subset; part of a stage's key wherever max_problems is set, so that a change of
# rule can never reuse an artifact built by the old one.
SUBSET_RULE = "evenly spaced"


def evenly_spaced(problems: list[Problem], count: int | None) -> list[Problem]:
    """`count` problems taken at even intervals over the split, in split order (all of them when `count` is None or
    at least the split's size). Splits are stored level by level, so the first `count` problems would all be the
    easiest level; evenly spaced ones keep each level's share to within one problem."""
    if count is None or count >= len(problems):
        return list(problems)
    return [problems[(i * len(problems)) // count] for i in range(count)]


@dataclass(frozen=True)
class Conversation:
    """A problem as chat messages, for trainers that apply a chat template themselves (TRL's conversational
    format, LLaMA-Factory's sharegpt): the raw `question`, the `messages` before any template (system, user),
    and `response_prefix`, the text the prompt ends with beyond the chat template's own rendering (e.g.
    "<think>\n"), which then belongs at the start of the assistant's reply."""

    question: str
    messages: list[dict[str, str]]
    response_prefix: str = ""


@runtime_checkable
class ProblemSource(Protocol):
    """The interface of a `data=` config group: fixed splits, a grader and a step delimiter.

    What some sources can do beyond this is declared by the capability protocols below; stages test for
    a capability with `isinstance(world, <protocol>)`.
    """

    name: str
    step_delimiter: str

    def split(self, name: str) -> list[Problem]: ...

    def grade(self, problem: Problem, response: str) -> bool: ...

    def grade_many(self, problems: list[Problem], responses: list[str]) -> list[bool]:
        """Batch grading (a process pool for math-verify, the sandbox for code); same order as given."""
        ...

    def fingerprint(self) -> dict: ...

    def conversation(self, problem: Problem) -> Conversation:
        """The problem as chat messages (see `Conversation`)."""
        ...


# ---------------------------------------------------------------------------------- capabilities
class ModelFolder(Protocol):
    """What a world needs of a model to render prompts with its tokenizer: its folder and hub revision (a
    `tsq.models.base.ModelHandle` is one)."""

    path: Path
    revision: str | None


@runtime_checkable
class ChatTemplated(Protocol):
    """Prompts depend on the model's tokenizer (real benchmarks): `bind(model)` returns the source with prompts
    rendered through that model's chat template; the recipe calls it once the base model exists."""

    def bind(self, model: ModelFolder) -> ProblemSource: ...


@runtime_checkable
class TraceAnatomist(Protocol):
    """Knows which tokens of a response were needed (the synthetic world): `anatomy` returns an object with
    `redundant` and `filler` word counts, recorded with every graded sample."""

    def anatomy(self, problem: Problem, response: str) -> Any: ...


@runtime_checkable
class ShortcutProbe(Protocol):
    """Has an answer reachable without reasoning: evaluation then also measures accuracy right after an
    empty thinking block (whether the model learned to skip thinking)."""

    def shortcut_answer(self, problem: Problem) -> str: ...


@runtime_checkable
class Teacher(Protocol):
    """Writes reference traces for fresh problems (the synthetic world): what `model=tiny` is pretrained on."""

    def held_out_prompts(self) -> set[str]: ...

    def sample_problem(self, rng: random.Random, exclude: set[str]) -> Problem: ...

    def teacher_response(self, problem: Problem, rng: random.Random, style: Any = None) -> str: ...

    def style(self, name: str) -> Any:
        """The teacher's named styles (`default`, `concise`, `system1`), as `teacher_response` takes them."""
        ...

    def vocabulary(self) -> list[str]:
        """Every word the teacher writes, in a fixed order (the tiny model's word-level tokenizer)."""
        ...


@runtime_checkable
class ThinkingFormat(Protocol):
    """A source whose responses must close their thinking block (`</think>`) to be graded at all."""

    @property
    def requires_closed_thinking(self) -> bool: ...
