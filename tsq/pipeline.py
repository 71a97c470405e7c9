"""The pipeline behind `run.py`: every stage is built from its config group, then run in order.

Config objects are all instantiated (and so validated) before the first expensive stage, so a bad
value fails in seconds with the offending key named, and no computed artifact is lost to it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tsq.cache import ArtifactStore
from tsq.construct import construct
from tsq.evaluation.evaluate import Evaluator, format_table, length_histogram, write_metrics
from tsq.evaluation.metrics import relative_change
from tsq.reporting import log_payload, start_wandb
from tsq.tldr import train_tldr
from tsq.training.preference import train_policy

log = logging.getLogger(__name__)


def sampler_fingerprint(cfg: DictConfig) -> dict:
    """The sampler settings that change what is sampled (not how progress is shown)."""
    container = OmegaConf.to_container(cfg.sampler, resolve=True)
    return {k: v for k, v in container.items() if k not in ("_partial_", "progress")}


def quiet_libraries() -> None:
    """Keep the run log readable: no per-file weight-loading bars, no Lightning adverts."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


STAGES = ("base_eval", "construct", "train", "tldr")


def run(cfg: DictConfig) -> dict:
    """Build the world and base model, then run `cfg.stages` in order; return what they produced."""
    try:
        return run_stages(cfg)
    finally:
        # Close a W&B run even on failure, so its files are complete and a multirun's next job starts clean.
        if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
            sys.modules["wandb"].finish()


