"""Content-addressed, atomically written stage artifacts.

A stage's artifact lives in ``<root>/<stage>/<key>/`` where the key hashes the stage's own
config, its version and the keys of its inputs (the way Dora, SkyThought's output-dir hash and TRL's
precompute fingerprint do it). A directory is built under a temporary name and renamed into place
only once complete, so a killed run never leaves a half artifact that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

META_FILE = "artifact.json"


def _canonical(obj: Any) -> Any:
    """Plain, order-independent JSON types (OmegaConf containers and dataclasses included)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(obj, (DictConfig, ListConfig)):
            obj = OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a hard dependency
        pass
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)  # 1.0 and 1 are the same setting
    return obj


def stage_key(stage: str, version: int, config: Any, inputs: Mapping[str, str] | None = None) -> str:
    """Hash of a stage's name, version, own config and its inputs' keys (16 hex digits)."""
    payload = {"stage": stage, "version": version, "config": _canonical(config), "inputs": dict(inputs or {})}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def world_key(world) -> str:
    """The content key of a problem source (what every stage built on it takes as an input)."""
    return stage_key("world", 1, world.fingerprint())


def json_ready(obj: Any) -> Any:
    """NaN and infinities become None (JSON has no NaN), recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a file by writing a sibling temp file and renaming it over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


class ArtifactStore:
    """Directory of finished stage artifacts keyed by `stage_key`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def exists(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / META_FILE).is_file()

    def meta(self, stage: str, key: str) -> dict:
        return json.loads((self.path(stage, key) / META_FILE).read_text())

    @contextmanager
    def build(self, stage: str, key: str, description: Mapping[str, Any] | None = None) -> Iterator[Path]:
        """Yield an empty temp directory; on clean exit it becomes the artifact, else it is removed."""
        final = self.path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}.", suffix=".tmp"))
        try:
            yield tmp
            atomic_write_json(tmp / META_FILE, {"stage": stage, "key": key, **_canonical(description or {})})
            if final.exists():  # another process finished the same work first: keep theirs
                shutil.rmtree(tmp)
            else:
                os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("stage %s: built artifact %s", stage, final)

    def scratch(self, stage: str, key: str) -> Path:
        """A persistent work-in-progress folder for resumable stages (shards, checkpoints)."""
        path = self.root / stage / f"{key}.partial"
        path.mkdir(parents=True, exist_ok=True)
        return path
