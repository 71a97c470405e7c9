"""Code answers (LiveCodeBench rows): the last fenced Python block, run against stdin or functional tests.

Every test runs the program in its own child process (`sandbox_runner.py`, under `python -I`) with:
a throwaway working directory, a clean environment, a wall-clock timeout (the whole process group is
killed), CPU / address-space / file-size limits, stdout to a size-capped file, an audit hook that refuses
sockets, subprocesses, ctypes and writes outside the directory and, where `unshare` works, an empty
network namespace. A program that crashes, is killed or times out fails its test; grading goes on.
LiveCodeBench's own runner does the same per generation with `signal.alarm` and `reliability_guard`,
and says it is no security sandbox (experiments/papers.md §3.2); neither is this one: see the runner's docstring.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tsq.grading.sandbox_runner import RESULT_MARKER
from tsq.text import answer_part

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("sandbox_runner.py")
FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def extract_code(response: str) -> str | None:
    """The last fenced block of the answer part (after `</think>`), preferring blocks tagged python."""
    blocks = FENCE.findall(answer_part(response))
    python = [body for lang, body in blocks if lang.lower() in ("python", "python3", "py")]
    chosen = python or [body for _, body in blocks]
    return chosen[-1] if chosen else None


@dataclass(frozen=True)
class TestCase:
    input: str
    output: str
    testtype: str  # "stdin" or "functional"


def parse_tests(raw: str | list, where: str = "tests") -> list[TestCase]:
    """LiveCodeBench's test list (a JSON string or a list of {input, output, testtype})."""
    items = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise ValueError(f"{where}: expected a list of test cases, got {type(items).__name__}")
    out = []
    for i, t in enumerate(items):
        missing = [k for k in ("input", "output", "testtype") if k not in t]
        if missing:
            raise ValueError(f"{where}[{i}]: missing {missing}")
        if t["testtype"] not in ("stdin", "functional"):
            raise ValueError(f"{where}[{i}]: testtype must be stdin or functional, got {t['testtype']!r}")
        out.append(TestCase(str(t["input"]), str(t["output"]), t["testtype"]))
    return out


def outputs_match(got: str, expected: str, rel_tol: float = 1e-6) -> bool:
    """Line-by-line after stripping; tokens that differ may still match as numbers (LiveCodeBench's rule)."""
    got_lines = [line.strip() for line in got.strip().splitlines()]
    want_lines = [line.strip() for line in expected.strip().splitlines()]
    if got_lines == want_lines:
        return True
    if len(got_lines) != len(want_lines):
        return False
    for g, w in zip(got_lines, want_lines, strict=True):
        gt, wt = g.split(), w.split()
        if len(gt) != len(wt):
            return False
        for a, b in zip(gt, wt, strict=True):
            if a == b:
                continue
            try:
                if not math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=rel_tol):
                    return False
            except ValueError:
                return False
    return True


@functools.cache
def network_isolation_prefix() -> tuple[str, ...]:
    """`unshare` arguments that give the child an empty network namespace, or () where the OS refuses."""
    if shutil.which("unshare") is None:
        return ()
    for prefix in (("unshare", "--net"), ("unshare", "--map-root-user", "--net")):
        try:
            ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return prefix
    log.warning("unshare cannot create a network namespace here; relying on the audit hook alone for no network")
    return ()


@dataclass(frozen=True)
class RunResult:
    status: str  # "ok", "error" (non-zero exit), "timeout"
    stdout: str
    stderr: str
    returncode: int | None


@dataclass
class CodeGrader:
    """Limits per test run and how many test runs go at once (threads; each run is its own process)."""

    timeout_s: float = 6.0
    memory_mb: int = 1024
    file_size_mb: int = 16
    workers: int = 2
    isolate_network: bool = True

    def __post_init__(self) -> None:
        for key in ("timeout_s", "memory_mb", "file_size_mb", "workers"):
            if getattr(self, key) <= 0:
                raise ValueError(f"code grader: {key} must be > 0, got {getattr(self, key)}")

    def _limits(self) -> None:  # runs in the child between fork and exec
        cpu = math.ceil(self.timeout_s) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        memory = self.memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        size = self.file_size_mb * 2**20
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    def run(self, code: str, stdin: str = "", mode: str = "stdin", func_name: str | None = None) -> RunResult:
        """Run `code` once in a fresh sandboxed child; never raises for what the program does."""
        with tempfile.TemporaryDirectory(prefix="tsq-sandbox-") as work:
            work_dir = Path(work)
            (work_dir / "solution.py").write_text(code, encoding="utf-8")
            (work_dir / "stdin.txt").write_text(stdin, encoding="utf-8")
            env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
            args = [sys.executable, "-I", str(RUNNER), mode, "solution.py"] + ([func_name] if func_name else [])
            prefix = network_isolation_prefix() if self.isolate_network else ()
            with open(work_dir / "stdin.txt", "rb") as fin, open(work_dir / "stdout.txt", "wb") as fout:
                with open(work_dir / "stderr.txt", "wb") as ferr:
                    proc = subprocess.Popen(
                        [*prefix, *args],
                        cwd=work,
                        env=env,
                        stdin=fin,
                        stdout=fout,
                        stderr=ferr,
                        preexec_fn=self._limits,
                        start_new_session=True,  # its own process group, so a timeout kills all of it
                    )
                    try:
                        returncode = proc.wait(timeout=self.timeout_s)
                        status = "ok" if returncode == 0 else "error"
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                        returncode, status = None, "timeout"
            read = lambda name: (work_dir / name).read_bytes()[: 1 << 20].decode("utf-8", "replace")  # noqa: E731
            return RunResult(status, read("stdout.txt"), read("stderr.txt"), returncode)

    def passes(self, code: str, test: TestCase, func_name: str | None) -> bool:
        if test.testtype == "functional":
            if not func_name:
                raise ValueError("a functional test needs metadata.func_name")
            result = self.run(code, test.input, "functional", func_name)
            if result.status != "ok":
                return False
            lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT_MARKER)]
            if not lines:
                return False
            try:
                got = json.loads(lines[-1][len(RESULT_MARKER) :])
                return got == json.loads(test.output)
            except json.JSONDecodeError:
                return False
        result = self.run(code, test.input, "stdin")
        return result.status == "ok" and outputs_match(result.stdout, test.output)

    def grade(self, spec: str | dict, response: str) -> bool:
        """`spec` is a problem's answer field: {"tests": [...], "func_name": ...} (JSON). All tests must pass."""
        spec = json.loads(spec) if isinstance(spec, str) else spec
        code = extract_code(response)
        if code is None:
            return False
        tests = parse_tests(spec["tests"])
        return all(self.passes(code, t, spec.get("func_name")) for t in tests)

    def grade_many(self, specs: Sequence[str | dict], responses: Sequence[str]) -> list[bool]:
        if len(specs) != len(responses):
            raise ValueError(f"{len(specs)} test specs for {len(responses)} responses")
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(self.grade, specs, responses))
