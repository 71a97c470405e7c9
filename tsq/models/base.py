"""The interface of a `model=` config group: something that yields a Hugging Face model directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tsq.cache import ArtifactStore


@dataclass(frozen=True)
class ModelHandle:
    """A model directory (or hub id) that `AutoModelForCausalLM` and `AutoTokenizer` load, its cache key,
    and how to load it: the hub `revision` (None: a local directory or the default branch) and whether its
    repository's code may run (`trust_remote_code`, off unless `model.trust_remote_code` turns it on)."""

    name: str
    path: Path
    key: str
    revision: str | None = None
    trust_remote_code: bool = False

    def load_kwargs(self) -> dict:
        """What every `from_pretrained` of this model passes besides the path."""
        return {"revision": self.revision, "trust_remote_code": self.trust_remote_code}

    def derived(self, name: str, path: Path, key: str) -> ModelHandle:
        """A model trained from this one and saved locally (no revision; the same remote-code trust)."""
        return ModelHandle(name, Path(path), key, None, self.trust_remote_code)


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
        return ModelHandle(self.name, Path(self.path), self.key(world), self.revision, self.trust_remote_code)
