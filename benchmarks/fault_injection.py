"""Fault injection: what a crash, a careless user or a hostile program can do to a run, tried, with figures.

    python benchmarks/fault_injection.py                       # everything
    python benchmarks/fault_injection.py --skip-pytest --only concurrent,corruptions --corruptions 1  # the suite's

Two kinds of trials, each counted as held or failed per category:
* the probe tests of the suite, run through pytest (a test is one trial): the code sandbox
  (tests/test_sandbox.py), damaged artifacts (tests/test_cache.py), bad data rows (tests/test_benchmarks.py),
  bad overrides (tests/test_configs.py), resume of a killed training (tests/test_preference_training.py);
* live runs of `python run.py debug=smoke` on scratch caches, compared with one clean reference run:
  a kill -9 inside each stage's build in turn (timed on the reference run's log) followed by a rerun, which
  must finish with the reference's metrics and leave no temporary folder; two runs started at once on one
  empty cache with several sample shards, which must both finish, agree, and build every artifact once;
  damage to finished
  artifacts (zeroed weights, flipped grades, zeroed reference log-probs, a samples file cut at a line, a
  truncated file), after which a rerun must name the damaged file, rebuild it and reproduce the metrics;
  bad overrides, which must fail naming their key before the base model is built (or, for a budget that
  cuts every response, warn).

Prints the figures table and writes it as CSV (`--out`); exits 1 when any trial failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
PYTEST_CATEGORIES = {
    "code sandbox": ["tests/test_sandbox.py"],
    "corrupted artifacts": ["tests/test_cache.py", "-k", "damaged or builds_while or temporary_folders"],
    "manifests and shared caches": ["tests/test_cache.py", "-k", "manifest or umask or group"],
    "bad data rows": ["tests/test_benchmarks.py", "-k", "bad_rows or numeric_answers or bad_livecodebench"],
    "grading errors": [
        "tests/test_benchmarks.py",
        "-k",
        "contest_dates or json_list or no_test or unclosed",
    ],  # fmt: skip
    "keys that miss a setting": ["tests/test_result_settings.py"],
    "bad overrides": ["tests/test_configs.py", "-k", "wrong_type or integral_floats"],
    "exit status": ["tests/test_preference_training.py", "-k", "sigterm"],
    "resume of a killed training": ["tests/test_preference_training.py", "-k", "resumes or end_of_epoch or truncated"],
}
BAD_OVERRIDES = [
    ("train.epochs=1.5", "train.epochs must be an integer, got 1.5"),
    ("eval.n_samples=abc", "eval.n_samples must be an integer, got 'abc'"),
    ("sampling.shard_size=0", "sampling.shard_size must be > 0"),
    ("eval.max_new_tokens=1", "were cut at max_new_tokens=1"),  # runs, but warns loudly
]


def run_py(
    cache: Path, out: Path, *overrides: str, wait: bool = True
) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {**os.environ, "TSQ_CACHE_DIR": str(cache), "HYDRA_FULL_ERROR": "0"}
    argv = [sys.executable, str(ROOT / "run.py"), f"hydra.run.dir={out}", "debug=smoke", *overrides]
    if wait:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, cwd=out.parent)
    log = open(out.parent / f"{out.name}.log", "w")  # noqa: SIM115 (closed by the caller through the process)
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=out.parent, start_new_session=True)


def rows(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "metrics.json").read_text())["rows"]


def leftovers(cache: Path) -> list[Path]:
    return list(cache.glob("*/.*.tmp"))


class Tally:
    def __init__(self) -> None:
        self.tried, self.held, self.notes = Counter(), Counter(), []

    def add(self, category: str, ok: bool, what: str) -> None:
        self.tried[category] += 1
        self.held[category] += ok
        if not ok:
            self.notes.append(f"{category}: {what}")
        print(f"  {'held' if ok else 'FAILED'}  {category}: {what}", flush=True)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"category": c, "tried": n, "held": self.held[c], "failed": n - self.held[c]}
                for c, n in self.tried.items()
            ]
        )


def pytest_trials(tally: Tally, work: Path) -> None:
    for category, args in PYTEST_CATEGORIES.items():
        report = work / f"{category.replace(' ', '_')}.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *args],
                       cwd=ROOT, capture_output=True, text=True)  # fmt: skip
        for case in ET.parse(report).getroot().iter("testcase"):
            if case.find("skipped") is not None:
                continue
            failed = case.find("failure") is not None or case.find("error") is not None
            tally.add(category, not failed, case.get("name", "?"))


def timeline(cache: Path, out: Path) -> list[tuple[str, float, float]]:
    """Run the reference and return (stage, start, end) seconds after launch for every stage it built."""
    proc = run_py(cache, out, wait=False)
    start, opened, windows = time.perf_counter(), {}, []
    log_path = out.parent / f"{out.name}.log"
    seen = 0
    while proc.poll() is None or seen < len(log_path.read_text().splitlines()):
        lines = log_path.read_text().splitlines()
        now = time.perf_counter() - start
        for line in lines[seen:]:
            if ": cache miss " in line:
                opened[line.split("stage ")[1].split(":")[0]] = now
            elif ": built " in line:
                stage = line.split("stage ")[1].split(":")[0]
                windows.append((stage, opened.pop(stage, now), now))
        seen = len(lines)
        time.sleep(0.05)
    if proc.returncode != 0:
        raise SystemExit(f"the clean reference run failed:\n{log_path.read_text()[-3000:]}")
    return windows


def stage_lines(log: str) -> list[str]:
    """The stage names of the `stage <name>: ...` lines of a run's log, in order."""
    return [line.split("] - stage ")[1].split(":")[0] for line in log.splitlines() if "] - stage " in line]


