"""Math answers: the last `\\boxed{}` of the answer part, checked with math-verify against the gold answer.

math-verify's timeouts use `signal.alarm`, which only works in a process's main thread, so batches are
graded in a process pool (experiments/paper_notes.md §3.1). Argument order follows its README:
`verify(gold, answer)`, gold first.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from tsq.text import THINK_CLOSE, answer_part

log = logging.getLogger(__name__)

BOX_COMMANDS = ("\\boxed", "\\fbox")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _braced(text: str, open_at: int) -> str | None:
    """The content of the brace group opening at `open_at`, or None when it never closes (truncated)."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    return None


def last_boxed(text: str, think_close: str = THINK_CLOSE) -> str | None:
    """The content of the last complete `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed 5`) after `think_close`."""
    part = answer_part(text, think_close)
    end = len(part)
    while True:
        start = max(part.rfind(cmd, 0, end) for cmd in BOX_COMMANDS)
        if start < 0:
            return None
        cmd = next(c for c in BOX_COMMANDS if part.startswith(c, start))
        rest = start + len(cmd)
        if rest < len(part) and part[rest] == "{":
            content = _braced(part, rest)
            if content is not None:
                return content.strip()
        elif rest < len(part) and part[rest] == " ":  # `\boxed 5`: up to the next space or `$`
            token = part[rest + 1 :].split("$")[0].split()
            if token:
                return token[0]
        end = start  # an unclosed box (truncated answer): look further left


def verify_answer(gold: str, predicted: str, timeout_s: int = 5) -> bool:
    """math-verify equivalence of two answer strings (each parsed as if it were boxed). Main thread only."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    gold_parsed = parse(f"\\boxed{{{gold}}}", extraction_config=configs, parsing_timeout=timeout_s)
    pred_parsed = parse(f"\\boxed{{{predicted}}}", extraction_config=configs, parsing_timeout=timeout_s)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout_s))


def last_number(text: str) -> str | None:
    """The last number of the answer part, without thousands separators (lm-eval's "flexible extract")."""
    found = NUMBER.findall(answer_part(text))
    return found[-1].replace(",", "").rstrip(".") if found else None


def grade_math(gold: str, response: str, timeout_s: int = 5, fallback: str | None = None) -> bool:
    """True when the response's last boxed answer (after `</think>`) equals `gold`. Main thread only.

    `fallback="last_number"` grades the last number when nothing is boxed (for small models that do not
    follow the boxed instruction); the default grades an unboxed answer as wrong, as the papers do."""
    predicted = last_boxed(response)
    if predicted is None and fallback == "last_number":
        predicted = last_number(response)
    if predicted is None:
        return False
    try:
        return verify_answer(gold, predicted, timeout_s)
    except Exception:  # math-verify raises on parser timeouts in some versions; an ungradable answer is wrong
        log.debug("math-verify failed on %r vs %r", predicted, gold, exc_info=True)
        return False


def _grade_chunk(items: list[tuple[str, str]], timeout_s: int, fallback: str | None) -> list[bool]:
    return [grade_math(gold, response, timeout_s, fallback) for gold, response in items]


class MathGrader:
    """Grades (gold, response) pairs in a pool of `workers` processes (0: in this process's main thread).

    A pool that breaks (a worker killed by the OS) is rebuilt and the chunk regraded one item at a time in
    this process, so one pathological answer cannot lose a batch.
    """

    def __init__(self, workers: int = 2, timeout_s: int = 5, chunk_size: int = 32, fallback: str | None = None) -> None:
        if fallback not in (None, "last_number"):
            raise ValueError(f"grader.fallback must be null or last_number, got {fallback!r}")
        if workers < 0:
            raise ValueError(f"grader.workers must be >= 0, got {workers}")
        if timeout_s <= 0:
            raise ValueError(f"grader.timeout_s must be > 0, got {timeout_s}")
        self.workers, self.timeout_s, self.chunk_size, self.fallback = workers, timeout_s, max(1, chunk_size), fallback
        self._pool: ProcessPoolExecutor | None = None

    def result_settings(self) -> dict:
        """The settings that can change a grade (the pool's size and chunks cannot)."""
        return {"timeout_s": self.timeout_s, "fallback": self.fallback}

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: the parent holds torch's threads, which a fork would copy mid-state.
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
            atexit.register(self.close)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def grade_many(self, golds: Sequence[str], responses: Sequence[str]) -> list[bool]:
        if len(golds) != len(responses):
            raise ValueError(f"{len(golds)} gold answers for {len(responses)} responses")
        items = list(zip(golds, responses, strict=True))
        if not items:
            return []
        if self.workers == 0:
            return _grade_chunk(items, self.timeout_s, self.fallback)
        chunks = [items[i : i + self.chunk_size] for i in range(0, len(items), self.chunk_size)]
        try:
            futures = [self._executor().submit(_grade_chunk, c, self.timeout_s, self.fallback) for c in chunks]
            return [ok for f in futures for ok in f.result()]
        except BrokenProcessPool:
            log.warning("math grading pool broke; regrading this batch in the main process")
            self.close()
            return _grade_chunk(items, self.timeout_s, self.fallback)
