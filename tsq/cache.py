"""Content-addressed, atomically written stage artifacts: how every stage decides it is a cache hit.

A stage's artifact lives in ``<root>/<stage>/<key>/``. The key hashes the stage's name and version
(`Stage`), the settings that change its result (each settings object's `key_material()`, minus
`NON_RESULT_SETTINGS`) and the keys of its inputs, the way Dora's signatures, SkyThought's output-dir
hash and TRL's precompute fingerprint do it. `ArtifactStore.cached` is the one entry point: an
existing ``artifact.json`` is a hit; otherwise the stage's build function fills a temporary
directory that is renamed into place only once complete, so a killed run never leaves a half
artifact that a later run would trust. Resumable stages keep their shards or checkpoints in the
build's `scratch` folder, which survives a killed run and is removed once the artifact exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

META_FILE = "artifact.json"

# Settings that change how a run looks, never what it computes; left out of every key, at any depth,
# so that turning a progress bar off does not re-sample or retrain. (`_partial_` is Hydra's flag for
# a factory config.) Settings that change float results only in the last bits (batch sizes, chunk
# sizes) stay in the keys: an artifact is what one exact setting produced.
NON_RESULT_SETTINGS = frozenset(
    {"progress", "enable_progress_bar", "enable_model_summary", "log_every_n_steps", "_partial_"}
)


class KeyMaterial(Protocol):
    """A settings object that says which of its values enter the keys of the stages it configures."""

    def key_material(self) -> dict: ...


class ConfiguredPart:
    """Mixin for a swappable part chosen by `_target_` (a selector, refiner, loss): its key material is
    its class path and its dataclass fields, i.e. the config it was instantiated from."""

    def key_material(self) -> dict:
        cls = type(self)
        own = {f.name: getattr(self, f.name) for f in fields(self)} if is_dataclass(self) else {}
        return {"_target_": f"{cls.__module__}.{cls.__qualname__}", **own}


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


def result_settings(obj: Any) -> Any:
    """`obj` in canonical form without the `NON_RESULT_SETTINGS` keys, at every depth."""
    obj = _canonical(obj)
    if isinstance(obj, dict):
        return {k: result_settings(v) for k, v in obj.items() if k not in NON_RESULT_SETTINGS}
    if isinstance(obj, list):
        return [result_settings(v) for v in obj]
    return obj


def stage_key(stage: str, version: int, config: Any, inputs: Mapping[str, str] | None = None) -> str:
    """Hash of a stage's name, version, result-changing settings and its inputs' keys (16 hex digits)."""
    payload = {"stage": stage, "version": version, "config": result_settings(config), "inputs": dict(inputs or {})}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Stage:
    """A cached stage: its artifact folder's name and a version to bump whenever a code change alters
    what the stage writes (old artifacts then stop matching instead of being reused)."""

    name: str
    version: int

    def key(self, config: Any, inputs: Mapping[str, str] | None = None) -> str:
        return stage_key(self.name, self.version, config, inputs)


WORLD = Stage("world", 1)


def world_key(world) -> str:
    """The content key of a problem source (what every stage built on it takes as an input)."""
    return WORLD.key(world.fingerprint())


@dataclass(frozen=True)
class Artifact:
    """A finished stage artifact: its folder and key, and whether this call built it."""

    stage: str
    key: str
    path: Path
    built: bool


@dataclass(frozen=True)
class Build:
    """What a stage's build function gets: `dir`, the temporary folder that becomes the artifact, and
    `scratch`, a folder for resumable work (shards, checkpoints) that outlives a killed run."""

    dir: Path
    scratch: Path


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


VERIFY = ("hash", "size")


class CorruptArtifact(Exception):
    """A finished artifact whose files no longer match its manifest."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest(folder: Path, hashes: bool = True) -> dict[str, dict]:
    """Size (and SHA-256) of every file below `folder`, by relative path (the artifact's own meta excluded)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != META_FILE):
        entry: dict = {"size": path.stat().st_size}
        if hashes:
            entry["sha256"] = file_sha256(path)
        files[path.relative_to(folder).as_posix()] = entry
    return files


def check_manifest(folder: Path, recorded: dict[str, dict], hashes: bool) -> None:
    """Raise CorruptArtifact naming the first file that is missing, extra, or of another size or hash."""
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != META_FILE}
    for name in sorted(set(recorded) | present):
        path = folder / name
        if name not in recorded:
            raise CorruptArtifact(f"{path}: not in the artifact's manifest")
        if name not in present:
            raise CorruptArtifact(f"{path}: missing")
        size = path.stat().st_size
        if size != recorded[name]["size"]:
            raise CorruptArtifact(f"{path}: {size} bytes, {recorded[name]['size']} when built")
        if hashes and "sha256" in recorded[name]:
            if file_sha256(path) != recorded[name]["sha256"]:
                raise CorruptArtifact(f"{path}: content changed since it was built (SHA-256 differs)")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ArtifactStore:
    """Directory of finished stage artifacts keyed by `stage_key`.

    Every artifact's `artifact.json` carries a manifest (size and SHA-256 of each file), checked whenever
    the artifact is used: sizes always, hashes with `verify="hash"` (the default). An artifact that fails
    the check is moved aside (`.<key>.corrupt-<time>`) and rebuilt, with a warning naming the file.
    """

    def __init__(self, root: str | Path, verify: str = "hash") -> None:
        if verify not in VERIFY:
            raise ValueError(f"paths.verify must be one of {VERIFY}, got {verify!r}")
        self.root = Path(root).expanduser().resolve()
        self.verify = verify
        # every artifact `cached` handed out in this process, in order (metrics.json's provenance)
        self.served: list[dict] = []

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def exists(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / META_FILE).is_file()

    def meta(self, stage: str, key: str) -> dict:
        return json.loads((self.path(stage, key) / META_FILE).read_text())

    def scratch(self, stage: str, key: str) -> Path:
        """The persistent work-in-progress folder of an artifact being built (shards, checkpoints)."""
        return self.root / stage / f"{key}.partial"

    def usable(self, stage: str, key: str) -> bool:
        """Whether a finished artifact exists and matches its manifest; a corrupt one is moved aside."""
        if not self.exists(stage, key):
            return False
        folder = self.path(stage, key)
        try:
            meta = self.meta(stage, key)
            if "files" not in meta:  # built before manifests existed: nothing to check it against
                log.info("stage %s: artifact %s has no manifest (built by an older tsq); used unchecked", stage, key)
                return True
            check_manifest(folder, meta["files"], self.verify == "hash")
        except (CorruptArtifact, json.JSONDecodeError, OSError) as err:
            aside = folder.with_name(f".{key}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            with contextlib.suppress(FileNotFoundError):  # another process moved it aside first
                os.rename(folder, aside)
            log.warning("stage %s: artifact %s is corrupt (%s); moved to %s, rebuilding", stage, key, err, aside)
            return False
        return True

    def cached(
        self,
        stage: Stage,
        config: Any,
        inputs: Mapping[str, str] | None,
        build: Callable[[Build], bool | None],
        *,
        doing: str = "",
        description: Mapping[str, Any] | None = None,
        collective: bool = False,
    ) -> Artifact:
        """The artifact of `stage` for these settings and inputs, built by `build(Build)` on a miss.

        Logs one line per call (``stage <name>: cache hit <key>`` or ``cache miss <key>, <doing>``). One
        process builds an artifact at a time: the others wait on its lock file and then find it built (two
        jobs of a sweep, or two `python run.py` sharing a cache). `collective=True` (a training that every
        rank of a distributed run takes part in) takes no lock; there `build` returns False on the ranks
        that do not write the artifact, whose folder is then discarded and the scratch kept for the writer.
        """
        key = stage.key(config, inputs)
        path = self.path(stage.name, key)
        if self.usable(stage.name, key):
            log.info("stage %s: cache hit %s", stage.name, key)
            return self._served(Artifact(stage.name, key, path, built=False))
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = None if collective else FileLock(path.parent / f".{key}.lock")
        if lock is not None:
            try:
                lock.acquire(timeout=0)
            except Timeout:
                log.info("stage %s: %s is being built by another process; waiting for it", stage.name, key)
                lock.acquire()
        try:
            if lock is not None and self.usable(stage.name, key):  # built by the process we waited for
                log.info("stage %s: cache hit %s", stage.name, key)
                return self._served(Artifact(stage.name, key, path, built=False))
            self.clean_stale(stage.name)
            log.info("stage %s: cache miss %s%s", stage.name, key, f", {doing}" if doing else "")
            tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=self._tmp_prefix(key), suffix=".tmp"))
            try:
                written = build(Build(dir=tmp, scratch=self.scratch(stage.name, key))) is not False
                if written:
                    self._publish(tmp, stage.name, key, description)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)  # a failure, another writer, or a lost race
        finally:
            if lock is not None:
                lock.release()
        if written:
            shutil.rmtree(self.scratch(stage.name, key), ignore_errors=True)
            log.info("stage %s: built %s", stage.name, path)
        return self._served(Artifact(stage.name, key, path, built=written))

    def _served(self, artifact: Artifact) -> Artifact:
        record = {"stage": artifact.stage, "key": artifact.key, "path": str(artifact.path), "built": artifact.built}
        self.served.append(record)
        return artifact

    @staticmethod
    def _tmp_prefix(key: str) -> str:
        """Temporary build folders carry their host and PID, so a later run can tell a dead builder's."""
        return f".{key}~{socket.gethostname()}~{os.getpid()}~"

    def clean_stale(self, stage: str) -> list[Path]:
        """Remove the temporary build folders of `stage` whose builder, a process on this host, is gone
        (killed runs); folders of live processes and of other hosts are left alone."""
        removed = []
        host = socket.gethostname()
        for tmp in (self.root / stage).glob(".*.tmp"):
            parts = tmp.name[1:].split("~")
            if len(parts) != 4 or parts[1] != host or not parts[2].isdigit() or _process_alive(int(parts[2])):
                continue
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
            log.info("stage %s: removed %s, left by a killed run (process %s)", stage, tmp, parts[2])
        return removed

    def _publish(self, tmp: Path, stage: str, key: str, description: Mapping[str, Any] | None) -> None:
        """Seal a finished temporary folder (its manifest in artifact.json) and rename it into place
        (unless another process did first)."""
        meta = {"stage": stage, "key": key, **_canonical(description or {}), "files": manifest(tmp)}
        atomic_write_json(tmp / META_FILE, meta)
        final = self.path(stage, key)
        if not final.exists():  # another process finished the same work first: keep theirs
            os.rename(tmp, final)

    @contextmanager
    def build(self, stage: str, key: str, description: Mapping[str, Any] | None = None) -> Iterator[Path]:
        """Yield an empty temp directory; on clean exit it becomes the artifact, else it is removed.
        (For tests and tools that write an artifact directly; sealed and published as `cached` does.)"""
        final = self.path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=self._tmp_prefix(key), suffix=".tmp"))
        try:
            yield tmp
            self._publish(tmp, stage, key, description)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
