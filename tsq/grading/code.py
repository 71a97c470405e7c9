"""Code answers (LiveCodeBench rows): the last fenced Python block, run against stdin or functional tests.

Every test runs the program once, in a bubblewrap namespace jail (`tsq/grading/jail.py`: its own
mount, PID and network namespaces, uid 65534 without capabilities, a read-only view of the interpreter
and its standard library, a private /work capped in size, rlimits on CPU, memory, file size and
processes, the whole process tree killed when it ends), under `python -I` through `sandbox_runner.py`,
whose audit hook stays as defence in depth. A program that crashes, is killed or times out fails its
test; grading goes on. LiveCodeBench's own runner only guards the interpreter and says it is no security
sandbox (experiments/paper_notes.md §3.2); the jail is the boundary here. `sandbox=audit_hook` (the hook and
rlimits alone) is an explicit, weaker choice for machines without bubblewrap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from tsq.grading.jail import (
    RUNNER_INSIDE,
    SANDBOX,
    WORK,
    JailLimits,
    interpreter,
    jail_problem,
    jailed,
    runner_binds,
)
from tsq.grading.sandbox_runner import RESULT_MARKER
from tsq.text import answer_part, utf8_text

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


def _test_text(value: object, testtype: str, field: str, where: str) -> str:
    """A test's input or output as the text the program reads or prints. A functional test's arguments may come
    as a JSON list (one argument each, written one per line as LiveCodeBench's own files do); stdin text must
    be a string. Text that cannot be written as UTF-8 (a lone surrogate) is refused here, not mid-grading."""
    if isinstance(value, str):
        text = value
    elif testtype == "functional" and field == "input" and isinstance(value, list):
        text = "\n".join(json.dumps(arg) for arg in value)
    elif testtype == "functional" and field == "output":
        text = json.dumps(value)
    else:
        raise ValueError(f"{where}: {field} of a {testtype} test must be text, got {type(value).__name__}")
    return utf8_text(text, f"{where}: {field}")


def parse_tests(raw: str | list, where: str = "tests") -> list[TestCase]:
    """LiveCodeBench's test list (a JSON string or a list of {input, output, testtype}); at least one test."""
    items = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise ValueError(f"{where}: expected a list of test cases, got {type(items).__name__}")
    if not items:
        raise ValueError(f"{where}: no test cases (every response would pass)")
    out = []
    for i, t in enumerate(items):
        if not isinstance(t, dict):
            raise ValueError(f"{where}[{i}]: a test case must be an object, got {type(t).__name__}")
        missing = [k for k in ("input", "output", "testtype") if k not in t]
        if missing:
            raise ValueError(f"{where}[{i}]: missing {missing}")
        if t["testtype"] not in ("stdin", "functional"):
            raise ValueError(f"{where}[{i}]: testtype must be stdin or functional, got {t['testtype']!r}")
        kind = t["testtype"]
        out.append(TestCase(_test_text(t["input"], kind, "input", f"{where}[{i}]"),
                            _test_text(t["output"], kind, "output", f"{where}[{i}]"), kind))  # fmt: skip
    return out


def _wait(proc: subprocess.Popen, timeout_s: float) -> tuple[int | None, str]:
    """(exit status, "ok" / "error" / "timeout") of a program given `timeout_s` seconds."""
    try:
        returncode = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, "timeout"
    return returncode, "ok" if returncode == 0 else "error"


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


@dataclass(frozen=True)
class RunResult:
    status: str  # "ok", "error" (non-zero exit), "timeout"
    stdout: str
    stderr: str
    returncode: int | None


SANDBOXES = ("bwrap", "audit_hook")


@dataclass
class CodeGrader:
    """Limits per test run and how many test runs go at once (threads; each run is its own process).

    `sandbox=bwrap` (default) runs every program in the namespace jail of `tsq/grading/jail.py` and refuses
    to start where the jail does not work; `sandbox=audit_hook` is the explicit choice of the weaker,
    in-interpreter sandbox alone (a child process with rlimits, a clean environment and the runner's audit
    hook), which a determined program can escape.
    """

    timeout_s: float = 6.0
    memory_mb: int = 1024
    file_size_mb: int = 16
    disk_mb: int = 64
    processes: int = 32
    workers: int = 2
    sandbox: str = "bwrap"
    bwrap: str = "bwrap"

    def __post_init__(self) -> None:
        for key in ("timeout_s", "memory_mb", "file_size_mb", "disk_mb", "processes", "workers"):
            if getattr(self, key) <= 0:
                raise ValueError(f"code grader: {key} must be > 0, got {getattr(self, key)}")
        if self.sandbox not in SANDBOXES:
            raise ValueError(f"code grader: sandbox must be one of {SANDBOXES}, got {self.sandbox!r}")
        if self.sandbox == "bwrap" and (problem := jail_problem(self.bwrap)) is not None:
            raise RuntimeError(
                f"code grading runs model-written programs in a bubblewrap jail, which does not work here: {problem}. "
                "Install bubblewrap, or accept the weaker in-interpreter sandbox with code_grader.sandbox=audit_hook."
            )
        self.limits = JailLimits(
            cpu_s=math.ceil(self.timeout_s) + 1,
            memory_mb=self.memory_mb,
            file_size_mb=self.file_size_mb,
            disk_mb=self.disk_mb,
            processes=self.processes,
        )
        # Limits so tight that the interpreter cannot even start would grade every program wrong: refused here,
        # before any sampling, by running the smallest program under them.
        trial = self.run("print(6 * 7)")
        if trial.status != "ok" or trial.stdout != "42\n":
            raise ValueError(
                f"code grader: its limits (timeout_s={self.timeout_s}, memory_mb={self.memory_mb}, processes="
                f"{self.processes}, disk_mb={self.disk_mb}, file_size_mb={self.file_size_mb}) are too tight for "
                f"`print(6 * 7)` to run ({trial.status}, exit {trial.returncode}: {trial.stderr.strip()[-300:]!r})"
            )

    def result_settings(self) -> dict:
        """The settings that can change a grade (a limit can fail a correct program); not how many run at once."""
        return {k: v for k, v in asdict(self).items() if k not in ("workers", "bwrap")}

    def run(self, code: str, stdin: str = "", mode: str = "stdin", func_name: str | None = None) -> RunResult:
        """Run `code` once in a fresh sandboxed child; never raises for what the program does."""
        with tempfile.TemporaryDirectory(prefix="tsq-sandbox-") as work:
            work_dir = Path(work)
            os.chmod(work_dir, 0o755)  # the jail's uid 65534 reads the solution through a bind
            (work_dir / "solution.py").write_text(code, encoding="utf-8")
            (work_dir / "stdin.txt").write_text(stdin, encoding="utf-8")
            env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
            with open(work_dir / "stdin.txt", "rb") as fin, open(work_dir / "stdout.txt", "wb") as fout:
                with open(work_dir / "stderr.txt", "wb") as ferr:
                    streams = {"stdin": fin, "stdout": fout, "stderr": ferr}
                    if self.sandbox == "bwrap":
                        binds = runner_binds(RUNNER, {"solution.py": work_dir / "solution.py"})
                        tail = [mode, f"{SANDBOX}/solution.py"] + ([func_name] if func_name else [])
                        program = [interpreter()[0], "-I", RUNNER_INSIDE, *tail]
                        env = {**env, "HOME": WORK, "TMPDIR": WORK}
                        with jailed(self.bwrap, program, binds, self.limits, env, **streams) as proc:
                            returncode, status = _wait(proc, self.timeout_s)
                    else:
                        tail = [mode, "solution.py"] + ([func_name] if func_name else [])
                        proc = subprocess.Popen(
                            [sys.executable, "-I", str(RUNNER), *tail],
                            cwd=work,
                            env={**env, "HOME": work, "TMPDIR": work},
                            preexec_fn=self.limits.apply,
                            start_new_session=True,  # its own process group, so a timeout kills all of it
                            **streams,
                        )
                        try:
                            returncode, status = _wait(proc, self.timeout_s)
                        finally:
                            with contextlib.suppress(ProcessLookupError):
                                os.killpg(proc.pid, signal.SIGKILL)
                            proc.wait()
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
        tests = parse_tests(spec["tests"])  # before the response: a spec with no test is an error, never a pass
        code = extract_code(response)
        if code is None:
            return False
        return all(self.passes(code, t, spec.get("func_name")) for t in tests)

    def grade_many(self, specs: Sequence[str | dict], responses: Sequence[str]) -> list[bool]:
        if len(specs) != len(responses):
            raise ValueError(f"{len(specs)} test specs for {len(responses)} responses")
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(self.grade, specs, responses))
