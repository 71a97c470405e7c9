"""`sampling=`: how many responses per training problem data construction samples, and how."""

from __future__ import annotations

from dataclasses import dataclass

from tsq.data.base import SUBSET_RULE, Problem, ProblemSource, evenly_spaced
from tsq.sampling.base import SamplingParams

HELD_OUT_SPLITS = ("dev", "test")


@dataclass
class SamplingSettings:
    """`sampling=`: N graded responses per problem of a split, the input of data construction.

    CPU default N = 16 at T = 0.9; `sampling=paper` is the paper's N = 64 (experiments/paper_notes.md §1.2).
    """

    split: str = "train"
    # sampling from dev or test (the training data of construction) is refused unless this is true
    allow_held_out_split: bool = False
    n: int = 16
    temperature: float = 0.9
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    shard_size: int = 64
    max_problems: int | None = None

    def __post_init__(self) -> None:
        self.params = SamplingParams.configured(
            "sampling",
            n=self.n,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
        )
        if self.shard_size <= 0:
            raise ValueError(f"sampling.shard_size must be > 0, got {self.shard_size}")
        if self.split in HELD_OUT_SPLITS and not self.allow_held_out_split:
            raise ValueError(
                f"sampling.split={self.split}: training data would come from a held-out split, so its scores (and any "
                "setting chosen on it) would no longer measure generalisation; set sampling.allow_held_out_split=true "
                "if that is what you want"
            )
        if self.max_problems is not None and self.max_problems <= 0:
            raise ValueError(f"sampling.max_problems must be > 0, got {self.max_problems}")

    def problems(self, world: ProblemSource) -> list[Problem]:
        problems = world.split(self.split)
        if not problems:
            raise ValueError(f"sampling.split={self.split!r} of data={world.name} is empty")
        return evenly_spaced(problems, self.max_problems)

    def key_material(self) -> dict:
        keys = ("split", "n", "temperature", "top_p", "max_new_tokens", "seed", "shard_size")
        material = {k: getattr(self, k) for k in keys}
        if self.max_problems is not None:  # unset keeps the keys of runs on whole splits
            material |= {"max_problems": self.max_problems, "subset": SUBSET_RULE}
        return material