def run_stages(cfg: DictConfig) -> dict:
    quiet_libraries()
    wandb_run = None
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise ValueError(f"stages: unknown stage(s) {unknown}; known: {list(STAGES)}")
    output_dir = Path(cfg.paths.output_dir)
    store = ArtifactStore(cfg.paths.cache_dir)

    # Every config object first: bad values fail here, before any compute.
    world = instantiate(cfg.data, _convert_="all")
    model_source = instantiate(cfg.model, _convert_="all")
    evaluator: Evaluator = instantiate(cfg.eval, _convert_="all")
    make_sampler = instantiate(cfg.sampler)
    sampling = instantiate(cfg.sampling, _convert_="all")
    selector = instantiate(cfg.selector, _convert_="all")
    refiner = instantiate(cfg.refiner, _convert_="all")
    pair_settings = instantiate(cfg.pairs, _convert_="all")
    loss = instantiate(cfg.loss, _convert_="all")
    train_settings = instantiate(cfg.train, _convert_="all")
    tldr_settings = instantiate(cfg.tldr, _convert_="all")
    if "train" in cfg.stages and "construct" not in cfg.stages:
        raise ValueError("stages: train needs construct before it (its pairs)")
    if "train" in cfg.stages and "tldr" in cfg.stages:
        raise ValueError("stages: train and tldr both train a policy; choose one")
    evaluator.problems(world)  # fail on an empty or unknown split before any training
    if "construct" in cfg.stages:
        sampling.problems(world)

    wandb_run = start_wandb(cfg)  # before training, so Lightning's WandbLogger joins this run
    timings: dict[str, float] = {}  # wall seconds per stage (cache hits included), for benchmarks/bench_pipeline.py
    clock = time.perf_counter()
    handle = model_source.materialize(world, store)
    if hasattr(world, "bind"):  # prompts through this model's chat template (tsq/data/benchmarks.py)
        world = world.bind(handle.path)
    timings["model"], clock = time.perf_counter() - clock, time.perf_counter()
    rows, curves, extra = [], [], {"diagnostics": {}, "timings": timings}
    if "base_eval" in cfg.stages or "train" in cfg.stages or "tldr" in cfg.stages:
        frame, diagnostics = evaluator.samples(handle, world, make_sampler, store, sampler_fingerprint(cfg))
        base_rows, base_curves = evaluator.summarize(frame, stage="base", model=handle.name)
        rows += base_rows
        curves += base_curves
        extra["diagnostics"]["base"] = diagnostics
        extra["length_histograms"] = [length_histogram(frame, "base", evaluator.b_max)]
        print(
            f"\nbase model {handle.name} on {world.name}/{evaluator.split} ({evaluator.n_samples} samples per problem)"
        )
        print(format_table(base_rows))
        if diagnostics.get("shortcut_acc_by_level"):
            shortcut = ", ".join(f"L{k} {100 * v:.1f}%" for k, v in diagnostics["shortcut_acc_by_level"].items())
            print(f"shortcut-only accuracy by level: {shortcut}")
        timings["base_eval"], clock = time.perf_counter() - clock, time.perf_counter()
    if "construct" in cfg.stages:
        result = construct(
            world,
            handle,
            make_sampler,
            store,
            sampler_fingerprint(cfg),
            sampling,
            selector,
            refiner,
            pair_settings,
            OmegaConf.to_container(cfg.selector, resolve=True),
            OmegaConf.to_container(cfg.refiner, resolve=True),
        )
        extra["construction"] = {**result.stats, "pairs_path": str(result.pairs_path)}
        print(f"\npreference data ({type(selector).__name__}, refiner={refiner.name}): {result.pairs_path}")
        print(format_construction(result.stats))
        timings["construct"], clock = time.perf_counter() - clock, time.perf_counter()
    policy, method = None, None
    if "train" in cfg.stages:
        if not result.stats["pairs"]:
            raise RuntimeError(f"construction produced no preference pairs ({result.pairs_path}); nothing to train on")
        policy = train_policy(
            handle,
            result.pairs_path,
            result.pairs_key,
            loss,
            OmegaConf.to_container(cfg.loss, resolve=True),
            train_settings,
            OmegaConf.to_container(cfg.trainer, resolve=True),
            store,
            make_loggers=lambda: instantiate_loggers(cfg),
        )
        # steps, pairs kept / dropped / truncated, weight tensors changed: what training really did
        extra["training"] = json.loads((policy.path / "train_summary.json").read_text())
        method = loss.name
    if "tldr" in cfg.stages:
        policy, extra["tldr"] = train_tldr(
            tldr_settings,
            world,
            model_source,
            handle,
            make_sampler,
            store,
            sampler_fingerprint(cfg),
            sampling,
            OmegaConf.to_container(cfg.trainer, resolve=True),
            output_dir,
        )
        method = f"{tldr_settings.name} ({tldr_settings.rule})"
        selected = extra["tldr"]["selected"]
        kept = f"step {selected['step']}: dev tokens {selected['dev_tokens']:.1f}, acc {selected['dev_acc']:.3f}"
        print(f"\nTL;DR kept {kept}")
    if policy is not None:
        timings["train"], clock = time.perf_counter() - clock, time.perf_counter()
        frame, diagnostics = evaluator.samples(policy, world, make_sampler, store, sampler_fingerprint(cfg))
        trained_rows, trained_curves = evaluator.summarize(frame, stage="trained", model=policy.name)
        trained_rows = with_relative_change(trained_rows, [r for r in rows if r["stage"] == "base"])
        rows += trained_rows
        curves += trained_curves
        extra["diagnostics"]["trained"] = diagnostics
        extra["length_histograms"].append(length_histogram(frame, "trained", evaluator.b_max))
        print(f"\nbase versus trained ({method}) on {world.name}/{evaluator.split}")
        print(format_table([r for r in rows if r["level"] == "all"]))
        timings["trained_eval"] = time.perf_counter() - clock
    print("stage wall times: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    extra["run"] = run_description(cfg)
    path = write_metrics(output_dir, rows, curves, extra)
    log_payload(wandb_run, {"rows": rows, "curves": curves, **extra})
    print(f"metrics: {path}")
    return {"rows": rows, "curves": curves, **extra, "metrics_path": str(path)}


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
    return [instantiate(node) for node in cfg.logger.values() if node is not None and "_target_" in node]


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


def format_construction(stats: dict) -> str:
    """The construction statistics as short aligned lines."""
    keys = [
        "problems",
        "sample_acc",
        "pass_rate_histogram",
        "dropped_all_wrong",
        "dropped_all_right",
        "dropped_no_longer_negative",
        "positives",
        "positives_in_pairs",
        "pairs",
        "chosen_original_len_mean",
        "chosen_len_mean",
        "rejected_len_mean",
        "refine_acceptance",
        "refine_accepted_kl_mean",
        "steps_before",
        "steps_after",
        "step_len_before",
        "step_len_after",
    ]

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return "\n".join(f"  {k:<28} {fmt(stats[k])}" for k in keys if k in stats)
