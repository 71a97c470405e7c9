"""`refiner=`: intra-step refinement of chosen traces (TokenSqueeze, arXiv 2511.13223, Sec. 3.2 and App. B).

For every reasoning step s_i of a trace, K candidates are sampled from the model itself, conditioned
on the original prefix (prompt, s_<i) and stopped at the step delimiter. A candidate's cost is the
KL between the model's next-token distributions over the *original* continuation t (the next <= L
tokens after s_i), teacher-forced once after s_i and once after the candidate:

    KL = reduce_j  KL( P(. | p, s_<=i, t_<j) || P(. | p, s_<i, s', t_<j) ),   reduce = sum or mean.

`kl` keeps the shortest candidate under epsilon, else the original step (whose KL is 0); `rewrite`
keeps the shortest candidate with no check (the unconstrained baseline).
Only candidates strictly shorter than the original step can win, so only those are scored. Every
step is refined against the original prefix (the paper's notation), so steps are independent work.

Scoring cost: one forward pass over each whole original trace gives the original distributions of
every step *and* the KV cache of every step's prefix (by cropping); each step then runs its candidates
as one batch on top of that cache. `score_loop` is the straightforward per-candidate version, kept
for the benchmark and as a reference in tests.

The rule needs less than every candidate's KL: the answer is the shortest candidate under epsilon, so
with `score_batch` set candidates are scored shortest first, `score_batch` at a time, and a step stops
at the first batch holding one under epsilon; no longer candidate can change the answer (ties in length
go to the earlier sampled candidate either way). With `score_positions` set, the continuation is fed
`score_positions` tokens per forward pass on the growing cache, and a candidate is dropped as soon as its KL
so far reaches epsilon (with `mean`, epsilon x the window's length): per-position KLs are >= 0, so its final
KL could not be under epsilon either. Both keep the rule's answer and the chosen candidate's KL exact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch
from transformers import DynamicCache, PreTrainedTokenizerBase

from tsq.progress import StageProgress
from tsq.refinement.base import ModelRefiner, RefinedTrace, ScoringSampler
from tsq.sampling.base import SamplingParams
from tsq.sampling.executors import shard_seed
from tsq.training.logps import split_causal_lm

log = logging.getLogger(__name__)


def token_kl(logp_ref: torch.Tensor, logp_other: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """KL(ref || other) per position over the vocabulary (last dim), reduced over positions (dim -2).

    Inputs are log-probabilities of shape [..., T, V]; the result has shape [...] (`sum`, `mean`) or
    [..., T] (`none`).
    """
    per_position = (logp_ref.exp() * (logp_ref - logp_other)).sum(-1)
    return reduce_positions(per_position, reduction)


def reduce_positions(per_position: torch.Tensor, reduction: str) -> torch.Tensor:
    """A sequence KL from per-position KLs [..., T]: their sum or mean (`none` keeps them)."""
    if reduction == "sum":
        return per_position.sum(-1)
    if reduction == "mean":
        return per_position.mean(-1)
    if reduction == "none":
        return per_position
    raise ValueError(f"refiner.reduction must be 'sum' or 'mean', got {reduction!r}")


def chunked_kl(
    head: torch.nn.Module, ref_hidden: torch.Tensor, cand_hidden: torch.Tensor, reduction: str, chunk_tokens: int
) -> torch.Tensor:
    """`token_kl` of K candidates against one reference from final hidden states ([T, H] and [K, T, H]),
    projecting at most `chunk_tokens` (candidate, position) rows to the vocabulary at a time: the [K, T,
    vocab] distributions are never built (K 64, T 512 and a 152k vocabulary would be 20 GB in fp32)."""
    k, length = cand_hidden.shape[:2]
    step = max(1, chunk_tokens // (k + 1))
    per_position = []
    for j in range(0, length, step):
        logp_ref = head(ref_hidden[j : j + step]).float().log_softmax(-1)
        logp_cand = head(cand_hidden[:, j : j + step]).float().log_softmax(-1)
        per_position.append(token_kl(logp_ref.expand_as(logp_cand), logp_cand, "none"))
    return reduce_positions(torch.cat(per_position, dim=-1), reduction)


def step_spans(token_texts: list[str], delimiter: str, open_at: int | None = None, close_at: int | None = None):
    """Token spans [start, end) of the reasoning steps of one response, from each token's text.

    A step ends at the first token after which its text ends with `delimiter` and holds more than
    whitespace: a BPE model writes "\n\n" as one token, as two "\n" tokens or fused into "\n\n\n",
    and all of these end a step. Only tokens in [open_at + 1, close_at) count (the thinking part);
    an unterminated tail is not a step.
    """
    start = open_at + 1 if open_at is not None else 0
    end = close_at if close_at is not None else len(token_texts)
    spans, a, text = [], start, ""
    for pos in range(start, end):
        text += token_texts[pos]
        if text.endswith(delimiter) and text[: -len(delimiter)].strip():
            spans.append((a, pos + 1))
            a, text = pos + 1, ""
    return spans


def think_bounds(response_ids: list[int], open_id: int | None, close_id: int | None) -> tuple[int | None, int | None]:
    """Positions of the think-open token and of the first think-close token after it (None when absent)."""
    open_at = response_ids.index(open_id) if open_id is not None and open_id in response_ids else None
    start = 0 if open_at is None else open_at + 1
    close_at = (
        response_ids.index(close_id, start) if close_id is not None and close_id in response_ids[start:] else None
    )
    return open_at, close_at


# settings that cut scoring work and keep the rule's result (module docstring); unset, they are not in the key
EXACT_SHORTCUTS = ("score_batch", "score_positions")
# settings that did not exist when this world's protocol artifacts were built: unset, they are not in the key (the
# shortcuts; `shard_traces`, whose unset value, one shard with the refiner's own seed, refines as before)
OPTIONAL_IN_KEY = (*EXACT_SHORTCUTS, "shard_traces")


@dataclass
class StepRefiner(ModelRefiner, part="refiner/kl"):
    """`refiner=kl` (accept="kl": the shortest candidate under epsilon) or `refiner=rewrite`
    (accept="shortest": the shortest candidate, no check)."""

    accept: str = "kl"
    k: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    epsilon: float = 0.005
    window: int = 512
    reduction: str = "sum"
    max_step_tokens: int = 48
    seed: int = 0
    name: str = "kl"
    # (candidate, position) rows projected to the vocabulary at once while scoring KL
    score_chunk_tokens: int = 2048
    # candidates scored at once, shortest first, stopping at the first batch with one under epsilon; None
    # scores every candidate of a step in one batch (the same choice, more work; see the module docstring)
    score_batch: int | None = None
    # continuation tokens fed per forward pass while scoring, a candidate dropped once its KL so far reaches
    # epsilon; None feeds the whole window at once and computes every candidate's full KL
    score_positions: int | None = None
    # chosen traces per shard of the `refined` stage, each with a seed of its own (`for_shard`); None: one shard
    shard_traces: int | None = None

    def __post_init__(self) -> None:
        if self.accept not in ("kl", "shortest"):
            raise ValueError(f"refiner.accept must be kl or shortest, got {self.accept!r} (refiner=none keeps traces)")
        if self.reduction not in ("sum", "mean"):
            raise ValueError(f"refiner.reduction must be 'sum' or 'mean', got {self.reduction!r}")
        for key in ("k", "window", "max_step_tokens", "score_chunk_tokens"):
            if getattr(self, key) <= 0:
                raise ValueError(f"refiner.{key} must be > 0, got {getattr(self, key)}")
        if self.epsilon < 0:
            raise ValueError(f"refiner.epsilon must be >= 0, got {self.epsilon}")
        for key in OPTIONAL_IN_KEY:
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise ValueError(f"refiner.{key} must be > 0 or null, got {getattr(self, key)}")
        self.params = SamplingParams.configured(
            "refiner",
            {"n": "k"},
            n=self.k,
            max_new_tokens=self.max_step_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
        )

    def key_material(self) -> dict:
        # unset, the shortcuts score as every refined artifact before they existed was scored: left out of the
        # key there, so those artifacts stay valid; a set value enters it (its KLs may differ in the last bits)
        material = super().key_material()
        for key in OPTIONAL_IN_KEY:
            if material[key] is None:
                del material[key]
        return material

    def for_shard(self, index: int) -> StepRefiner:
        """This refiner with shard `index`'s seed (candidates are the only random draw)."""
        return self if index == 0 else replace(self, seed=shard_seed(self.seed, index))

    # ------------------------------------------------------------------ public
    def refine(
        self, sampler: ScoringSampler, prompts: list[str], responses: list[str], step_delimiter: str
    ) -> list[RefinedTrace]:
        """Refine each (prompt, response); the sampler's model also scores KL."""
        tok = sampler.tokenizer
        prompt_ids = tok(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
        response_ids = tok(list(responses), add_special_tokens=False)["input_ids"] if responses else []
        spans = [trace_step_spans(tok, r, step_delimiter) for r in response_ids]
        chosen: list[list[tuple[int, int, list[int], float]]] = [[] for _ in responses]
        scored, scored_candidates, forwarded = [0] * len(responses), 0, 0
        steps = sum(map(len, spans))
        log.info("refiner=%s: sampling %d candidates for each of %d steps in one batch", self.name, self.k, steps)
        candidates, counts = self.sample_candidates(sampler, prompt_ids, response_ids, spans, step_delimiter)
        warn_cut(self.name, "candidates", counts, self.max_step_tokens)
        with StageProgress(f"refiner={self.name}: choosing candidates", len(responses), "traces") as progress:
            for t, (p, r) in enumerate(zip(prompt_ids, response_ids, strict=True)):
                work = [(a, b, c) for (a, b), c in zip(spans[t], candidates[t], strict=True) if c]
                scored[t] = len(work)
                progress.update(1)
                if not work:
                    continue
                if self.accept == "shortest":
                    chosen[t] = [(a, b, min(c, key=len), float("nan")) for a, b, c in work]
                    continue
                scorer = TraceScorer.of(self, sampler.model, p, r)
                choices, n_scored = self.choose(scorer, work)
                scored_candidates += n_scored
                forwarded += scorer.forwarded_tokens
                for (a, b, cands), choice in zip(work, choices, strict=True):
                    if choice is not None:
                        chosen[t].append((a, b, cands[choice[0]], choice[1]))
        if self.accept == "kl":
            log.info(
                "refiner=%s: scored %d of %d candidates shorter than their step, %d window tokens forwarded "
                "(refiner.score_batch=%s, refiner.score_positions=%s)",
                self.name,
                scored_candidates,
                sum(len(c) for trace in candidates for c in trace),
                forwarded,
                self.score_batch,
                self.score_positions,
            )
        return [
            assemble_trace(tok, r, spans[t], chosen[t], scored[t], step_delimiter, *counts[t])
            for t, r in enumerate(response_ids)
        ]

    # ------------------------------------------------------------------ stages
    def sample_candidates(
        self, sampler, prompt_ids, response_ids, spans, delimiter
    ) -> tuple[list[list[list[list[int]]]], list[tuple[int, int]]]:
        """For each trace and step: distinct sampled steps strictly shorter than the original; and per
        trace, (candidates sampled, candidates that reached max_step_tokens without ending the step)."""
        prefixes = [p + r[:a] for p, r, sp in zip(prompt_ids, response_ids, spans, strict=True) for a, _ in sp]
        completions = sampler.generate_ids(prefixes, self.params, stop=[delimiter])
        flat = iter(completions)
        out, counts = [], []
        for sp in spans:
            per_step, sampled, cut = [], 0, 0
            for a, b in sp:
                seen, keep = set(), []
                for c in next(flat):
                    ids = tuple(c.token_ids)
                    sampled += 1
                    cut += c.finish_reason == "length"
                    if c.finish_reason == "stop" and len(ids) < b - a and ids not in seen:
                        seen.add(ids)
                        keep.append(list(ids))
                per_step.append(keep)
            out.append(per_step)
            counts.append((sampled, cut))
        return out, counts

    @property
    def stop_at(self) -> float | None:
        """The KL at which scoring may drop a candidate (with `score_positions` set)."""
        return self.epsilon if self.score_positions is not None else None

    def choose(self, scorer: TraceScorer, work) -> tuple[list[tuple[int, float] | None], int]:
        """For each (start, end, candidates) step of the scorer's trace: (index, KL) of the shortest candidate
        with KL under epsilon (ties to the earlier one), or None to keep the step; and how many were scored."""
        choices, n_scored = [], 0
        for a, b, cands in work:
            if self.score_batch is None:
                kls = scorer.kls(a, b, cands, self.stop_at)
                n_scored += len(cands)
                ok = [(len(c), i) for i, c in enumerate(cands) if kls[i] < self.epsilon]
                best = min(ok)[1] if ok else None
                choices.append(None if best is None else (best, kls[best]))
                continue
            order, choice = sorted(range(len(cands)), key=lambda i: (len(cands[i]), i)), None
            for at in range(0, len(order), self.score_batch):
                batch = order[at : at + self.score_batch]
                kls = scorer.kls(a, b, [cands[i] for i in batch], self.stop_at)
                n_scored += len(batch)
                # `batch` is in (length, index) order, so its first candidate under epsilon is the rule's answer
                choice = next(((i, kl) for i, kl in zip(batch, kls, strict=True) if kl < self.epsilon), None)
                if choice is not None:
                    break
            choices.append(choice)
        return choices, n_scored

    def score(self, model: torch.nn.Module, prompt_ids: list[int], response_ids: list[int], work) -> list[list[float]]:
        """KL of every candidate of every (start, end, candidates) step of one trace, in the candidates' order."""
        scorer = TraceScorer.of(self, model, prompt_ids, response_ids)
        return [scorer.kls(a, b, cands) for a, b, cands in work]

    @torch.inference_mode()
    def score_loop(
        self, model: torch.nn.Module, prompt_ids: list[int], response_ids: list[int], work
    ) -> list[list[float]]:
        """The straightforward reference: two full forward passes per candidate, no sharing."""
        device = next(model.parameters()).device
        results = []
        for a, b, cands in work:
            cont = response_ids[b : b + self.window]
            if not cont:
                results.append([float("inf")] * len(cands))
                continue
            kls = []
            for cand in cands:
                orig = torch.tensor([prompt_ids + response_ids[:b] + cont], device=device)
                alt = torch.tensor([prompt_ids + response_ids[:a] + cand + cont], device=device)
                lp_orig = model(input_ids=orig).logits[0, -len(cont) - 1 : -1].float().log_softmax(-1)
                lp_alt = model(input_ids=alt).logits[0, -len(cont) - 1 : -1].float().log_softmax(-1)
                kls.append(float(token_kl(lp_orig, lp_alt, self.reduction)))
            results.append(kls)
        return results


@dataclass
class TraceScorer:
    """Scores candidate steps of one trace: one forward pass over the whole original trace at creation
    (its hidden states give every step's original distributions, its KV cache every step's prefix), then
    one batch per call on top of the step prefix's cropped cache. Only hidden states are kept; the
    vocabulary distributions are formed `chunk_tokens` (candidate, position) rows at a time.
    `forwarded_tokens` counts the candidate and continuation tokens fed so far (padding not counted)."""

    body: torch.nn.Module
    head: torch.nn.Module
    cache: DynamicCache
    hidden: torch.Tensor  # [prompt + response, H]
    base: int  # prompt length
    response_ids: list[int]
    window: int
    reduction: str
    chunk_tokens: int
    tokens_per_pass: int | None = None  # StepRefiner.score_positions
    forwarded_tokens: int = 0

    @classmethod
    @torch.inference_mode()
    def of(cls, refiner: StepRefiner, model: torch.nn.Module, prompt_ids: list[int], response_ids: list[int]):
        body, head = split_causal_lm(model)
        full = torch.tensor([prompt_ids + response_ids], device=next(model.parameters()).device)
        out = body(input_ids=full, use_cache=True)
        return cls(
            body,
            head,
            out.past_key_values,
            out.last_hidden_state[0],
            len(prompt_ids),
            response_ids,
            refiner.window,
            refiner.reduction,
            refiner.score_chunk_tokens,
            refiner.score_positions,
        )

    def kls(self, a: int, b: int, cands: list[list[int]], stop_at: float | None = None) -> list[float]:
        """KL of each candidate replacing the step [a, b) over the next `window` original tokens. With `stop_at`
        and `tokens_per_pass` set, a candidate whose KL reaches `stop_at` part-way is dropped, and its value is its
        KL so far (a lower bound, itself at least `stop_at`)."""
        if stop_at is not None and self.tokens_per_pass is not None:
            return self.kls_stopping(a, b, cands, stop_at)
        batch = self.windows(a, b, cands)
        return [float("inf")] * len(cands) if batch is None else self.forward_kl(batch)

    @torch.inference_mode()
    def kls_stopping(self, a: int, b: int, cands: list[list[int]], stop_at: float) -> list[float]:
        """`kls` fed `tokens_per_pass` continuation tokens per forward pass on the growing cache, dropping every
        candidate whose KL so far reaches `stop_at` (per-position KLs are >= 0: it cannot end below). The
        candidates are right-aligned (padded between prefix and candidate) so every row's continuation sits in
        the same columns: column width - 1 + t predicts continuation token t."""
        cont = self.response_ids[b : b + self.window]
        if not cont:  # nothing follows the step: the constraint cannot be checked, keep it
            return [float("inf")] * len(cands)
        device, length, width = self.hidden.device, len(cont), max(map(len, cands))
        prefix_len, columns = self.base + a, width + len(cont) - 1  # the last token predicts nothing in the window
        ids = torch.zeros((len(cands), columns), dtype=torch.long, device=device)
        mask = torch.zeros((len(cands), prefix_len + columns), dtype=torch.long, device=device)
        mask[:, :prefix_len] = 1
        where = torch.full((len(cands), columns), prefix_len, dtype=torch.long, device=device)
        for i, c in enumerate(cands):
            pad = width - len(c)
            ids[i, pad:] = torch.tensor(c + cont[:-1])
            mask[i, prefix_len + pad :] = 1
            where[i, pad:] = torch.arange(prefix_len, prefix_len + columns - pad)
        cache = prefix_cache(self.cache, prefix_len, len(cands))
        limit = stop_at if self.reduction == "sum" else stop_at * length
        total = torch.zeros(len(cands), device=device)
        alive = torch.arange(len(cands), device=device)
        fed = done = 0  # columns fed so far; continuation positions scored so far
        while done < length and len(alive):
            upto = min(done + self.tokens_per_pass, length)
            stop = width - 1 + upto
            last = self.body(
                input_ids=ids[alive, fed:stop],
                attention_mask=mask[alive, : prefix_len + stop],
                past_key_values=cache,
                position_ids=where[alive, fed:stop],
            ).last_hidden_state[:, width - 1 + done - fed :]
            ref = self.hidden[self.base + b - 1 + done : self.base + b - 1 + upto]
            total[alive] += chunked_kl(self.head, ref, last, "sum", self.chunk_tokens).float()
            self.forwarded_tokens += int(mask[alive, prefix_len + fed : prefix_len + stop].sum())
            fed, done = stop, upto
            keep = total[alive] < limit
            if done < length and not keep.all():  # after the last pass no row is fed again: nothing to drop
                cache.batch_select_indices(keep.nonzero().squeeze(-1))
                alive = alive[keep]
        return (total if self.reduction == "sum" else total / length).tolist()

    @torch.inference_mode()
    def windows(self, a: int, b: int, cands: list[list[int]]) -> Windows | None:
        """The inputs of one scoring batch: each candidate followed by the original continuation, on the step
        prefix's cache; None when nothing follows the step (the constraint cannot be checked: keep it)."""
        cont = self.response_ids[b : b + self.window]
        if not cont:
            return None
        device = self.hidden.device
        prefix_len = self.base + a
        rows = [c + cont for c in cands]
        width = max(map(len, rows))
        ids = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        mask = torch.zeros((len(rows), prefix_len + width), dtype=torch.long, device=device)
        mask[:, :prefix_len] = 1
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, prefix_len : prefix_len + len(row)] = 1
        return Windows(
            ids=ids,
            mask=mask,
            positions=torch.arange(prefix_len, prefix_len + width, device=device).expand(len(rows), -1),
            cache=prefix_cache(self.cache, prefix_len, len(cands)),
            index=torch.stack([torch.arange(len(c) - 1, len(c) - 1 + len(cont)) for c in cands]).to(device),
            ref_hidden=self.hidden[self.base + b - 1 : self.base + b - 1 + len(cont)],
        )

    @torch.inference_mode()
    def forward_kl(self, batch: Windows) -> list[float]:
        """The candidates' forward pass over their windows and the KL against the original: the work every
        scored candidate needs (benchmarks/bench_refine_floor.py calls this the floor)."""
        last = self.body(
            input_ids=batch.ids, attention_mask=batch.mask, past_key_values=batch.cache, position_ids=batch.positions
        ).last_hidden_state
        cand_hidden = last.gather(1, batch.index[..., None].expand(-1, -1, last.shape[-1]))
        self.forwarded_tokens += int(batch.mask[:, -batch.ids.shape[1] :].sum())
        return chunked_kl(self.head, batch.ref_hidden, cand_hidden, self.reduction, self.chunk_tokens).tolist()


