"""Stage `ref_logps`: the summed log-probs of every pair's chosen and rejected completion under the frozen base
model, computed once per pair set and keyed on (pairs, base model, train.max_length, train.overlength), so no
reference model sits in memory while training and a sweep over losses computes them once."""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tsq.cache import Build, Stage
from tsq.models.base import ModelHandle
from tsq.progress import StageProgress
from tsq.stages.context import RunContext
from tsq.stages.pairs import Pairs
from tsq.training.logps import sequence_logps
from tsq.training.pairs_data import read_pairs, tokenize_pairs
from tsq.training.settings import TrainSettings

REF_LOGPS = Stage("ref_logps", 2)
PAIRS_PER_CALL = 64  # pairs scored per call of sequence_logps (each call sorts its 2 x 64 rows by length)
REF_LOGPS_FILE = "ref_logps.json"


def reads(settings: TrainSettings, processes: int) -> dict | None:
    """What decides which pairs a training of `train.max_steps` steps reads (None: whole epochs read them all)."""
    if settings.max_steps is None:
        return None
    keys = ("seed", "batch_size", "global_batch_size", "max_steps")
    return {**{k: getattr(settings, k) for k in keys}, "processes": processes}


def ref_logps_key_parts(
    model: ModelHandle, pairs_key: str, settings: TrainSettings, subset: dict | None = None
) -> tuple[dict, dict]:
    # rows_per_forward and logit_chunk_tokens decide how rows are padded and projected: float results in the last
    # bits, so they are part of what one exact artifact was made with
    own = {
        "max_length": settings.max_length,
        "overlength": settings.overlength,
        "rows_per_forward": settings.rows_per_forward,
        "logit_chunk_tokens": settings.logit_chunk_tokens,
    }
    if subset is not None:  # only the pairs such a training reads (`reads`)
        own["reads"] = subset
    return own, {"pairs": pairs_key, "model": model.key}


def reference_logps(
    ctx: RunContext,
    model: ModelHandle,
    pairs: Pairs,
    settings: TrainSettings,
    subset: dict | None = None,
    rows: Sequence[int] | None = None,
) -> dict[str, tuple[float, float]]:
    """Summed log-probs of (chosen, rejected) under the frozen base model, by the pair's row index in the pairs
    file (cached); with `rows`, of those rows only: the pairs a training of a fixed number of steps reads, which
    `subset` (`reads`) determines and names in the key."""
    pairs_path = pairs.path
    wanted = None if rows is None else set(rows)

    def build(job: Build) -> None:
        tokenizer = AutoTokenizer.from_pretrained(model.path, **model.load_kwargs())
        policy = AutoModelForCausalLM.from_pretrained(model.path, **model.load_kwargs()).eval()
        data = tokenize_pairs(tokenizer, read_pairs(pairs_path), settings.max_length, settings.overlength)
        if wanted is not None:
            data = [d for d in data if d["index"] in wanted]
        if not data:
            raise ValueError(f"{pairs_path}: no pair left to score after train.overlength={settings.overlength}")
        values = {}
        with torch.inference_mode(), StageProgress("ref_logps: scoring pairs", len(data), "pairs") as progress:
            for s in range(0, len(data), PAIRS_PER_CALL):
                chunk = data[s : s + PAIRS_PER_CALL]
                prompts = [d["prompt"] for d in chunk] * 2
                completions = [d["chosen"] for d in chunk] + [d["rejected"] for d in chunk]
                logps = sequence_logps(
                    policy,
                    prompts,
                    completions,
                    "bucket",
                    settings.rows_per_forward,
                    pad_id=tokenizer.pad_token_id,
                    chunk_tokens=settings.logit_chunk_tokens,
                )
                for j, d in enumerate(chunk):
                    values[d["index"]] = (float(logps[j]), float(logps[len(chunk) + j]))
                progress.update(len(chunk))
        (job.dir / REF_LOGPS_FILE).write_text(json.dumps({str(k): v for k, v in values.items()}))

    own, inputs = ref_logps_key_parts(model, pairs.key, settings, subset)
    artifact = ctx.store.cached(
        REF_LOGPS, own, inputs, build, doing="scoring pairs under the base model", description=inputs
    )
    return {k: tuple(v) for k, v in json.loads((artifact.path / REF_LOGPS_FILE).read_text()).items()}
