"""The pipeline behind `run.py`: every stage is built from its config group, then run in order.

Config objects are all instantiated (and so validated) before the first expensive stage, so a bad
value fails in seconds with the offending key named, and no computed artifact is lost to it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tsq.cache import ArtifactStore
from tsq.construct import construct
from tsq.evaluation.evaluate import Evaluator, format_table, write_metrics

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


STAGES = ("base_eval", "construct")


def run(cfg: DictConfig) -> dict:
    """Build the world and base model, then run `cfg.stages` in order; return what they produced."""
    quiet_libraries()
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
    evaluator.problems(world)  # fail on an empty or unknown split before any training
    if "construct" in cfg.stages:
        sampling.problems(world)

    handle = model_source.materialize(world, store)
    rows, curves, extra = [], [], {"diagnostics": {}}
    if "base_eval" in cfg.stages:
        frame, diagnostics = evaluator.samples(handle, world, make_sampler, store, sampler_fingerprint(cfg))
        base_rows, base_curves = evaluator.summarize(frame, stage="base", model=handle.name)
        rows += base_rows
        curves += base_curves
        extra["diagnostics"]["base"] = diagnostics
        print(
            f"\nbase model {handle.name} on {world.name}/{evaluator.split} ({evaluator.n_samples} samples per problem)"
        )
        print(format_table(base_rows))
        if diagnostics.get("shortcut_acc_by_level"):
            shortcut = ", ".join(f"L{k} {100 * v:.1f}%" for k, v in diagnostics["shortcut_acc_by_level"].items())
            print(f"shortcut-only accuracy by level: {shortcut}")
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
    path = write_metrics(output_dir, rows, curves, extra)
    print(f"metrics: {path}")
    return {"rows": rows, "curves": curves, **extra, "metrics_path": str(path)}


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
