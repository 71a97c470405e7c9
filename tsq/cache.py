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
import stat
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
    # guards that let a run use a split it would otherwise refuse; what runs is keyed by the split itself
    | {"allow_held_out_split", "allow_train_split"}
)


class KeyMaterial(Protocol):
    """A settings object that says which of its values enter the keys of the stages it configures."""

    def key_material(self) -> dict: ...


# Every swappable part's registered name -> its class. A part's cache keys hold this name, never its module
# path, so moving or renaming a file keeps every artifact built with the part.
PARTS: dict[str, type] = {}


class ConfiguredPart:
    """Mixin for a swappable part chosen by `_target_` (a selector, refiner, loss): its key material is its
    registered name and its dataclass fields, i.e. the config it was instantiated from.

    A concrete part registers a stable name in its class statement, ``class QDyn(Selector, part="selector/qdyn")``;
    the name, not the class's module path, enters the keys.
    """

    def __init_subclass__(cls, part: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if part is None:
            return
        known = PARTS.get(part)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"part name {part!r} is taken by {known.__module__}.{known.__qualname__}")
        PARTS[part] = cls
        cls._part_name = part

    def key_material(self) -> dict:
        cls = type(self)
        part = cls.__dict__.get("_part_name")
        if part is None:
            raise TypeError(
                f"{cls.__module__}.{cls.__qualname__} has no registered part name, so no stable cache key: declare "
                f'one in its class statement, e.g. class {cls.__name__}(..., part="<group>/<name>")'
            )
        own = {f.name: getattr(self, f.name) for f in fields(self)} if is_dataclass(self) else {}
        return {"part": part, **own}


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


class Fingerprinted(Protocol):
    """A problem source as keys see it: the fingerprint of everything that decides its problems and grading."""

    def fingerprint(self) -> dict: ...


def world_key(world: Fingerprinted) -> str:
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


@contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """An open sibling temp file that is fsync'd and renamed over `path` on a clean exit (removed otherwise), so a
    reader never sees a half-written file. `mode` is "w" (UTF-8 text) or "wb"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a group-shared cache needs the umask's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a file by writing a sibling temp file and renaming it over the target."""
    with atomic_file(path) as fh:
        fh.write(text)
    return Path(path)


def current_umask() -> int:
    """This process's umask, read without changing it (Linux: /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting, then restored at once
    os.umask(mask)
    return mask


def apply_umask_modes(folder: Path) -> None:
    """Give `folder` and everything below it the modes a plain mkdir / open would have under the umask
    (temporary folders and files are created 0700 / 0600, which would lock a group's shared cache to one user)."""
    mask = current_umask()
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        setgid = path.stat().st_mode & stat.S_ISGID  # a group folder's new folders keep inheriting its group
        os.chmod(path, setgid | ((0o777 if path.is_dir() else 0o666) & ~mask))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of a JSON-lines artifact file."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


VERIFY = ("hash", "size")


class CorruptArtifact(Exception):
    """A finished artifact whose files no longer match its manifest, or whose manifest is missing or malformed."""


class ArtifactPermissionError(PermissionError):
    """An artifact this process may not read (another user's files on a shared cache): not corruption."""


def manifest_files(meta: Any, where: Path) -> dict[str, dict]:
    """The `files` manifest of an `artifact.json`, checked for shape: a mapping of relative paths to entries
    with an integer `size` and a hex `sha256`. Anything else raises CorruptArtifact naming `where`."""
    if not isinstance(meta, dict):
        raise CorruptArtifact(f"{where}: not a JSON object ({type(meta).__name__})")
    files = meta.get("files")
    if not isinstance(files, dict):
        raise CorruptArtifact(f"{where}: no 'files' manifest")
    for name, entry in files.items():
        size = entry.get("size") if isinstance(entry, dict) else None
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise CorruptArtifact(f"{where}: manifest entry {name!r} has no valid 'size' ({entry!r})")
        if not isinstance(digest, str) or len(digest) != 64:
            raise CorruptArtifact(f"{where}: manifest entry {name!r} has no valid 'sha256' ({entry!r})")
    return files


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
        if hashes:
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

    def __init__(self, root: str | Path, verify: str = "hash", accept_unmanifested: bool = False) -> None:
        if verify not in VERIFY:
            raise ValueError(f"paths.verify must be one of {VERIFY}, got {verify!r}")
        self.root = Path(root).expanduser().resolve()
        self.verify = verify
        # artifacts built before manifests existed (an artifact.json without `files`): used unchecked only
        # when this is set, else they are untrusted like any other artifact without a valid manifest
        self.accept_unmanifested = accept_unmanifested
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
        """Whether a finished artifact exists and matches its manifest. A folder whose manifest is missing,
        malformed or does not match is untrusted: moved aside and reported, so that it is rebuilt. A file this
        process may not read raises ArtifactPermissionError and nothing is moved."""
        folder = self.path(stage, key)
        try:
            if not os.path.lexists(folder):
                return False
            if not (folder / META_FILE).is_file():
                raise CorruptArtifact(f"{folder / META_FILE}: missing")
            meta = json.loads((folder / META_FILE).read_text())
            if self.accept_unmanifested and isinstance(meta, dict) and "files" not in meta:
                log.warning("stage %s: artifact %s has no manifest; used unchecked (paths.accept_unmanifested)",
                            stage, key)  # fmt: skip
                return True
            check_manifest(folder, manifest_files(meta, folder / META_FILE), self.verify == "hash")
        except PermissionError as err:
            raise ArtifactPermissionError(
                f"stage {stage}: artifact {folder} cannot be read by this user ({err}); on a cache shared by a group, "
                "every user needs a umask that lets the group read (e.g. umask 002) and the folder's group set"
            ) from err
        except (CorruptArtifact, json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
            self._set_aside(stage, key, err)
            return False
        return True

    def _set_aside(self, stage: str, key: str, why: Exception) -> None:
        folder = self.path(stage, key)
        aside = folder.with_name(f".{key}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):  # another process moved it aside first
            os.rename(folder, aside)
        log.warning("stage %s: artifact %s is corrupt (%s); moved to %s, rebuilding", stage, key, why, aside)

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
        apply_umask_modes(tmp)
        final = self.path(stage, key)
        # Another process may have finished the same work first: keep theirs if it checks out; anything else
        # in the way (a folder left without a valid manifest) is set aside, so a rebuild always replaces it.
        if not self.usable(stage, key):
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
