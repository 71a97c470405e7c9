"""Training checkpoints a killed run can always resume from: written atomically beside their destination, and
checked before a resume so that a damaged one is named and set aside instead of killing every rerun.

Lightning's own writer saves through an fsspec transaction, which for a local path writes a temporary file
in the system's temp folder and moves it: a copy when that folder is on another file system, so a kill or a
full disk mid-copy leaves a truncated `last.ckpt`, and `torch.load` then fails with a zip error naming no file.
"""

from __future__ import annotations

import logging
import os
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from tsq.cache import atomic_file

log = logging.getLogger(__name__)

LAST = "last.ckpt"
STEP = re.compile(r"step=(\d+)")


class AtomicCheckpointIO(TorchCheckpointIO):
    """`torch.save` into a temporary file in the checkpoint's own folder, fsync'd, then renamed over it
    (`tsq.cache.atomic_file`)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_file(path, "wb") as fh:
            torch.save(checkpoint, fh)


def checkpoint_problem(path: Path) -> str | None:
    """Why `path` cannot be a `torch.save` checkpoint (None when it is a complete zip whose members all pass
    their CRC check: what a truncated or partly overwritten file fails)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        return f"{type(err).__name__}: {err}"
    return None if bad is None else f"member {bad} fails its CRC check"


def _newest_first(folder: Path) -> list[Path]:
    """`last.ckpt` first (always the newest written), then the step checkpoints from the highest step down."""
    steps = [p for p in folder.glob("*.ckpt") if p.name != LAST]
    steps.sort(key=lambda p: int(m.group(1)) if (m := STEP.search(p.name)) else -1, reverse=True)
    last = folder / LAST
    return ([last] if last.exists() else []) + steps


def resume_point(folder: Path, stage: str = "policy") -> Path | None:
    """The newest intact checkpoint in `folder` (None: start afresh). Each damaged one met on the way is
    named in a warning and moved aside to `.<name>.damaged-<time>` (kept for inspection, never read again)."""
    if not folder.is_dir():
        return None
    for path in _newest_first(folder):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        aside = path.with_name(f".{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        log.warning("stage %s: checkpoint %s is damaged (%s); moved to %s", stage, path, problem, aside)
    return None
