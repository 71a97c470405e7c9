"""`executor=`: where the shards of a generating stage run (training samples, evaluation, step refinement).

A generating stage cuts its work into shards (problems for sampling, `tsq.stages.samples.graded_samples`; chosen
traces for refinement, `tsq.stages.refined`), each with its own seed (`shard_seed`). An executor builds the shards
that are missing, each writing itself atomically to its path; the stage then joins them. The seeds belong to the
shards, never to the workers, so every executor builds the same artifact under the same key (the executor is not
part of any key), and a shard written before a crash is not redone.

* `local` runs the shards in order in this process, with the run's one live sampler.
* `ray` runs them on a Ray cluster of model replicas through Ray Data: `map_batches` over a class that holds one
  sampler (tsq's own, HF or vLLM) per replica, `executor.replicas` replicas with `cpus_per_replica` CPUs and
  `gpus_per_replica` GPUs each (tensor parallelism inside a replica is the sampler's own setting, e.g.
  `sampler.tensor_parallel_size`); a replica runs torch at `cpus_per_replica` threads (at least 1). Ray Data's
  LLM processors (`ray.data.llm`) are not used: they return vLLM's outputs, not tsq's completions (EOS and stop
  handling, token counts), they cannot run the HF sampler, and KL refinement scores candidates with the replica's
  model in memory, which they do not expose.
  `executor.address` joins an existing cluster (`auto` on a node of a `ray start` cluster); null starts a local one.
  A shard whose task fails is retried `max_retries` times; after that the stage fails naming the shard.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tsq.cache import atomic_write_text
from tsq.data.base import Problem, ProblemSource
from tsq.sampling.base import Sampler, SamplingParams
from tsq.sampling.graded import grade_completions

log = logging.getLogger(__name__)


SHARD_SEED_STRIDE = 100_003  # seeds of different shards never collide (fewer batches than this per shard)


def shard_seed(seed: int, index: int) -> int:
    """The seed of shard `index` of a stage seeded with `seed` (shard 0 keeps the stage's seed)."""
    return seed + index * SHARD_SEED_STRIDE


class Shard(Protocol):
    """One shard of a generating stage: `build` makes its rows with the sampler (created on first call), writes
    them atomically to `path` and returns a summary for the progress display (sampling: accuracy)."""

    index: int
    path: Path

    def build(self, sampler: Callable[[], Sampler], world: ProblemSource) -> float: ...


@dataclass(frozen=True)
class SampleShard:
    """One shard of a sampling stage: its problems and its own sampling parameters (seed included)."""

    index: int
    problems: tuple[Problem, ...]
    params: SamplingParams
    path: Path

    def build(self, sampler: Callable[[], Sampler], world: ProblemSource) -> float:
        """Sample and grade the shard, write it; returns its accuracy."""
        rows = grade_completions(world, sampler(), list(self.problems), self.params)
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))
        return sum(r["correct"] for r in rows) / len(rows) if rows else 0.0


@dataclass(frozen=True)
class ModelReplica:
    """What a replica needs to build its sampler: the `sampler=` factory and the model's folder and revision."""

    factory: Callable[..., Sampler]
    model_path: Path
    revision: str | None

    def sampler(self) -> Sampler:
        """A sampler over the model (no progress display: stages draw their own)."""
        return self.factory(model_path=self.model_path, revision=self.revision, progress=False)


class Executor(Protocol):
    """The interface of `executor=`: build every shard (each writes its own file), calling `done(index, summary)`
    after each; `sampler()` gives the run's live sampler (the local executor's), `replica` how a remote one builds
    its own."""

    def run(
        self,
        jobs: Sequence[Shard],
        world: ProblemSource,
        sampler: Callable[[], Sampler],
        replica: ModelReplica,
        done: Callable[[int, float], None],
    ) -> None: ...


@dataclass(frozen=True)
class LocalExecutor:
    """The shards in order, in this process, with the run's one live sampler."""

    def run(self, jobs, world, sampler, replica, done) -> None:
        for job in jobs:
            done(job.index, job.build(sampler, world))


