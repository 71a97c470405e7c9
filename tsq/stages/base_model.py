"""Stages `base_model` and `gguf`: the `model=` choice as an HF directory every later stage loads.

`model=tiny` is pretrained here on the synthetic world's teacher traces (`base_model`, keyed on the world and
the architecture and pretraining settings); a GGUF file shipped on PyPI is converted once (`gguf`, keyed on the
file's hash); an existing hub id or directory is used as it is (no artifact).
"""

from __future__ import annotations

from tsq.cache import ArtifactStore, Stage
from tsq.data.base import ProblemSource
from tsq.models.base import ModelHandle, ModelSource

BASE_MODEL = Stage("base_model", 3)  # bump the version whenever a code change alters the trained weights
GGUF = Stage("gguf", 1)
BUILT_BY = {stage.name: stage for stage in (BASE_MODEL, GGUF)}


def _stage(source: ModelSource) -> Stage:
    if source.artifact not in BUILT_BY:
        raise ValueError(f"model={source.name}: unknown artifact {source.artifact!r}; known: {sorted(BUILT_BY)}")
    return BUILT_BY[source.artifact]


def base_model_key(source: ModelSource, world: ProblemSource | None) -> str:
    """The key of the model's handle, known without building it."""
    if source.artifact is None:
        return source.existing().key
    return _stage(source).key(source.key_material(), source.key_inputs(world))


def base_model(world: ProblemSource | None, store: ArtifactStore, source: ModelSource) -> ModelHandle:
    """The model's handle: built into `store` (or found there) for a built source, as it is for an existing one."""
    if source.artifact is None:
        return source.existing()
    artifact = store.cached(
        _stage(source),
        source.key_material(),
        source.key_inputs(world),
        lambda job: source.build(world, job.dir),
        doing=f"building model={source.name}",
        description={"model": source.name},
    )
    return ModelHandle(source.name, artifact.path, artifact.key, trust_remote_code=source.trust_remote_code)
