"""What every problem source (synthetic world or real benchmark) hands to the pipeline."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable


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


@runtime_checkable
class ProblemSource(Protocol):
    """The interface of a `data=` config group: fixed splits, a grader and a step delimiter.

    A source whose prompts depend on the model's tokenizer (chat templates) also has `bind(model_path)`,
    which returns the source with rendered prompts; the pipeline calls it once the model exists.
    """

    name: str
    step_delimiter: str

    def split(self, name: str) -> list[Problem]: ...

    def grade(self, problem: Problem, response: str) -> bool: ...

    def grade_many(self, problems: list[Problem], responses: list[str]) -> list[bool]:
        """Batch grading (a process pool for math-verify, the sandbox for code); same order as given."""
        ...

    def fingerprint(self) -> dict: ...
