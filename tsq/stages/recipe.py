"""The recipe behind `run.py`: every config group is instantiated, then the steps of `cfg.steps` run in order.

A *step* is one job of the recipe (`base_model`, `base_eval`, `construct`, `train`, `tldr` or `rl`, `trained_eval`);
it calls the cached stages it needs (`tsq.stages.*`, one module per artifact). Config objects are all
instantiated (and so validated) before the first expensive step, so a bad value fails in seconds with the
offending key named, and no computed artifact is lost to it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from tsq.cache import Artifact, ArtifactStore, atomic_write_text
from tsq.data.base import ChatTemplated
from tsq.evaluation.evaluate import Evaluator, length_histogram
from tsq.evaluation.forced import forced_curve
from tsq.evaluation.metrics import relative_change
from tsq.models.base import ModelHandle, ModelSource
from tsq.refinement.base import Refiner
from tsq.sampling.settings import SamplingSettings
from tsq.selection import Selector, select_all
from tsq.stages.base_model import base_model, base_model_key
from tsq.stages.context import RunContext, SamplerChoice
from tsq.stages.eval import EVAL, eval_key_parts, evaluation
from tsq.stages.forced_budget import forced_budget, read_forced
from tsq.stages.model_card import model_card, publish_policy
from tsq.stages.pairs import PAIRS, Pairs, PairSettings, pairs, pairs_key_parts
from tsq.stages.pairs_export import PAIRS_EXPORT, pairs_export, pairs_export_key_parts
from tsq.stages.policy import POLICY, policy_key_parts, train_policy
from tsq.stages.ref_logps import REF_LOGPS, reads, ref_logps_key_parts
from tsq.stages.refined import REFINED, read_refined, refined, refined_key_parts
from tsq.stages.reporting import (
    TSQ_WANDB_KEYS,
    log_payload,
    log_samples,
    print_construction,
    print_evaluation,
    print_run_end,
    print_tldr,
    provenance,
    run_tags,
    start_wandb,
)
from tsq.stages.rl_policy import RL_POLICY, rl_key_parts, train_rl
from tsq.stages.run_metrics import RunMetrics
from tsq.stages.samples import SAMPLES, samples, samples_key_parts
from tsq.stages.tldr_policy import (
    TLDR_POLICY,
    bound_evaluator,
    short_model_source,
    short_sampling,
    tldr_key_parts,
    train_tldr,
)
from tsq.training.compute import preference_trained_tokens, refinement_tokens_estimate
from tsq.training.length_rewards import LengthReward
from tsq.training.losses import PreferenceLoss
from tsq.training.rl import RLSettings
from tsq.training.settings import TrainSettings
from tsq.training.strategy import world_size
from tsq.training.tldr import TLDRSettings
from tsq.validate import check_group

log = logging.getLogger(__name__)


def quiet_libraries() -> None:
    """Keep the run log readable: no per-file weight-loading bars, no Lightning adverts."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


# The config groups that pick a class by `_target_` and are instantiated before any compute (each is type-checked)
PART_GROUPS = (
    "data",
    "model",
    "eval",
    "sampler",
    "executor",
    "sampling",
    "selector",
    "refiner",
    "pairs",
    "loss",
    "train",
    "tldr",
    "rl",
    "reward",
)

# The steps `cfg.steps` may list; `base_model` always runs first and `trained_eval` after a training step.
STEPS = ("base_eval", "construct", "train", "tldr", "rl")
# the steps that train a policy (one per run)
TRAINING_STEPS = ("train", "tldr", "rl")


SIGTERM_STATUS = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM


@contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """SIGTERM ends the run with status 143 through the normal unwinding (temporary build folders removed,
    scratch work kept for a resume). Without this, a SIGTERM during training ended the process with status 0:
    Lightning turns it into its SIGTERMException, a SystemExit without a code, which a scheduler records as
    success. Lightning keeps this handler and calls it after its own while it trains."""

    def terminate(signum, frame) -> None:
        raise SystemExit(SIGTERM_STATUS)

    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    except SIGTERMException as stop:  # one that Lightning raised before our handler ran
        raise SystemExit(SIGTERM_STATUS) from stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(cfg: DictConfig) -> RunResult:
    """Build the world and base model, then run `cfg.steps` in order; return what they produced."""
    try:
        with exit_on_sigterm():
            return run_steps(cfg)
    except SystemExit as stop:
        if stop.code == SIGTERM_STATUS:
            log.error("run terminated by SIGTERM (exit status %d); a rerun resumes from the cached work", stop.code)
        raise
    finally:
        # Close a W&B run even on failure, so its files are complete and a multirun's next job starts clean.
        if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
            sys.modules["wandb"].finish()


@dataclass
class Parts:
    """Every config group instantiated (and so validated) before any compute."""

    model_source: ModelSource
    evaluator: Evaluator
    sampling: SamplingSettings
    selector: Selector
    refiner: Refiner
    pairs: PairSettings
    loss: PreferenceLoss
    train: TrainSettings
    tldr: TLDRSettings
    rl: RLSettings
    reward: LengthReward


@dataclass
class RunResult:
    """What `run` returns: the run's record (what metrics.json holds) and where it was written; on a rank other
    than 0 of a data-parallel training, which writes nothing, `metrics_path` is None."""

    metrics: RunMetrics
    metrics_path: Path | None
    rank: int = 0


@dataclass
class Construction:
    """What the construct step built: the samples' key and their tokens, the refined traces, the pairs and their
    export."""

    samples_key: str
    sampled_tokens: int
    refined: Artifact
    pairs: Pairs
    export: Artifact | None


class StepClock:
    """Times each step (wall seconds, cache hits included) into the record and logs it."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        log.info("%s: started", name)
        yield
        self.timings[name] = time.perf_counter() - start
        log.info("%s: %.1f s", name, self.timings[name])


def check_steps(cfg: DictConfig) -> None:
    """Refuse a step list the recipe cannot run, naming `steps`."""
    unknown = [s for s in cfg.steps if s not in STEPS]
    if unknown:
        raise ValueError(f"steps: unknown step(s) {unknown}; known: {list(STEPS)}")
    if "train" in cfg.steps and "construct" not in cfg.steps:
        raise ValueError("steps: train needs construct before it (its pairs)")
    training = [s for s in TRAINING_STEPS if s in cfg.steps]
    if len(training) > 1:
        raise ValueError(f"steps: {' and '.join(training)} each train a policy; choose one")
    processes = world_size(OmegaConf.to_container(cfg.trainer, resolve=True))
    if "tldr" in cfg.steps and processes > 1:
        raise ValueError(
            f"steps: tldr trains in one process (its dev re-weighting samples the policy in memory), but trainer= "
            f"plans {processes} processes; use trainer=default"
        )
    if "rl" in cfg.steps and processes > 1:
        raise ValueError(
            f"steps: rl trains in one process here (a group's rollouts must reach one reward call), but trainer= "
            f"plans {processes} processes; use trainer=default or trainer=gpu"
        )
    if processes > 1 and multirun_without_cluster():
        raise ValueError(
            f"trainer= plans {processes} processes inside a -m sweep: Lightning's launcher would start the whole "
            "sweep again for each rank; sweep with launcher=slurm, or run each job on its own"
        )


def build_parts(cfg: DictConfig) -> tuple[RunContext, Parts]:
    """The run context and every config object, validated; raises naming the key on a bad value."""
    check_steps(cfg)
    for group in PART_GROUPS:
        check_group(cfg, group)  # a value of the wrong type names its key here, not as a TypeError later
    world = instantiate(cfg.data, _convert_="all")
    parts = Parts(
        model_source=instantiate(cfg.model, _convert_="all"),
        evaluator=instantiate(cfg.eval, _convert_="all"),
        sampling=instantiate(cfg.sampling, _convert_="all"),
        selector=instantiate(cfg.selector, _convert_="all"),
        refiner=instantiate(cfg.refiner, _convert_="all"),
        pairs=instantiate(cfg.pairs, _convert_="all"),
        loss=instantiate(cfg.loss, _convert_="all"),
        train=instantiate(cfg.train, _convert_="all"),
        tldr=instantiate(cfg.tldr, _convert_="all"),
        rl=instantiate(cfg.rl, _convert_="all"),
        reward=instantiate(cfg.reward, _convert_="all"),
    )
    parts.evaluator.problems(world)  # fail on an empty or unknown split before any training
    if "construct" in cfg.steps:
        parts.sampling.problems(world)
    if "rl" in cfg.steps:
        try:
            prompts = world.split(parts.rl.split)
        except ValueError as err:
            raise ValueError(f"rl.split={parts.rl.split!r}: {err}") from err
        if not prompts:
            raise ValueError(f"rl.split={parts.rl.split!r}: the world {world.name} has no problems in it")
    ctx = RunContext(
        world=world,
        store=ArtifactStore(
            cfg.paths.cache_dir,
            verify=cfg.paths.get("verify", "hash"),
            accept_unmanifested=cfg.paths.get("accept_unmanifested", False),
        ),
        sampler=SamplerChoice(instantiate(cfg.sampler), OmegaConf.to_container(cfg.sampler, resolve=True)),
        trainer=OmegaConf.to_container(cfg.trainer, resolve=True),
        executor=instantiate(cfg.executor, _convert_="all"),
        make_loggers=lambda: instantiate_loggers(cfg),
        output_dir=Path(cfg.paths.output_dir),
    )
    return ctx, parts


def base_model_step(ctx: RunContext, parts: Parts) -> tuple[RunContext, ModelHandle]:
    """The base model (built or loaded), and the context with prompts rendered for it where the world's
    prompts go through the model's chat template."""
    model = base_model(ctx.world, ctx.store, parts.model_source)
    if isinstance(ctx.world, ChatTemplated):
        ctx = replace(ctx, world=ctx.world.bind(model))
    return ctx, model