def kill_trials(tally: Tally, work: Path, reference: list[dict], windows: list, kills: int, seed: int) -> None:
    """For each stage the reference built, in turn: start a run, wait until its log shows that stage's cache
    miss, kill -9 it at a random point of the stage's reference duration, then rerun to the end."""
    rng = random.Random(seed)
    for i in range(kills):
        stage, begin, end = windows[i % len(windows)]
        cache, run_dir = work / f"kill{i}" / "cache", work / f"kill{i}" / "run"
        run_dir.parent.mkdir(parents=True)
        log_path = run_dir.parent / "run.log"
        proc = run_py(cache, run_dir, wait=False)
        misses = sum(1 for w in windows[: i % len(windows) + 1] if w[0] == stage)  # the n-th build of this stage
        while proc.poll() is None and log_path.read_text().count(f"stage {stage}: cache miss") < misses:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.9) * (end - begin))
        killed = proc.poll() is None
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        during = (stage_lines(log_path.read_text()) or ["start-up"])[-1]
        again = run_py(cache, work / f"kill{i}" / "rerun")
        ok = again.returncode == 0 and rows(work / f"kill{i}" / "rerun") == reference and not leftovers(cache)
        what = f"kill -9 while building {stage} (last log line: {during}{'' if killed else '; run had ended'}), rerun"
        tally.add("kills at random points", ok, what + ("" if ok else f": rc {again.returncode} {again.stderr[-300:]}"))


def concurrent_trial(tally: Tally, work: Path) -> None:
    cache, base = work / "concurrent" / "cache", work / "concurrent"
    base.mkdir(parents=True)
    shards = ["sampling.shard_size=4", "eval.max_problems=8"]  # several shards per sampling stage
    procs = [run_py(cache, base / f"run{j}", *shards, wait=False) for j in range(2)]
    for p in procs:
        p.wait(timeout=900)
    logs = [(base / f"run{j}.log").read_text() for j in range(2)]
    built = Counter(line.split("built ")[1] for log in logs for line in log.splitlines() if ": built " in line)
    ok = all(p.returncode == 0 for p in procs) and rows(base / "run0") == rows(base / "run1")
    ok = ok and built and max(built.values()) == 1 and not leftovers(cache)
    tally.add("concurrent runs on one cache", ok, f"two runs, {len(built)} artifacts built once each" if ok else
              f"rc {[p.returncode for p in procs]}, builds {dict(built)}")  # fmt: skip


