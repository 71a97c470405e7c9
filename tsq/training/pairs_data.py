"""Preference pairs as training data: the pairs file's rows, checked, and their token ids under tsq's one length
convention."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("prompt", "chosen", "rejected")
PAIRS_FILE = "pairs.jsonl"


def read_pairs(path: str | Path) -> list[dict]:
    """Rows of a pairs JSONL file; a missing field or an empty chosen/rejected names file and row."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, row {n}: not JSON ({err})") from err
            for key in REQUIRED_FIELDS:
                if key not in row:
                    raise ValueError(f"{path}, row {n}: missing field {key!r}")
                if not isinstance(row[key], str) or (key != "prompt" and not row[key].strip()):
                    raise ValueError(f"{path}, row {n}: field {key!r} is empty or not text")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no preference pairs")
    return rows


OVERLENGTH = ("error", "drop", "truncate")


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase, rows: list[dict], max_length: int, overlength: str = "error"
) -> list[dict]:
    """Token ids per pair; completions end with EOS, and `chosen_len` / `rejected_len` count the tokens the loss
    scores, that EOS included: tsq's one length convention (`tsq.sampling.base.completion_length`), so a length
    normalisation (SFT's mean NLL, SimPO) divides a sum over n tokens by n, and DPO-L's length ratio is over
    the same counts as the metrics and the pairs file.

    A pair is over length when its prompt plus its longer completion (EOS included) exceeds `max_length`.
    `overlength` says what happens then: `error` (default) refuses the whole set naming the count,
    `drop` leaves such pairs out (`pairs_dropped` in the training summary), `truncate` keeps the start of each
    completion (losing its EOS; lengths are then the kept tokens).
    """
    if overlength not in OVERLENGTH:
        raise ValueError(f"train.overlength must be one of {OVERLENGTH}, got {overlength!r}")
    eos = tokenizer.eos_token_id
    enc = {k: tokenizer([r[k] for r in rows], add_special_tokens=False)["input_ids"] for k in REQUIRED_FIELDS}
    out, over = [], []
    for i in range(len(rows)):
        p, c, r = enc["prompt"][i], enc["chosen"][i] + [eos], enc["rejected"][i] + [eos]
        size = len(p) + max(len(c), len(r))
        if size > max_length:
            over.append(size)
            if overlength != "truncate":
                continue
            room = max_length - len(p)
            if room <= 0:
                raise ValueError(
                    f"pair {i}: its prompt alone has {len(p)} tokens, at least train.max_length={max_length}; "
                    "truncating completions cannot make it fit"
                )
            c, r = c[:room], r[:room]
        out.append(
            {
                "index": i,
                "prompt": p,
                "chosen": c,
                "rejected": r,
                "chosen_len": len(c),
                "rejected_len": len(r),
                "truncated": size > max_length,
            }
        )
    if over and overlength == "error":
        raise ValueError(
            f"{len(over)} of {len(rows)} pairs are longer than train.max_length={max_length} tokens (prompt + longer "
            f"completion with EOS; the longest has {max(over)}): raise train.max_length, or choose "
            "train.overlength=drop (leave them out) or train.overlength=truncate (cut completions)"
        )
    if over:
        log.warning(
            "train.overlength=%s: %d of %d pairs exceed train.max_length=%d tokens (longest %d) and were %s",
            overlength,
            len(over),
            len(rows),
            max_length,
            max(over),
            "dropped" if overlength == "drop" else "truncated",
        )
    return out


def collate(examples: list[dict]) -> dict:
    return {
        "prompt": [e["prompt"] for e in examples],
        "chosen": [e["chosen"] for e in examples],
        "rejected": [e["rejected"] for e in examples],
        "ref_chosen": torch.tensor([e["ref_chosen"] for e in examples]),
        "ref_rejected": torch.tensor([e["ref_rejected"] for e in examples]),
        "chosen_len": torch.tensor([e["chosen_len"] for e in examples]),
        "rejected_len": torch.tensor([e["rejected_len"] for e in examples]),
    }
