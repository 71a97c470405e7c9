"""Summed completion log-probs of many (prompt, completion) sequences, without padding waste.

TRL stacks chosen and rejected rows into one batch padded to the longest, so a 30-token chosen pays
for a 300-token rejected. Here the 2B sequences of a batch are scored as independent rows:

* `bucket` (default): rows sorted by length and cut into forward passes of `rows_per_forward`, each
  padded only to its own longest row. Works with every attention kernel and keeps attention cost
  per sequence, which is what a CPU or SDPA run needs.
* `packed`: rows concatenated into single sequences of at most `pack_tokens` tokens, with position ids
  restarting per row and a block-diagonal causal mask. No padding, but with SDPA the attention runs
  over the whole [T x T] pack; it pays off only with kernels that skip masked blocks.
* `padded`: TRL's layout (all rows padded to the batch's longest), kept for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

MODES = ("bucket", "packed", "padded")


def _row_logps(
    logits: torch.Tensor, ids: torch.Tensor, starts: Sequence[int], ends: Sequence[int]
) -> list[torch.Tensor]:
    """Sum of log p(token) over positions [start, end) of each row (row i of logits/ids)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logp = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return [token_logp[i, s - 1 : e - 1].sum() for i, (s, e) in enumerate(zip(starts, ends, strict=True))]


def block_causal_mask(pack: list[int], seqs: Sequence[Sequence[int]], device) -> torch.Tensor:
    """[1, 1, T, T] boolean mask: causal inside each packed sequence, nothing across them.

    Position ids alone are not enough: with SDPA, transformers 5.23 attended across the packed
    sequences (log-probs off by hundreds of nats, caught by benchmarks/bench_batching.py).
    """
    segment = torch.tensor([k for k, i in enumerate(pack) for _ in seqs[i]], device=device)
    size = segment.numel()
    causal = torch.ones(size, size, dtype=torch.bool, device=device).tril()
    return ((segment[:, None] == segment[None, :]) & causal)[None, None]


def sequence_logps(
    model,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    mode: str = "bucket",
    rows_per_forward: int = 16,
    pack_tokens: int = 2048,
    pad_id: int = 0,
) -> torch.Tensor:
    """[N] summed log-probs of each completion given its prompt (differentiable)."""
    if mode not in MODES:
        raise ValueError(f"train.batching must be one of {MODES}, got {mode!r}")
    device = next(model.parameters()).device
    seqs = [list(p) + list(c) for p, c in zip(prompts, completions, strict=True)]
    starts = [len(p) for p in prompts]
    out: list[torch.Tensor | None] = [None] * len(seqs)
    if mode == "packed":
        packs, current, size = [], [], 0
        for i in sorted(range(len(seqs)), key=lambda i: len(seqs[i])):
            if current and size + len(seqs[i]) > pack_tokens:
                packs.append(current)
                current, size = [], 0
            current.append(i)
            size += len(seqs[i])
        packs += [current] if current else []
        for pack in packs:
            ids = torch.tensor([[t for i in pack for t in seqs[i]]], device=device)
            pos = torch.tensor([[j for i in pack for j in range(len(seqs[i]))]], device=device)
            logits = model(input_ids=ids, position_ids=pos, attention_mask=block_causal_mask(pack, seqs, device)).logits
            logp = torch.log_softmax(logits[0, :-1].float(), dim=-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
            offset = 0
            for i in pack:
                out[i] = logp[offset + starts[i] - 1 : offset + len(seqs[i]) - 1].sum()
                offset += len(seqs[i])
        return torch.stack(out)  # type: ignore[arg-type]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i])) if mode == "bucket" else list(range(len(seqs)))
    chunk = rows_per_forward if mode == "bucket" else len(seqs)
    for c in range(0, len(order), chunk):
        rows = order[c : c + chunk]
        width = max(len(seqs[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        for r, i in enumerate(rows):
            ids[r, : len(seqs[i])] = torch.tensor(seqs[i])
            mask[r, : len(seqs[i])] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits
        for i, value in zip(
            rows, _row_logps(logits, ids, [starts[i] for i in rows], [len(seqs[i]) for i in rows]), strict=True
        ):
            out[i] = value
    return torch.stack(out)  # type: ignore[arg-type]