def corrupt(cache: Path, kind: str) -> Path:
    """Damage one finished artifact the way the red-team did; returns the damaged file."""
    if kind == "zeroed policy weights":
        path = next(cache.glob("policy/*/model.safetensors"))
        data = bytearray(path.read_bytes())
        header = 8 + int.from_bytes(data[:8], "little")
        data[header:] = bytes(len(data) - header)  # header intact, every weight 0
        path.write_bytes(bytes(data))
    elif kind == "flipped grades in samples":
        path = next(cache.glob("samples/*/samples.jsonl"))
        path.write_text(path.read_text().replace('"correct": true', '"correct": TRUE').replace(
            '"correct": false', '"correct": true').replace('"correct": TRUE', '"correct": false'))  # fmt: skip
    elif kind == "zeroed reference log-probs":
        path = next(cache.glob("ref_logps/*/ref_logps.json"))
        path.write_text(json.dumps({k: [0.0, 0.0] for k in json.loads(path.read_text())}))
        for policy in cache.glob("policy/*/artifact.json"):  # only a training reads them: the rerun trains again
            shutil.rmtree(policy.parent)
    elif kind == "evaluation samples cut at a line":
        path = sorted(cache.glob("eval/*/samples.jsonl"))[0]
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[: len(lines) // 2]))
    elif kind == "truncated base model weights":
        path = next(cache.glob("base_model/*/model.safetensors"))
        path.write_bytes(path.read_bytes()[:1000])
    else:
        raise ValueError(kind)
    return path


CORRUPTIONS = [
    "zeroed policy weights",
    "flipped grades in samples",
    "zeroed reference log-probs",
    "evaluation samples cut at a line",
    "truncated base model weights",
]


def corruption_trials(tally: Tally, work: Path, reference_cache: Path, reference: list[dict], count: int) -> None:
    for i, kind in enumerate(CORRUPTIONS[:count]):
        cache = work / f"corrupt{i}" / "cache"
        shutil.copytree(reference_cache, cache)
        damaged = corrupt(cache, kind)
        again = run_py(cache, work / f"corrupt{i}" / "run")
        output = again.stdout + again.stderr
        named = "is corrupt" in output and damaged.name in output
        ok = again.returncode == 0 and named and rows(work / f"corrupt{i}" / "run") == reference
        tally.add("corrupted artifacts", ok, f"{kind}: named and rebuilt" if ok else f"{kind}: rc {again.returncode}, "
                  f"named {named}")  # fmt: skip


def override_trials(tally: Tally, work: Path) -> None:
    for i, (override, message) in enumerate(BAD_OVERRIDES):
        cache = work / f"override{i}" / "cache"
        (work / f"override{i}").mkdir(parents=True)
        result = run_py(cache, work / f"override{i}" / "run", override)
        output = result.stdout + result.stderr
        if "cut at" in message:  # a budget that cuts every response runs, loudly
            ok = result.returncode == 0 and message in output
        else:
            ok = result.returncode != 0 and message in output and not (cache / "base_model").exists()
        tally.add("bad overrides", ok, override)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=0, help="0: one per stage build of the reference, in turn")
    parser.add_argument("--corruptions", type=int, default=len(CORRUPTIONS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-pytest", action="store_true", help="live runs only (the suite runs the probe tests)")
    parser.add_argument("--only", default="kills,concurrent,corruptions,overrides", help="which live trials")
    parser.add_argument("--out", default="results/fault_injection.csv")
    args = parser.parse_args()
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="tsq-faults-") as tmp:
        work = Path(tmp)
        if not args.skip_pytest:
            print("probe tests (pytest):", flush=True)
            pytest_trials(tally, work)
        print("live runs (python run.py debug=smoke):", flush=True)
        (work / "reference").mkdir()
        windows = timeline(work / "reference" / "cache", work / "reference" / "run")
        reference = rows(work / "reference" / "run")
        print("stages built by the reference: " + ", ".join(f"{s} {a:.1f}-{b:.1f} s" for s, a, b in windows))
        live = set(args.only.split(","))
        if "kills" in live:
            kill_trials(tally, work, reference, windows, args.kills or len(windows), args.seed)
        if "concurrent" in live:
            concurrent_trial(tally, work)
        if "corruptions" in live:
            corruption_trials(tally, work, work / "reference" / "cache", reference, args.corruptions)
        if "overrides" in live:
            override_trials(tally, work)
    table = tally.frame()
    print("\n" + table.to_string(index=False))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    for note in tally.notes:
        print("failed:", note)
    return 1 if tally.notes else 0


if __name__ == "__main__":
    sys.exit(main())
