"""The interface of a `model=` config group: something that yields a Hugging Face model directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tsq.cache import ArtifactStore


@dataclass(frozen=True)
class ModelHandle:
    """A model directory that `AutoModelForCausalLM` and `AutoTokenizer` load, and its cache key."""

    name: str
    path: Path
    key: str


class ModelSource(Protocol):
    """The interface of a `model=` config group. `key` is the handle's key, known without building."""

    name: str

    def key(self, world) -> str: ...

    def materialize(self, world, store: ArtifactStore) -> ModelHandle: ...


@dataclass
class PretrainedModel:
    """A model that already exists as an HF directory or hub id (no building here)."""

    name: str
    path: str
    revision: str | None = None
    trust_remote_code: bool = False

    def key(self, world=None) -> str:
        return f"{self.path}@{self.revision or 'main'}"

    def materialize(self, world, store: ArtifactStore) -> ModelHandle:
        return ModelHandle(name=self.name, path=Path(self.path), key=self.key(world))
