"""The run's trained policy as a self-contained Hugging Face model directory with a model card.

The policy artifact in the cache is content-addressed and immutable, and its evaluation comes after it, so
the card cannot live there. At the end of a run that trained a policy, `publish_policy` writes
`<run dir>/policy/`: the artifact's files hard-linked (copied where the file system cannot link; a hard
link costs no space, so the weights of a 7B model are not duplicated) and a `README.md` model card with the
base model, the method and its settings, the training data, what training did and the evaluation rows.
`AutoModelForCausalLM.from_pretrained("<run dir>/policy")` loads it as is; `huggingface-cli upload` pushes it.
Do not write into that folder in place: a hard-linked file is the cache's own copy (the cache would notice,
by its hashes, and rebuild the policy).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import yaml

from tsq.cache import META_FILE, atomic_write_text

CARD_FILE = "README.md"
ROW_COLUMNS = ("role", "benchmark", "level", "acc", "len_t", "len_a", "auc", "n_problems", "n_samples")


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A GitHub-markdown table of `rows` over `columns` (floats to 4 significant digits; missing or undefined cells,
    such as the Len-T of a row with no correct response, blank)."""

    def cell(v) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return ""
        return f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def model_card(
    *,
    title: str,
    base_model: str,
    base_is_hub_id: bool,
    method: dict[str, dict],
    data: dict,
    training: dict,
    rows: Sequence[dict],
    provenance: dict,
    tags: Sequence[str] = (),
) -> str:
    """The card's text: YAML metadata (the Hub's model-card fields), then sections in plain markdown.

    `method` maps each setting group (selector, refiner, loss, train, ...) to its resolved settings; `data`
    describes the training data; `training` is what training reported; `rows` are the metric rows."""
    meta: dict = {"library_name": "transformers", "pipeline_tag": "text-generation", "tags": ["tsq", *tags]}
    if base_is_hub_id:
        meta["base_model"] = base_model
    settings = "\n".join(f"- **{group}**: `{yaml.safe_dump(values, default_flow_style=True, width=10_000).strip()}`"
                         for group, values in method.items())  # fmt: skip
    git = provenance.get("git") or {}
    commit = f"{git.get('commit', 'unknown')}{' (with uncommitted changes)' if git.get('dirty') else ''}"
    versions = ", ".join(f"{k} {v}" for k, v in provenance.get("packages", {}).items() if v)
    return f"""---
{yaml.safe_dump(meta, sort_keys=False).strip()}
---

# {title}

A policy trained by tsq (Long2Short research: reasoning in fewer tokens) from `{base_model}`.
This folder is a standard Hugging Face model directory:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("<this folder>")
tokenizer = AutoTokenizer.from_pretrained("<this folder>")
```

## Method and settings

{settings}

## Training data

{markdown_table([data], list(data))}

## Training

{markdown_table([training], list(training))}

## Evaluation

Accuracy (`acc`, fraction of samples graded correct), mean response tokens (`len_t` over correct responses,
`len_a` over all) and the budget AUC, base model against this policy, on the same problems and seeds:

{markdown_table(rows, [c for c in ROW_COLUMNS if any(c in r for r in rows)])}

## Provenance

tsq commit {commit}; {versions}.
"""


def publish_policy(artifact_dir: Path, out_dir: Path, card: str) -> Path:
    """`out_dir`: the artifact's files hard-linked (or copied), plus the model card; returns the folder.
    A folder already there (a re-run into the same run dir) is replaced."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for src in sorted(p for p in Path(artifact_dir).rglob("*") if p.is_file() and p.name != META_FILE):
        dst = tmp / src.relative_to(artifact_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:  # another file system, or links not allowed
            shutil.copy2(src, dst)
    tmp.mkdir(parents=True, exist_ok=True)
    atomic_write_text(tmp / CARD_FILE, card)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(tmp, out_dir)
    return out_dir