def process_rank() -> int:
    """This process's global rank: 0 unless a launcher started it for a data-parallel training (Lightning's
    launcher re-runs `run.py` for ranks 1..N-1 when rank 0's training starts; SLURM and torchrun start all)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0)


def multirun_without_cluster() -> bool:
    """A Hydra multirun in which Lightning itself would launch the extra training processes (no SLURM task,
    no torchrun environment)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return False
    return not ({"SLURM_NTASKS", "WORLD_SIZE"} & set(os.environ))


def run_steps(cfg: DictConfig) -> RunResult:
    quiet_libraries()
    ctx, parts = build_parts(cfg)
    rank = process_rank()
    # Ranks other than 0 only take part in the training: every artifact before it is a cache hit (rank 0
    # built it before training started, and a rank that finds one missing waits on its build lock), and
    # rank 0 alone saves, evaluates, writes metrics and logs to W&B.
    record = RunMetrics(run=run_description(cfg))
    graded: dict[str, pd.DataFrame] = {}  # each evaluated model's graded samples, by role
    # before training, so Lightning's WandbLogger joins this run
    wandb_run = start_wandb(cfg, record.run.get("choices", {})) if rank == 0 else None
    step = StepClock(record.timings)
    with step("base_model"):
        ctx, model = base_model_step(ctx, parts)
    if {"base_eval", *TRAINING_STEPS} & set(cfg.steps):
        with step("base_eval"):
            evaluate_step(ctx, parts.evaluator, model, "base", record, graded)
    built = None
    if "construct" in cfg.steps:
        with step("construct"):
            built = construct_step(ctx, model, parts.sampling, parts.selector, parts.refiner, parts.pairs)
            record.construction = {**built.pairs.stats, "pairs_path": str(built.pairs.path)}
            if built.export is not None:
                record.construction["export_path"] = str(built.export.path)
            export_path = built.export.path if built.export is not None else None
            print_construction(parts.selector, parts.refiner, built.pairs.stats, built.pairs.path, export_path)
    policy = None
    if "train" in cfg.steps:
        with step("train"):
            if not built.pairs.stats["pairs"]:
                raise RuntimeError(
                    f"construction produced no preference pairs ({built.pairs.path}); nothing to train on"
                )
            policy = train_policy(ctx, model, built.pairs, parts.loss, parts.train)
        if rank != 0:
            log.info("rank %d: training done; rank 0 saves and evaluates the policy", rank)
            return RunResult(record, None, rank)
        # steps, pairs kept / dropped / truncated, weight tensors changed: what training really did
        record.training = json.loads((policy.path / "train_summary.json").read_text())
        record.compute = preference_compute(built, record.training, parts.train)
    if "tldr" in cfg.steps:
        with step("train"):
            trained = train_tldr(ctx, parts.model_source, model, parts.sampling, parts.tldr)
            policy, record.tldr = trained.model, trained.summary
            record.compute = {
                "generated_tokens": {"sampling": trained.summary["compute"]["sampled_tokens"]},
                "trained_tokens": trained.summary["compute"]["trained_tokens"],
                "estimated": ["trained_tokens"],
            }
            print_tldr(record.tldr)
    if "rl" in cfg.steps:
        with step("train"):
            ctx.sampler.release()  # training needs the memory
            learned = train_rl(ctx, model, parts.rl, parts.reward)
            policy = learned.model
            record.rl = {k: v for k, v in learned.summary.items() if k != "log_history"}  # (the artifact keeps it)
            record.compute = {
                "generated_tokens": {"rollouts": learned.summary["generated_tokens"]},
                "trained_tokens": learned.summary["trained_tokens"],
                "estimated": [],
            }
    if policy is not None:
        with step("trained_eval"):
            evaluate_step(ctx, parts.evaluator, policy, "trained", record, graded)
    ctx.sampler.release()
    record.artifacts = ctx.store.served  # every artifact this run used or built: stage, key, path
    record.provenance = provenance()
    if policy is not None:
        card = policy_card(cfg, ctx.world.name, model, policy, record)
        record.policy_path = str(publish_policy(policy.path, ctx.output_dir / "policy", card))
    atomic_write_text(ctx.output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    path = record.write(ctx.output_dir)
    log_payload(wandb_run, record)
    if wandb_run is not None:
        refined_traces = read_refined(built.refined) if built is not None else []
        per_problem = cfg.logger.wandb.get("samples_per_problem")
        log_samples(wandb_run, graded, refined_traces, ctx.world.step_delimiter, per_problem)
    print_run_end(record, path)
    return RunResult(RunMetrics.read(path), path, rank)  # as every reader sees it (JSON: NaN written as null)


def construct_step(
    ctx: RunContext,
    model: ModelHandle,
    sampling: SamplingSettings,
    selector: Selector,
    refiner: Refiner,
    pair_settings: PairSettings,
) -> Construction:
    """TokenSqueeze's data construction: sample (cached), select, refine the chosen traces (cached), build the pairs
    (cached) and export them for other trainers (cached)."""
    sampled = samples(ctx, model, sampling)
    problems = {p.id: p for p in sampling.problems(ctx.world)}
    selected = select_all(sampled.frame, selector)
    traces = refined(ctx, model, sampled, selected, problems, selector, refiner)
    built = pairs(ctx, sampled, selected, traces, problems, pair_settings)
    export = pairs_export(ctx, built, problems) if built.stats["pairs"] else None  # (no rows, no dataset)
    return Construction(sampled.key, int(sampled.frame["n_tokens"].sum()), traces, built, export)


def preference_compute(built: Construction, training: dict, settings: TrainSettings) -> dict:
    """What a preference row's training signal cost (tsq.training.compute): the training samples' tokens (exact),
    refinement's candidate tokens and the trained tokens (estimated from counts and mean lengths)."""
    stats = built.pairs.stats
    refinement = refinement_tokens_estimate(stats.get("refine_candidates", 0), stats.get("step_len_before"))
    rows_per_step = settings.batch_size * training["accumulate_grad_batches"] * training["processes"]
    trained = preference_trained_tokens(
        training["steps"], rows_per_step, stats["chosen_len_mean"], stats["rejected_len_mean"]
    )
    return {
        "generated_tokens": {"sampling": built.sampled_tokens, "refinement": refinement},
        "trained_tokens": trained,
        "estimated": ["generated_tokens.refinement", "trained_tokens"],
    }


def planned_keys(ctx: RunContext, parts: Parts, tldr: bool = False, rl: bool = False) -> dict[str, str]:
    """The cache key of every artifact of the preference recipe (base_eval, construct, train), or with `tldr` of
    the TL;DR recipe (base_eval, tldr), or with `rl` of the RL recipe (base_eval, rl), computed from the settings
    alone as the stages compute them (no model is built or loaded; an artifact the world's chat template would
    change is keyed on the unbound world)."""
    model_key = base_model_key(parts.model_source, ctx.world)
    model = ModelHandle(name=parts.model_source.name, path=Path("."), key=model_key)
    keys = {"base_model": model_key, "eval_base": EVAL.key(*eval_key_parts(ctx, model, parts.evaluator))}
    if rl:
        keys["rl_policy"] = RL_POLICY.key(*rl_key_parts(ctx, model, parts.rl, parts.reward))
        keys["eval_trained"] = EVAL.key(*eval_key_parts(ctx, replace(model, key=keys["rl_policy"]), parts.evaluator))
        return keys
    keys["samples"] = SAMPLES.key(*samples_key_parts(ctx, model, parts.sampling))
    if tldr:
        settings = parts.tldr
        short = base_model_key(short_model_source(settings, parts.model_source), ctx.world)
        short_handle = replace(model, key=short)
        keys["short_model"] = short
        keys["system1_samples"] = SAMPLES.key(
            *samples_key_parts(ctx, short_handle, short_sampling(settings, parts.sampling))
        )
        bounds = bound_evaluator(settings)
        keys["eval_bound_long"] = EVAL.key(*eval_key_parts(ctx, model, bounds))
        keys["eval_bound_short"] = EVAL.key(*eval_key_parts(ctx, short_handle, bounds))
        own, inputs = tldr_key_parts(ctx, settings, model_key, short, keys["system1_samples"], keys["samples"])
        keys["tldr_policy"] = TLDR_POLICY.key(own, inputs)
        keys["eval_trained"] = EVAL.key(*eval_key_parts(ctx, replace(model, key=keys["tldr_policy"]), parts.evaluator))
        return keys
    keys["refined"] = REFINED.key(*refined_key_parts(parts.selector, parts.refiner, keys["samples"]))
    keys["pairs"] = PAIRS.key(*pairs_key_parts(parts.pairs, keys["refined"]))
    keys["pairs_export"] = PAIRS_EXPORT.key(*pairs_export_key_parts(ctx, keys["pairs"]))
    subset = reads(parts.train, world_size(ctx.trainer))
    keys["ref_logps"] = REF_LOGPS.key(*ref_logps_key_parts(model, keys["pairs"], parts.train, subset))
    keys["policy"] = POLICY.key(*policy_key_parts(ctx, model, keys["pairs"], parts.loss, parts.train))
    policy = replace(model, key=keys["policy"])
    keys["eval_trained"] = EVAL.key(*eval_key_parts(ctx, policy, parts.evaluator))
    return keys


def evaluate_step(
    ctx: RunContext,
    evaluator: Evaluator,
    model: ModelHandle,
    role: str,
    record: RunMetrics,
    graded: dict[str, pd.DataFrame],
) -> None:
    """Evaluate `model` (cached samples), add its metric rows (relative to the base rows for a trained model),
    curves, diagnostics and length histogram to `record`, and print its table."""
    evaluated = evaluation(ctx, model, evaluator)
    frame, diagnostics = evaluated.frame, evaluated.diagnostics
    graded[role] = frame
    # where the graded samples are: the tables pool them across seeds for intervals over problems
    where = {"split": evaluator.split, "path": str(evaluated.artifact.path)}
    record.evaluations[role] = where
    forced = forced_budget(ctx, model, evaluator, evaluated)
    if forced is not None:
        where["forced_path"] = str(forced.path)
        curve = forced_curve(read_forced(forced.path))
        record.forced_budget.extend({"role": role, **point} for point in curve)
    rows, curves = evaluator.summarize(frame, role=role, model=model.name)
    if role != "base":
        rows = with_relative_change(rows, record.role_rows("base"))
    record.rows += rows
    record.curves += curves
    record.diagnostics[role] = diagnostics
    record.length_histograms.append(length_histogram(frame, role, evaluator.b_max))
    print_evaluation(ctx.world, evaluator, model, role, record.rows, diagnostics)


def policy_card(cfg: DictConfig, world: str, base: ModelHandle, policy: ModelHandle, record: RunMetrics) -> str:
    """The trained policy's model card from the run's config and what its steps reported."""
    if "tldr" in cfg.steps:
        groups: tuple[str, ...] = ("tldr",)
    elif "rl" in cfg.steps:
        groups = ("rl", "reward")
    else:
        groups = ("selector", "refiner", "pairs", "loss", "train")
    method = {g: OmegaConf.to_container(cfg[g], resolve=True) for g in groups}
    if "rl" in cfg.steps:
        summary = record.rl
        data = {"split": cfg.rl.split, "prompts": summary["prompts"], "rollouts": summary["rollouts"]}
        training = {k: summary[k] for k in ("steps", "generated_tokens", "trained_tokens", "rollout_engine")}
    elif "tldr" in cfg.steps:
        summary = record.tldr
        data = {"system1_examples": summary["system1_examples"], "system2_examples": summary["system2_examples"]}
        training = {f"selected_{k}": v for k, v in summary["selected"].items()}
    else:
        construction = record.construction
        data = {k: construction.get(k) for k in ("problems", "pairs", "chosen_len_mean", "rejected_len_mean")}
        data.update(pairs_file=construction["pairs_path"], export=construction.get("export_path"))
        training = {k: v for k, v in record.training.items() if not isinstance(v, (dict, list))}
    source = cfg.model.get("path")
    choices = record.run.get("choices", {})
    return model_card(
        title=f"{policy.name} trained on {world}",
        base_model=str(source or f"{base.name} ({base.key})"),
        base_is_hub_id=bool(source) and not Path(str(source)).exists(),
        method=method,
        data=data,
        training=training,
        rows=record.rows,
        provenance=record.provenance,
        tags=run_tags(cfg, choices),
    )


def run_description(cfg: DictConfig) -> dict:
    """What this run was: its config-group choices, overrides and tags (for analysis and tables)."""
    from hydra.core.hydra_config import HydraConfig

    out: dict = {"tags": list(cfg.get("tags") or [])}
    if HydraConfig.initialized():
        runtime = HydraConfig.get()
        out["choices"] = {k: v for k, v in runtime.runtime.choices.items() if not k.startswith("hydra")}
        out["overrides"] = list(runtime.overrides.task)
    return out


def instantiate_loggers(cfg: DictConfig) -> list:
    """Lightning loggers from the `logger=` group (a dict of `_target_` nodes; empty for none)."""
    if not cfg.get("logger"):
        return []
    loggers = []
    for node in cfg.logger.values():
        if node is not None and "_target_" in node:
            own = {k: v for k, v in node.items() if k not in TSQ_WANDB_KEYS}  # tsq's settings, not the logger's
            loggers.append(instantiate(OmegaConf.create(own)))
    return loggers


def with_relative_change(rows: list[dict], base_rows: list[dict]) -> list[dict]:
    """Add (new - base) / base of every length metric against the base row of the same benchmark/level."""
    base = {(r["benchmark"], r["level"]): r for r in base_rows}
    out = []
    for r in rows:
        b = base.get((r["benchmark"], r["level"]))
        extra = {}
        if b is not None:
            for k in ("len_t", "len_a", "steps", "step_len"):
                extra[f"{k}_rel"] = relative_change(r[k], b[k])
            extra["acc_delta"] = r["acc"] - b["acc"]
        out.append({**r, **extra})
    return out
