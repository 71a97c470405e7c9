"""A bundle of finished cache artifacts, carried to another machine so that work a session finished is not redone.

A run too long for one machine's session (the SmolLM2 protocol on a CPU) loses its cache when the machine goes;
only what is committed survives. The protocol's evidence archives (`analysis/evidence.py`) keep finished phases;
this keeps finished *stages* of unfinished phases: sampled and graded responses, pairs, reference log-probabilities,
evaluations. Models are too large to carry (a limit per artifact leaves them out, listed); the next machine rebuilds
them, and since every key is a function of settings and input keys only, the carried artifacts downstream of a
rebuilt model are found under the same keys.

    python -m tsq.cache_bundle pack .cache/tsq experiments/carry/ts_smollm2.tar.gz --max-mb 20
    python -m tsq.cache_bundle unpack experiments/carry/ts_smollm2.tar.gz .cache/tsq

Packing takes only artifacts that pass their manifest check and packs exactly the files their manifest lists.
Unpacking checks every artifact against its manifest (sizes and SHA-256) in a temporary folder before it is renamed
into place, keeps an artifact already in the store, and refuses a bundle member outside `<stage>/<key>/`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tsq.cache import META_FILE, ArtifactStore, CorruptArtifact, atomic_file, check_manifest, manifest_files

log = logging.getLogger(__name__)


@dataclass
class BundleReport:
    """What a pack or an unpack did, by `<stage>/<key>`: packed or restored; left out (with why) or kept."""

    done: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def artifact_size(folder: Path) -> int:
    """Bytes of an artifact's files, as its manifest records them."""
    meta = json.loads((folder / META_FILE).read_text())
    return sum(entry["size"] for entry in manifest_files(meta, folder / META_FILE).values())


def pack_bundle(store: ArtifactStore, out: Path, max_bytes: int, stages: list[str] | None = None) -> BundleReport:
    """Every finished artifact of `store` (of `stages`, if given) of at most `max_bytes`, into the gzip tar `out`
    (written atomically). Artifacts left out are reported with their size; an empty bundle is an error."""
    report = BundleReport()
    members: list[tuple[str, Path]] = []
    for stage_dir in sorted(p for p in store.root.iterdir() if p.is_dir()):
        if stages is not None and stage_dir.name not in stages:
            continue
        for folder in sorted(p for p in stage_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            address = f"{stage_dir.name}/{folder.name}"
            if not store.exists(stage_dir.name, folder.name):
                report.skipped[address] = "unfinished (no artifact.json)"
                continue
            try:  # the size first: a model left out is not hashed
                size = artifact_size(folder)
            except (CorruptArtifact, ValueError, OSError):
                size = 0  # (the manifest check below names what is wrong)
            if size > max_bytes:
                report.skipped[address] = f"{size:,} bytes, over the limit of {max_bytes:,}"
                continue
            if not store.usable(stage_dir.name, folder.name):  # (moved aside, with a warning naming the file)
                report.skipped[address] = "fails its manifest check"
                continue
            meta = json.loads((folder / META_FILE).read_text())
            names = [META_FILE, *sorted(meta["files"])]
            members += [(f"{address}/{name}", folder / name) for name in names]
            report.done.append(address)
    if not report.done:
        raise ValueError(f"{store.root}: no finished artifact to pack (left out: {report.skipped or 'none found'})")
    with atomic_file(out, "wb") as fh:
        with gzip.GzipFile(fileobj=fh, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
            for name, path in members:
                info = tarfile.TarInfo(name)  # mtime and owner 0: the same files pack to the same bytes
                info.size, info.mode = path.stat().st_size, 0o644
                with open(path, "rb") as data:
                    tar.addfile(info, data)
    return report


def unpack_bundle(bundle: Path, store: ArtifactStore) -> BundleReport:
    """Restore every artifact of `bundle` that `store` does not hold, each checked against its manifest before it
    is renamed into place; raises CorruptArtifact naming the member on a mismatch (nothing of it is kept)."""
    report = BundleReport()
    with tarfile.open(bundle, "r:gz") as tar:
        by_artifact: dict[tuple[str, str], list[tarfile.TarInfo]] = {}
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if len(parts) < 3 or ".." in parts or member.name.startswith("/") or not member.isfile():
                raise ValueError(f"{bundle}: member {member.name!r} is not a file below <stage>/<key>/")
            by_artifact.setdefault((parts[0], parts[1]), []).append(member)
        for (stage, key), files in sorted(by_artifact.items()):
            address = f"{stage}/{key}"
            if store.usable(stage, key):
                report.skipped[address] = "already in the store"
                continue
            final = store.path(stage, key)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}~unpack~", suffix=".tmp"))
            try:
                for member in files:
                    target = tmp / Path(member.name).relative_to(address)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                meta_path = tmp / META_FILE
                if not meta_path.is_file():
                    raise CorruptArtifact(f"{bundle}: {address} has no {META_FILE}")
                try:
                    check_manifest(tmp, manifest_files(json.loads(meta_path.read_text()), meta_path), hashes=True)
                except CorruptArtifact as err:
                    raise CorruptArtifact(f"{bundle}: {address}: {err}") from err
                os.rename(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            report.done.append(address)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsq.cache_bundle", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack = commands.add_parser("pack", help="finished artifacts of a cache into a bundle")
    pack.add_argument("cache", type=Path, help="the artifact store (paths.cache_dir, e.g. .cache/tsq)")
    pack.add_argument("out", type=Path)
    pack.add_argument("--max-mb", type=float, default=20.0, help="leave out artifacts larger than this (models)")
    pack.add_argument("--stages", help="comma-separated stages to pack (default: all)")
    unpack = commands.add_parser("unpack", help="restore a bundle's artifacts into a cache")
    unpack.add_argument("bundle", type=Path)
    unpack.add_argument("cache", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "pack":
        stages = args.stages.split(",") if args.stages else None
        report = pack_bundle(ArtifactStore(args.cache), args.out, int(args.max_mb * 1e6), stages)
        verb = "packed"
    else:
        report = unpack_bundle(args.bundle, ArtifactStore(args.cache))
        verb = "restored"
    for address in report.done:
        print(f"{verb}: {address}")
    for address, why in report.skipped.items():
        print(f"left: {address} ({why})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
