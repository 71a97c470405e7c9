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


def run(cfg: DictConfig) -> dict:
    """Build the world, build or load the base model, evaluate it; return the metrics payload."""
    quiet_libraries()
    output_dir = Path(cfg.paths.output_dir)
    store = ArtifactStore(cfg.paths.cache_dir)

    world = instantiate(cfg.data, _convert_="all")
    model_source = instantiate(cfg.model, _convert_="all")
    evaluator: Evaluator = instantiate(cfg.eval, _convert_="all")
    make_sampler = instantiate(cfg.sampler)
    evaluator.problems(world)  # fail on an empty or unknown split before any training

    handle = model_source.materialize(world, store)
    frame, diagnostics = evaluator.samples(handle, world, make_sampler, store, sampler_fingerprint(cfg))
    rows, curves = evaluator.summarize(frame, stage="base", model=handle.name)
    path = write_metrics(output_dir, rows, curves, {"diagnostics": {"base": diagnostics}})

    print(f"\nbase model {handle.name} on {world.name}/{evaluator.split} ({evaluator.n_samples} samples per problem)")
    print(format_table(rows))
    if diagnostics.get("shortcut_acc_by_level"):
        shortcut = ", ".join(f"L{k} {100 * v:.1f}%" for k, v in diagnostics["shortcut_acc_by_level"].items())
        print(f"shortcut-only accuracy by level: {shortcut}")
    print(f"metrics: {path}")
    return {"rows": rows, "curves": curves, "diagnostics": diagnostics, "metrics_path": str(path)}
