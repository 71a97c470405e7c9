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

Memory: the vocabulary projection is the part that grows with vocabulary x length (at 152k words and
8k tokens one fp32 copy of the logits is 5 GB per row). Only completion positions are projected, in
chunks of `chunk_tokens` that are recomputed in the backward pass (`token_logps`), so the head's memory
is one chunk's [chunk_tokens, vocab] whatever the length; what still grows with length is the model
body's activations (`train.gradient_checkpointing` trades them for recomputation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.checkpoint import checkpoint

MODES = ("bucket", "packed", "padded")


def split_causal_lm(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(body, head) of a Hugging Face causal LM: the transformer that yields final hidden states, and the
    output projection to the vocabulary. Models that transform logits after the projection (soft-capping,
    scaling) are refused: scoring from hidden states would silently give other log-probs for them."""
    for attr in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
        value = getattr(model.config, attr, None)
        if value not in (None, 1, 1.0):
            raise ValueError(
                f"{type(model).__name__} sets config.{attr}={value}; tsq's chunked log-probs project hidden "
                "states with the output embedding alone and do not apply it"
            )
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embedding (not a causal LM head model)")
    return model.base_model, head


def _chunk_token_logps(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)


def token_logps(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, chunk_tokens: int) -> torch.Tensor:
    """[T] log p(target_t | hidden_t) for hidden [T, H], computed `chunk_tokens` positions at a time.

    At most one chunk's [chunk, vocab] fp32 logits exist at any moment, in the forward and, because each
    chunk is checkpointed (recomputed during backward instead of saved), in the backward too. A full
    `log_softmax` over [batch, length, vocab] would keep several such copies alive for the backward.
    """
    if chunk_tokens <= 0:
        raise ValueError(f"train.logit_chunk_tokens must be > 0, got {chunk_tokens}")
    parts = []
    for start in range(0, hidden.shape[0], chunk_tokens):
        h, t = hidden[start : start + chunk_tokens], targets[start : start + chunk_tokens]
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(_chunk_token_logps, head, h, t, use_reentrant=False))
        else:
            parts.append(_chunk_token_logps(head, h, t))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def _completion_logps(
    head: torch.nn.Module,
    hidden: torch.Tensor,
    ids: torch.Tensor,
    spans: Sequence[tuple[int, int, int]],
    chunk_tokens: int,
) -> list[torch.Tensor]:
    """Summed log-probs of the tokens in [start, end) of row `r` of `ids`, for each (r, start, end); only
    those positions are projected to the vocabulary (prompt and padding positions never are)."""
    rows = torch.cat([torch.full((e - s,), r, dtype=torch.long) for r, s, e in spans]).to(ids.device)
    cols = torch.cat([torch.arange(s, e) for _, s, e in spans]).to(ids.device)
    values = token_logps(head, hidden[rows, cols - 1], ids[rows, cols], chunk_tokens)
    return list(values.split([e - s for _, s, e in spans]))


def _forward_logps(
    body: torch.nn.Module,
    head: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    spans: Sequence[tuple[int, int, int]],
    chunk_tokens: int,
    recompute: bool,
) -> torch.Tensor:
    """Summed completion log-probs of the (row, start, end) spans of one forward pass of `body` on `inputs`;
    with `recompute`, none of its activations are kept: the backward runs the forward again."""
    names = list(inputs)

    def run(*tensors: torch.Tensor) -> torch.Tensor:
        kwargs = dict(zip(names, tensors, strict=True))
        hidden = body(**kwargs).last_hidden_state
        return torch.stack([v.sum() for v in _completion_logps(head, hidden, kwargs["input_ids"], spans, chunk_tokens)])

    if recompute and torch.is_grad_enabled():
        return checkpoint(run, *inputs.values(), use_reentrant=False)
    return run(*inputs.values())


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
    chunk_tokens: int = 1024,
    checkpoint_forwards: bool = False,
) -> torch.Tensor:
    """[N] summed log-probs of each completion given its prompt (differentiable).

    The model body runs once per forward; only completion positions are projected to the vocabulary,
    `chunk_tokens` at a time (`token_logps`), so no [rows, length, vocab] tensor is ever built.

    `checkpoint_forwards`: keep no activations of any forward; the backward recomputes one forward at
    a time (torch.utils.checkpoint around each forward of `rows_per_forward` rows). The loss needs only
    each row's summed log-prob, so the activation memory of a step becomes one forward's instead of the
    whole batch's, for one extra forward pass (the idea of GradCache, Gao et al. 2021, arXiv 2101.06983).
    """
    if mode not in MODES:
        raise ValueError(f"train.batching must be one of {MODES}, got {mode!r}")
    body, head = split_causal_lm(model)
    device = next(model.parameters()).device
    seqs = [list(p) + list(c) for p, c in zip(prompts, completions, strict=True)]
    starts = [len(p) for p in prompts]
    if any(s == 0 for s, c in zip(starts, completions, strict=True) if c):
        raise ValueError("every completion needs a prompt of at least one token (its first token is predicted from it)")
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
            offsets = [sum(len(seqs[j]) for j in pack[:k]) for k in range(len(pack))]
            spans = [(0, o + starts[i], o + len(seqs[i])) for o, i in zip(offsets, pack, strict=True)]
            inputs = {"input_ids": ids, "position_ids": pos, "attention_mask": block_causal_mask(pack, seqs, device)}
            values = _forward_logps(body, head, inputs, spans, chunk_tokens, checkpoint_forwards)
            for i, value in zip(pack, values, strict=True):
                out[i] = value
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
        spans = [(r, starts[i], len(seqs[i])) for r, i in enumerate(rows)]
        inputs = {"input_ids": ids, "attention_mask": mask}
        values = _forward_logps(body, head, inputs, spans, chunk_tokens, checkpoint_forwards)
        for i, value in zip(rows, values, strict=True):
            out[i] = value
    return torch.stack(out)  # type: ignore[arg-type]