class ShardWorker:
    """A Ray Data actor: one model replica that builds the shards it is given (its sampler created on the first
    shard that asks for it, and kept for the next), with torch at `threads` threads."""

    def __init__(self, replica: ModelReplica, world: ProblemSource, jobs: Sequence[Shard], threads: int) -> None:
        import torch

        # Ray sets a replica's OMP_NUM_THREADS to its CPUs only when the driver has none set, so a driver run with
        # OMP_NUM_THREADS=1 would leave a 2-CPU replica on one thread (and KL scores' last digits, which depend on
        # the thread count, different from a local run at 2)
        torch.set_num_threads(threads)
        self.replica, self.live = replica, None
        self.world, self.jobs = world, {job.index: job for job in jobs}

    def sampler(self) -> Sampler:
        if self.live is None:
            self.live = self.replica.sampler()
        return self.live

    def __call__(self, batch: dict) -> dict:
        indices = [int(i) for i in batch["shard"]]
        summaries = [self.jobs[i].build(self.sampler, self.world) for i in indices]
        return {"shard": indices, "summary": summaries, "pid": [os.getpid()] * len(indices)}


@dataclass(frozen=True)
class RayExecutor:
    """The shards on a Ray cluster of `replicas` model replicas (Ray Data `map_batches`, one shard per batch)."""

    replicas: int = 2
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    address: str | None = None
    max_retries: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or self.replicas <= 0:
            raise ValueError(f"executor.replicas must be a whole number > 0, got {self.replicas!r}")
        if self.cpus_per_replica <= 0 or self.gpus_per_replica < 0 or self.max_retries < 0:
            raise ValueError(
                "executor.cpus_per_replica must be > 0, executor.gpus_per_replica >= 0 and executor.max_retries >= 0; "
                f"got {self.cpus_per_replica}, {self.gpus_per_replica}, {self.max_retries}"
            )

    def connect(self) -> None:
        """Join the cluster at `address`, or start a local one (workers import tsq from where this process does)."""
        import ray

        if ray.is_initialized():
            return
        import tsq

        root = str(Path(tsq.__file__).resolve().parents[1])
        paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        # ray.init installs its own SIGTERM handler (exit status 15); the run's (exit status 143 through the normal
        # unwinding, tsq.stages.recipe.exit_on_sigterm) stays in force
        previous = signal.getsignal(signal.SIGTERM)
        ray.init(
            address=self.address,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}},
        )
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)

    def run(self, jobs, world, sampler, replica, done) -> None:
        if not jobs:
            return
        import ray

        self.connect()
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        dataset = ray.data.from_items([{"shard": job.index} for job in jobs], override_num_blocks=len(jobs))
        results = dataset.map_batches(
            ShardWorker,
            fn_constructor_kwargs={
                "replica": replica,
                "world": world,
                "jobs": list(jobs),
                "threads": max(1, int(self.cpus_per_replica)),
            },
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(self.replicas, len(jobs))),
            num_cpus=self.cpus_per_replica,
            num_gpus=self.gpus_per_replica,
            max_restarts=self.max_retries,
            max_task_retries=self.max_retries,
        )
        workers: set[int] = set()
        try:
            for row in results.iter_rows():
                workers.add(int(row["pid"]))
                done(int(row["shard"]), float(row["summary"]))
        except Exception as err:
            missing = sorted(job.index for job in jobs if not job.path.exists())  # a finished shard has its file
            raise RuntimeError(
                f"executor=ray: shard(s) {missing} failed after {self.max_retries} retries ({err}); the shards "
                "already written are kept, a rerun resumes from them"
            ) from err
        missing = sorted(job.index for job in jobs if not job.path.exists())
        if missing:
            raise RuntimeError(f"executor=ray: shard(s) {missing} were not written")
        log.info("executor=ray: %d shards on %d replica process(es)", len(jobs), len(workers))
