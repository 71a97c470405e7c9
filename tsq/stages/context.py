"""What every stage function receives besides its own settings: the run's world, store and sampler.

Stages are functions of (`RunContext`, their input artifacts, their settings objects); the context is built
once by `tsq.stages.recipe` from the config, so stages never see the Hydra config. (The `trainer=` and
`sampler=` groups travel as plain dicts: Lightning's Trainer arguments and the sampler's settings.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tsq.cache import ArtifactStore, result_settings
from tsq.data.base import ProblemSource
from tsq.models.base import ModelHandle
from tsq.sampling.base import Sampler
from tsq.sampling.executors import Executor, LocalExecutor, ModelReplica


@dataclass(frozen=True)
class SamplerChoice:
    """The `sampler=` choice: builds a sampler for a model directory; its settings enter the keys of
    every stage that samples (minus progress bars, see `tsq.cache.NON_RESULT_SETTINGS`).

    One sampler is alive at a time and serves every stage that samples the same model (a vLLM engine
    takes a minute to start and holds most of a GPU's memory): asking for another model closes it first,
    and `release` closes it before training needs the memory.
    """

    factory: Callable[..., Sampler]
    settings: dict
    _live: dict = field(default_factory=dict, compare=False, repr=False)

    def __call__(self, model: ModelHandle) -> Sampler:
        """The sampler over `model` (its revision passed on; remote code per the sampler's own setting)."""
        if self._live and self._live["model"] == (model.key, model.path):
            return self._live["sampler"]
        self.release()
        # (stages draw one progress display each: tsq.progress.StageProgress; the sampler draws none)
        sampler = ModelReplica(self.factory, model.path, model.revision).sampler()
        self._live.update(model=(model.key, model.path), sampler=sampler)
        return sampler

    def release(self) -> None:
        """Close the live sampler, if any."""
        sampler = self._live.pop("sampler", None)
        self._live.clear()
        if sampler is not None:
            sampler.close()

    @property
    def progress(self) -> bool:
        """Whether stages show progress (`sampler.progress`)."""
        return bool(self.settings.get("progress", True))

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
    # where the shards of sampling stages run (`executor=`; never part of a key)
    executor: Executor = field(default_factory=LocalExecutor)
    make_loggers: Callable[[], list] | None = None
    output_dir: Path | None = None

    def trainer_key_material(self) -> dict:
        return result_settings(self.trainer)
