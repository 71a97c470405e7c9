"""Launching the protocol's runs: each phase (one grid point of an experiment's dev search, or one test seed of a
selected setting) is one Hydra multirun of `run.py` over the rows it concerns; a phase that finished is not started
again, and every call's wall time goes to the ledger (`<root>/ledger.jsonl`). Phases are that small so that a long
experiment can be spread over machines and sessions: each finished phase's evidence can be packed into the
repository and restored elsewhere (analysis/evidence.py)."""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.evidence import pack, restore
from analysis.layouts import LAYOUTS
from analysis.protocol import Protocol, row_override
from tsq.cache import read_jsonl

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Phase:
    """One Hydra multirun of the protocol."""

    name: str  # search or test
    experiment: str
    overrides: tuple[str, ...]
    sweep_dir: Path

    def id(self, root: Path) -> str:
        """The phase's name below the protocol root, e.g. `ts_smollm2/search/train.lr5e-06` (its evidence's)."""
        return self.sweep_dir.relative_to(root).as_posix()

    @property
    def command(self) -> list[str]:
        # run from the repository root: a folder inside it is written relative to it, so commands read anywhere
        sweep = self.sweep_dir.relative_to(ROOT) if self.sweep_dir.is_relative_to(ROOT) else self.sweep_dir
        return ["python", "run.py", "-m", *self.overrides, f"hydra.sweep.dir={sweep}"]


def listed(values: Iterable) -> str:
    return ",".join(str(v) for v in values)


def setting_slug(setting: dict) -> str:
    """A setting's folder name: every key and value (Table 1 selects train.lr for some rows and tldr.lr for others,
    and two settings must not share a folder)."""
    return "_".join(f"{k}{v}" for k, v in sorted(setting.items())) or "default"


def search_phases(experiment: str, protocol: Protocol, root: Path, extra: tuple[str, ...] = ()) -> list[Phase]:
    """One multirun per kind of row of the table and setting of its kind's grid: its rows at that setting, at the
    search seed, on dev."""
    layout = LAYOUTS[experiment]
    kinds, phases = layout.rows_of_kind(), []
    for kind, rows in kinds.items():
        for setting in protocol.grid(kind):
            overrides = (
                f"experiment={experiment}",
                row_override(layout.group, listed(rows)),
                "eval.split=dev",
                *protocol.dev_overrides,
                *(f"{k}={v}" for k, v in setting.items()),
                f"{protocol.seed_key}={protocol.search_seed}",
                *extra,
            )
            where = root / experiment / "search" / (kind if len(kinds) > 1 else "") / setting_slug(setting)
            phases.append(Phase("search", experiment, overrides, where))
    return phases


def test_phases(
    experiment: str, selected: dict[str, dict], protocol: Protocol, root: Path, extra: tuple[str, ...] = ()
) -> list[Phase]:
    """One multirun per distinct selected setting and test seed, over the rows that selected the setting."""
    layout = LAYOUTS[experiment]
    by_setting: dict[tuple, list[str]] = {}
    for row, choice in selected.items():
        by_setting.setdefault(tuple(sorted(choice["setting"].items())), []).append(row)
    phases = []
    for setting, rows in sorted(by_setting.items()):
        for seed in protocol.seeds:
            overrides = (
                f"experiment={experiment}",
                row_override(layout.group, listed(rows)),
                *(f"{k}={v}" for k, v in setting),
                f"{protocol.seed_key}={seed}",
                *extra,
            )
            where = root / experiment / "test" / setting_slug(dict(setting)) / f"seed{seed}"
            phases.append(Phase("test", experiment, overrides, where))
    return phases


def ledger_path(root: Path) -> Path:
    return root / "ledger.jsonl"


def ledger(root: Path) -> list[dict]:
    path = ledger_path(root)
    return read_jsonl(path) if path.exists() else []


def finished(phase: Phase, root: Path) -> bool:
    command = shlex.join(phase.command)
    return any(e["command"] == command and e["returncode"] == 0 for e in ledger(root))


def run_phase(phase: Phase, root: Path, rerun: bool = False, evidence_dir: Path | None = None) -> None:
    """Run the phase's multirun (unless it already finished, or its evidence archive restores it) and record its
    wall time in the ledger; with `evidence_dir`, a phase that ran is packed into it (analysis/evidence.py)."""
    if finished(phase, root) and not rerun:
        log.info("%s %s: finished before, not run again", phase.experiment, phase.name)
        return
    if evidence_dir is not None and not rerun:
        restored = restore(phase.id(root), phase.sweep_dir, evidence_dir)
        if restored is not None:
            append_ledger(root, {**restored, "command": shlex.join(phase.command)})
            return
    command = shlex.join(phase.command)
    log.info("running: %s", command)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *phase.command[1:]], cwd=ROOT)
    entry = {
        "experiment": phase.experiment,
        "phase": phase.name,
        "command": command,
        "wall_s": round(time.perf_counter() - start, 1),
        "returncode": done.returncode,
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    append_ledger(root, entry)
    if done.returncode:
        raise RuntimeError(f"{phase.experiment} {phase.name} failed (exit {done.returncode}): {command}")
    if evidence_dir is not None:
        pack(phase.id(root), phase.sweep_dir, entry, evidence_dir)


def run_phases(
    phases: list[Phase], root: Path, rerun: bool = False, evidence_dir: Path | None = None, jobs: int = 1
) -> None:
    """Run the phases, `jobs` at a time (each its own multirun process; phases of one list do not depend on each
    other). A phase that fails does not stop the others; the first failure is raised once all have ended."""
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    if jobs == 1:
        for phase in phases:
            run_phase(phase, root, rerun, evidence_dir)
        return
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_phase, phase, root, rerun, evidence_dir) for phase in phases]
    failures = [error for error in (f.exception() for f in futures) if error is not None]
    if failures:
        raise failures[0]


_LEDGER_LOCK = threading.Lock()  # phases running at once append from their own threads


def append_ledger(root: Path, entry: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    with _LEDGER_LOCK, open(ledger_path(root), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def wall_times(root: Path) -> pd.DataFrame:
    """Per phase of the ledger: the longest finished run (the one that computed) and the latest (cache hits)."""
    entries = [e for e in ledger(root) if e["returncode"] == 0]
    if not entries:
        return pd.DataFrame()
    frame = pd.DataFrame(entries)
    table = frame.groupby(["experiment", "phase", "command"], sort=False)["wall_s"].agg(["max", "last"]).reset_index()
    table = table.groupby(["experiment", "phase"], sort=False)[["max", "last"]].sum().reset_index()
    table.loc[len(table)] = ["all", "", table["max"].sum(), table["last"].sum()]
    return table.rename(columns={"max": "computing (s)", "last": "latest call (s)"})
