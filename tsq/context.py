"""What every stage function receives besides its own settings: the run's world, store and sampler.

Stages are functions of (`RunContext`, their input artifacts, their settings); the context is built
once by `tsq.pipeline` from the config, so stages never see raw config dicts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tsq.cache import ArtifactStore, result_settings
from tsq.data.base import ProblemSource
from tsq.models.base import ModelHandle
from tsq.sampling.base import Sampler


@dataclass(frozen=True)
class SamplerChoice:
    """The `sampler=` choice: builds a sampler for a model directory; its settings enter the keys of
    every stage that samples (minus progress bars, see `tsq.cache.NON_RESULT_SETTINGS`)."""

    factory: Callable[..., Sampler]
    settings: dict

    def __call__(self, model: ModelHandle) -> Sampler:
        """A sampler over `model` (its revision passed on; remote code per the sampler's own setting)."""
        return self.factory(model_path=model.path, revision=model.revision)

    def key_material(self) -> dict:
        return result_settings(self.settings)


@dataclass(frozen=True)
class RunContext:
    """The shared bundle of one run: the problems, the artifact store, how to sample and how to train.

    `trainer` holds Lightning Trainer arguments (the `trainer=` group: accelerator, devices, precision,
    strategy); `make_loggers` creates the `logger=` group's loggers when a training starts; `output_dir`
    is the run's own folder (figures, metrics).
    """

    world: ProblemSource
    store: ArtifactStore
    sampler: SamplerChoice
    trainer: dict = field(default_factory=lambda: {"accelerator": "cpu", "devices": 1})
    make_loggers: Callable[[], list] | None = None
    output_dir: Path | None = None

    def trainer_key_material(self) -> dict:
        return result_settings(self.trainer)