@dataclass
class Windows:
    """One scoring batch: candidate + continuation token rows [n, width] (right-padded), their attention mask
    over prefix and rows, positions, the prefix cache repeated n times, where each row's continuation
    predictions sit ([n, L]), and the original's final hidden states over the continuation ([L, H])."""

    ids: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    cache: DynamicCache
    index: torch.Tensor
    ref_hidden: torch.Tensor


def warn_cut(refiner: str, what: str, counts: list[tuple[int, int]], max_step_tokens: int) -> None:
    """Say how many sampled steps were discarded for reaching `refiner.max_step_tokens` (never silent)."""
    sampled, cut = sum(s for s, _ in counts), sum(c for _, c in counts)
    if cut:
        log.warning(
            "refiner=%s: %d of %d %s (%.1f%%) reached refiner.max_step_tokens=%d before the step delimiter and "
            "were discarded",
            refiner,
            cut,
            sampled,
            what,
            100.0 * cut / sampled,
            max_step_tokens,
        )


def assemble_trace(
    tok, response: list[int], spans, chosen, scored: int, delimiter: str, candidates: int = 0, candidates_cut: int = 0
) -> RefinedTrace:
    """The response with each chosen (start, end, new step ids, kl) spliced in, and its step statistics."""
    replace = {(a, b): (c, kl) for a, b, c, kl in chosen}
    ids, pos, after_tokens, after_steps = [], 0, 0, 0
    for a, b in spans:
        new, _ = replace.get((a, b), (response[a:b], None))
        ids += response[pos:a] + new
        after_tokens += len(new)
        after_steps += bool(tok.decode(new).replace(delimiter, "").strip())  # a bare delimiter is a dropped step
        pos = b
    ids += response[pos:]
    return RefinedTrace(
        token_ids=ids,
        n_tokens=len(ids),
        text=tok.decode(ids, skip_special_tokens=False),
        steps_before=len(spans),
        steps_after=after_steps,
        step_tokens_before=sum(b - a for a, b in spans),
        step_tokens_after=after_tokens,
        steps_scored=scored,
        steps_accepted=len(chosen),
        accepted_kl=[kl for *_, kl in chosen],
        candidates=candidates,
        candidates_cut=candidates_cut,
    )


def prefix_cache(cache, length: int, repeats: int) -> DynamicCache:
    """A new cache holding the first `length` positions of `cache`, repeated `repeats` times in batch."""
    pairs = [(layer.keys, layer.values) for layer in cache.layers]
    return DynamicCache(
        [
            (k[..., :length, :].repeat_interleave(repeats, 0), v[..., :length, :].repeat_interleave(repeats, 0))
            for k, v in pairs
        ]
    )


def trace_step_spans(
    tokenizer: PreTrainedTokenizerBase, response_ids: list[int], delimiter: str
) -> list[tuple[int, int]]:
    """The step spans of one tokenised response, inside its <think> part when the tokenizer has those tokens."""
    open_id, close_id = (_single_token_id(tokenizer, t) for t in ("<think>", "</think>"))
    return step_spans(token_texts(tokenizer, response_ids), delimiter, *think_bounds(response_ids, open_id, close_id))


def token_texts(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[str]:
    """Each token's own text (a byte-level BPE piece of a multi-byte character decodes to U+FFFD; no
    step delimiter is such a piece)."""
    return [tokenizer.decode([t]) for t in ids]


def _single_token_id(tokenizer, text: str) -> int | None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 and ids[0] != tokenizer.unk_token_id else None
