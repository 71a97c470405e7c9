"""The interface of a `model=` config group: something that yields a Hugging Face model directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from tsq.data.base import ProblemSource

if TYPE_CHECKING:
    from tsq.models.tiny import Pretraining


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
    """The interface of a `model=` config group: a model that exists already (`artifact` None: a hub id or a
    directory, `existing` gives its handle) or one built into the artifact store by the stage that `artifact`
    names (`tsq.stages.base_model`), from `key_material` and the input keys `key_inputs(world)` by `build`."""

    name: str
    trust_remote_code: bool
    artifact: str | None

    def existing(self) -> ModelHandle: ...

    def key_material(self) -> dict: ...

    def key_inputs(self, world: ProblemSource) -> dict[str, str]: ...

    def build(self, world: ProblemSource, out_dir: Path) -> None: ...


@runtime_checkable
class TrainedOnTeacher(Protocol):
    """A model source built by training on a synthetic world's teacher traces (`model=tiny` from scratch,
    `model=smollm2_world` fine-tuned), `pretrain` its training settings (steps, batch size, ...)."""

    pretrain: Pretraining


@dataclass
class PretrainedModel:
    """A model that already exists as an HF directory or hub id (no building here)."""

    name: str
    path: str
    revision: str | None = None
    trust_remote_code: bool = False
    artifact: ClassVar[None] = None

    def existing(self) -> ModelHandle:
        key = f"{self.path}@{self.revision or 'main'}"
        return ModelHandle(self.name, Path(self.path), key, self.revision, self.trust_remote_code)

    def key_material(self) -> dict:
        return {"path": self.path, "revision": self.revision}

    def key_inputs(self, world: ProblemSource) -> dict[str, str]:
        return {}

    def build(self, world: ProblemSource, out_dir: Path) -> None:
        raise TypeError(f"model={self.name} is an existing model ({self.path}); nothing builds it")
