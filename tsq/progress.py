"""One progress display per long stage: a tqdm bar on a terminal, log lines in a log file.

A bar drawn into a file (a SLURM log, `python run.py > log`) is a smear of carriage returns, and no bar at
all leaves a ten-minute stage silent; so where stderr is not a terminal, `StageProgress` logs a line at
every tenth of the work instead (done, share, elapsed, time left).
"""

from __future__ import annotations

import logging
import math
import sys
import time

from tqdm.auto import tqdm

log = logging.getLogger(__name__)


class StageProgress:
    """Progress of `total` units of `what`: `update(n, note)` after each piece of work; use as a context
    manager (or `close()`). `enabled=False` shows nothing; `bar=False` always logs lines (where another
    bar, e.g. Lightning's, is already drawn on the terminal)."""

    def __init__(
        self, what: str, total: int, unit: str, enabled: bool = True, initial: int = 0, bar: bool | None = None
    ) -> None:
        self.what, self.total, self.unit, self.enabled = what, total, unit, enabled
        self.initial, self.done, self.start = initial, initial, time.perf_counter()
        draw = sys.stderr.isatty() if bar is None else bar
        self.lines = enabled and not draw
        self.bar = tqdm(total=total, initial=initial, desc=what, unit=unit, disable=not (enabled and draw))
        self.every = max(1, math.ceil(total / 10))
        self.logged = initial // self.every

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        self.bar.update(n)
        if note:
            self.bar.set_postfix_str(note, refresh=False)
        tenth = self.done // self.every
        if self.lines and (tenth > self.logged or self.done >= self.total):
            self.logged = tenth
            elapsed = time.perf_counter() - self.start
            left = elapsed / max(self.done - self.initial, 1) * max(self.total - self.done, 0)
            log.info(
                "%s: %s %d/%d (%.0f%%)%s, %.0f s elapsed, about %.0f s left",
                self.what,
                self.unit,
                self.done,
                self.total,
                100 * self.done / max(self.total, 1),
                f", {note}" if note else "",
                elapsed,
                left,
            )

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
