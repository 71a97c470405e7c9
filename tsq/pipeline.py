"""The pipeline behind `run.py`: every stage is built from its config group, then run in order.

Config objects are all instantiated (and so validated) before the first expensive stage, so a bad
value fails in seconds with the offending key named, and no computed artifact is lost to it.
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
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from tsq.cache import ArtifactStore, atomic_write_text
from tsq.construct import (
    PAIRS,
    REFINED,
    REFINED_FILE,
    PairSettings,
    construct,
    pairs_key_parts,
    read_jsonl,
    refined_key_parts,
)
from tsq.context import RunContext, SamplerChoice
from tsq.data.base import ChatTemplated
from tsq.evaluation.evaluate import STAGE as EVAL
from tsq.evaluation.evaluate import Evaluator, length_histogram, read_forced, write_metrics
from tsq.evaluation.forced import forced_curve
from tsq.evaluation.metrics import relative_change
from tsq.model_card import model_card, publish_policy
from tsq.models.base import ModelHandle, ModelSource
from tsq.refinement.base import Refiner
from tsq.reporting import (
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
from tsq.sampling.stage import SamplingStage
from tsq.selection import Selector
from tsq.tldr import TLDRSettings, train_tldr
from tsq.training.losses import PreferenceLoss
from tsq.training.preference import (
    POLICY,
    REF_LOGPS,
    TrainSettings,
    policy_key_parts,
    ref_logps_key_parts,
    train_policy,
    world_size,
)
from tsq.validate import check_group

log = logging.getLogger(__name__)


def quiet_libraries() -> None:
    """Keep the run log readable: no per-file weight-loading bars, no Lightning adverts."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


STAGES = ("base_eval", "construct", "train", "tldr")


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


def run(cfg: DictConfig) -> dict:
    """Build the world and base model, then run `cfg.stages` in order; return what they produced."""
    try:
        with exit_on_sigterm():
            return run_stages(cfg)
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
    sampling: SamplingStage
    selector: Selector
    refiner: Refiner
    pairs: PairSettings
    loss: PreferenceLoss
    train: TrainSettings
    tldr: TLDRSettings


@dataclass
class Outcome:
    """What the stages produced, in the order they ran; `report` is the metrics.json payload."""

    rows: list[dict] = field(default_factory=list)
    curves: list[dict] = field(default_factory=list)
    report: dict = field(default_factory=lambda: {"diagnostics": {}, "timings": {}})
    samples: dict[str, pd.DataFrame] = field(default_factory=dict)  # each evaluated stage's graded samples


class StageClock:
    """Times each stage (wall seconds, cache hits included) into the report and logs it."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        log.info("%s: started", name)
        yield
        self.timings[name] = time.perf_counter() - start
        log.info("%s: %.1f s", name, self.timings[name])


def build_parts(cfg: DictConfig) -> tuple[RunContext, Parts]:
    """The run context and every config object, validated; raises naming the key on a bad value."""
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ValueError(f"stages: unknown stage(s) {unknown}; known: {list(STAGES)}")
    if "train" in cfg.stages and "construct" not in cfg.stages:
        raise ValueError("stages: train needs construct before it (its pairs)")
    if "train" in cfg.stages and "tldr" in cfg.stages:
        raise ValueError("stages: train and tldr both train a policy; choose one")
    processes = world_size(OmegaConf.to_container(cfg.trainer, resolve=True))
    if "tldr" in cfg.stages and processes > 1:
        raise ValueError(
            f"stages: tldr trains in one process (its dev re-weighting samples the policy in memory), but trainer= "
            f"plans {processes} processes; use trainer=default"
        )
    if processes > 1 and multirun_without_cluster():
        raise ValueError(
            f"trainer= plans {processes} processes inside a -m sweep: Lightning's launcher would start the whole "
            "sweep again for each rank; sweep with launcher=slurm, or run each job on its own"
        )
    for group in (
        "data",
        "model",
        "eval",
        "sampler",
        "sampling",
        "selector",
        "refiner",
        "pairs",
        "loss",
        "train",
        "tldr",
    ):
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
    )
    parts.evaluator.problems(world)  # fail on an empty or unknown split before any training
    if "construct" in cfg.stages:
        parts.sampling.problems(world)
    ctx = RunContext(
        world=world,
        store=ArtifactStore(
            cfg.paths.cache_dir,
            verify=cfg.paths.get("verify", "hash"),
            accept_unmanifested=cfg.paths.get("accept_unmanifested", False),
        ),
        sampler=SamplerChoice(instantiate(cfg.sampler), OmegaConf.to_container(cfg.sampler, resolve=True)),
        trainer=OmegaConf.to_container(cfg.trainer, resolve=True),
        make_loggers=lambda: instantiate_loggers(cfg),
        output_dir=Path(cfg.paths.output_dir),
    )
    return ctx, parts


def base_model(ctx: RunContext, parts: Parts) -> tuple[RunContext, ModelHandle]:
    """The base model (built or loaded), and the context with prompts rendered for it where the world's
    prompts go through the model's chat template."""
    model = parts.model_source.materialize(ctx.world, ctx.store)
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


def run_stages(cfg: DictConfig) -> dict:
    quiet_libraries()
    ctx, parts = build_parts(cfg)
    rank = process_rank()
    # Ranks other than 0 only take part in the training: every artifact before it is a cache hit (rank 0
    # built it before training started, and a rank that finds one missing waits on its build lock), and
    # rank 0 alone saves, evaluates, writes metrics and logs to W&B.
    out = Outcome()
    out.report["run"] = run_description(cfg)
    # before training, so Lightning's WandbLogger joins this run
    wandb_run = start_wandb(cfg, out.report["run"].get("choices", {})) if rank == 0 else None
    stage = StageClock(out.report["timings"])
    with stage("model"):
        ctx, model = base_model(ctx, parts)
    if {"base_eval", "train", "tldr"} & set(cfg.stages):
        with stage("base_eval"):
            evaluate(ctx, parts.evaluator, model, "base", out)
    if "construct" in cfg.stages:
        with stage("construct"):
            built = construct(ctx, model, parts.sampling, parts.selector, parts.refiner, parts.pairs)
            out.report["construction"] = {**built.stats, "pairs_path": str(built.pairs_path)}
            if built.export is not None:
                out.report["construction"]["export_path"] = str(built.export.path)
            print_construction(parts.selector, parts.refiner, built)
    policy = None
    if "train" in cfg.stages:
        with stage("train"):
            if not built.stats["pairs"]:
                raise RuntimeError(
                    f"construction produced no preference pairs ({built.pairs_path}); nothing to train on"
                )
            policy = train_policy(ctx, model, built.pairs, parts.loss, parts.train)
        if rank != 0:
            log.info("rank %d: training done; rank 0 saves and evaluates the policy", rank)
            return {"rank": rank}
        # steps, pairs kept / dropped / truncated, weight tensors changed: what training really did
        out.report["training"] = json.loads((policy.path / "train_summary.json").read_text())
    if "tldr" in cfg.stages:
        with stage("train"):
            policy, out.report["tldr"] = train_tldr(ctx, parts.model_source, model, parts.sampling, parts.tldr)
            print_tldr(out.report["tldr"])
    if policy is not None:
        with stage("trained_eval"):
            evaluate(ctx, parts.evaluator, policy, "trained", out)
    ctx.sampler.release()
    out.report["artifacts"] = ctx.store.served  # every artifact this run used or built: stage, key, path
    out.report["provenance"] = provenance()
    if policy is not None:
        card = policy_card(cfg, ctx.world.name, model, policy, out)
        out.report["policy_path"] = str(publish_policy(policy.path, ctx.output_dir / "policy", card))
    atomic_write_text(ctx.output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    path = write_metrics(ctx.output_dir, out.rows, out.curves, out.report)
    log_payload(wandb_run, {"rows": out.rows, "curves": out.curves, **out.report})
    if wandb_run is not None:
        refined = read_jsonl(built.refined.path / REFINED_FILE) if "construct" in cfg.stages else []
        per_problem = cfg.logger.wandb.get("samples_per_problem")
        log_samples(wandb_run, out.samples, refined, ctx.world.step_delimiter, per_problem)
    print_run_end(out.report["timings"], path, out.report)
    return {"rows": out.rows, "curves": out.curves, **out.report, "metrics_path": str(path)}


def planned_keys(ctx: RunContext, parts: Parts) -> dict[str, str]:
    """The cache key of every artifact of the preference pipeline (base_eval, construct, train), computed
    from the settings alone, as the stages compute them (no model is built or loaded)."""
    model_key = parts.model_source.key(ctx.world)
    model = ModelHandle(name=parts.model_source.name, path=Path("."), key=model_key)
    keys = {"base_model": model_key, "eval_base": parts.evaluator.key(ctx, model)}
    keys["samples"] = parts.sampling.key(ctx, model)
    keys["refined"] = REFINED.key(*refined_key_parts(parts.selector, parts.refiner, keys["samples"]))
    keys["pairs"] = PAIRS.key(*pairs_key_parts(parts.pairs, keys["refined"]))
    keys["ref_logps"] = REF_LOGPS.key(*ref_logps_key_parts(model, keys["pairs"], parts.train))
    keys["policy"] = POLICY.key(*policy_key_parts(ctx, model, keys["pairs"], parts.loss, parts.train))
    policy = replace(model, key=keys["policy"])
    keys["eval_trained"] = parts.evaluator.key(ctx, policy)
    return keys


def evaluate(ctx: RunContext, evaluator: Evaluator, model: ModelHandle, stage: str, out: Outcome) -> None:
    """Evaluate `model` (cached samples), add its metric rows (relative to the base rows for a trained
    model), curves, diagnostics and length histogram to `out`, and print its table."""
    frame, diagnostics, key = evaluator.samples(ctx, model)
    out.samples[stage] = frame
    # where the graded samples are: the tables pool them across seeds for intervals over problems
    where = {"split": evaluator.split, "path": str(ctx.store.path(EVAL.name, key))}
    out.report.setdefault("evaluations", {})[stage] = where
    forced = evaluator.forced(ctx, model, frame, key)
    if forced is not None:
        where["forced_path"] = str(forced.path)
        curve = forced_curve(read_forced(forced.path))
        out.report.setdefault("forced_budget", []).extend({"stage": stage, **point} for point in curve)
    rows, curves = evaluator.summarize(frame, stage=stage, model=model.name)
    if stage != "base":
        rows = with_relative_change(rows, [r for r in out.rows if r["stage"] == "base"])
    out.rows += rows
    out.curves += curves
    out.report["diagnostics"][stage] = diagnostics
    out.report.setdefault("length_histograms", []).append(length_histogram(frame, stage, evaluator.b_max))
    print_evaluation(ctx.world, evaluator, model, stage, out.rows, diagnostics)


def policy_card(cfg: DictConfig, world: str, base: ModelHandle, policy: ModelHandle, out: Outcome) -> str:
    """The trained policy's model card from the run's config and what its stages reported."""
    groups = ("tldr",) if "tldr" in cfg.stages else ("selector", "refiner", "pairs", "loss", "train")
    method = {g: OmegaConf.to_container(cfg[g], resolve=True) for g in groups}
    if "tldr" in cfg.stages:
        summary = out.report["tldr"]
        data = {"system1_examples": summary["system1_examples"], "system2_examples": summary["system2_examples"]}
        training = {f"selected_{k}": v for k, v in summary["selected"].items()}
    else:
        construction = out.report["construction"]
        data = {k: construction.get(k) for k in ("problems", "pairs", "chosen_len_mean", "rejected_len_mean")}
        data.update(pairs_file=construction["pairs_path"], export=construction.get("export_path"))
        training = {k: v for k, v in out.report["training"].items() if not isinstance(v, (dict, list))}
    source = cfg.model.get("path")
    choices = out.report["run"].get("choices", {})
    return model_card(
        title=f"{policy.name} trained on {world}",
        base_model=str(source or f"{base.name} ({base.key})"),
        base_is_hub_id=bool(source) and not Path(str(source)).exists(),
        method=method,
        data=data,
        training=training,
        rows=out.rows,
        provenance=out.report["provenance"],
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
