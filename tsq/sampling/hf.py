"""`sampler=hf`: batched, left-padded sampling with `transformers`' `generate`."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from tsq.sampling.base import Completion, FinishReason, SamplingParams

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class StopTextCriteria(StoppingCriteria):
    """Stops a row once the text of its last few generated tokens contains a stop string.

    transformers' own `stop_strings` precomputes token overlaps from the vocabulary and fails on
    word-level tokenizers (such as the tiny model's); decoding the last `max(len(stop))` tokens works for
    any tokenizer, because a stop string of c characters spans at most c tokens.
    """

    def __init__(self, tokenizer, stop: list[str], prompt_length: int) -> None:
        self.tokenizer, self.stop, self.start = tokenizer, stop, prompt_length
        self.window = max(map(len, stop))

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        tail = input_ids[:, max(self.start, input_ids.shape[1] - self.window) :]
        texts = self.tokenizer.batch_decode(tail)
        return torch.tensor([any(s in t for s in self.stop) for t in texts], device=input_ids.device)


class HFSampler:
    """Samples `n` completions per prompt in batches of `batch_size` rows.

    Rows are ordered by prompt length before batching so that left padding stays short; results come
    back in the caller's order. Each batch reseeds torch with `seed + batch index`, so a run is
    reproducible for a given batch size.
    """

    def __init__(
        self,
        model_path: str | Path,
        batch_size: int = 256,
        device: str = "auto",
        dtype: str = "float32",
        trust_remote_code: bool = False,
        progress: bool = True,
        revision: str | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"sampler.batch_size must be > 0, got {batch_size}")
        if dtype not in DTYPES:
            raise ValueError(f"sampler.dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.batch_size, self.progress = batch_size, progress
        load = {"revision": revision, "trust_remote_code": trust_remote_code}
        tokenizer = AutoTokenizer.from_pretrained(model_path, **load)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=DTYPES[dtype], **load)
        self._attach(model.to(resolve_device(device)).eval(), tokenizer)

    def _attach(self, model, tokenizer) -> None:
        """Use `model` and `tokenizer`: left padding, EOS as padding when there is no pad token."""
        self.model, self.tokenizer = model, tokenizer
        self.device = str(next(model.parameters()).device)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_token_id = self.tokenizer.eos_token_id

    @classmethod
    def from_model(
        cls, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, batch_size: int = 256, progress: bool = False
    ) -> HFSampler:
        """A sampler over a model already in memory (TL;DR evaluates the policy while it trains)."""
        sampler = cls.__new__(cls)
        sampler.batch_size, sampler.progress = batch_size, progress
        sampler._attach(model, tokenizer)
        return sampler

    def close(self) -> None:
        self.model = None

    def count_tokens(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def _finish(self, row: list[int], stop: list[str]) -> tuple[tuple[int, ...], FinishReason]:
        """Cut a generated row at EOS (dropped) or at the first token that completes a stop string (kept)."""
        text = ""
        for i, tok in enumerate(row):
            if tok == self.eos_token_id:
                return tuple(row[:i]), "eos"
            if stop:
                piece = self.tokenizer.decode([tok])
                text += piece
                tail = text[-(max(map(len, stop)) + len(piece)) :]
                if any(s in tail for s in stop):
                    return tuple(row[: i + 1]), "stop"
        return tuple(row), "length"

    def generate(
        self, prompts: list[str], params: SamplingParams, stop: list[str] | None = None
    ) -> list[list[Completion]]:
        prompt_ids = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
        return self.generate_ids(prompt_ids, params, stop)

    @torch.inference_mode()
    def generate_ids(
        self, prompt_ids: list[list[int]], params: SamplingParams, stop: list[str] | None = None
    ) -> list[list[Completion]]:
        """`generate` on token ids (refinement continues exact token prefixes, no re-tokenising).

        `stop` strings end a completion and are kept in it (refinement stops at the step delimiter, which a
        BPE tokenizer may spread over several tokens, see `StopTextCriteria`)."""
        stop = [s for s in (stop or []) if s]
        if not prompt_ids:
            return []
        rows = sorted(
            ((i, j) for i in range(len(prompt_ids)) for j in range(params.n)), key=lambda r: len(prompt_ids[r[0]])
        )
        out: list[list[Completion | None]] = [[None] * params.n for _ in prompt_ids]
        sampling = (
            {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
            if params.temperature > 0
            else {"do_sample": False}
        )
        batches = [rows[s : s + self.batch_size] for s in range(0, len(rows), self.batch_size)]
        bar = tqdm(batches, desc="sampling", unit="batch", disable=not self.progress, delay=2.0, leave=False)
        for b, batch in enumerate(bar):
            enc = self.tokenizer.pad(
                {"input_ids": [prompt_ids[i] for i, _ in batch]}, padding=True, return_tensors="pt"
            ).to(self.device)
            torch.manual_seed(params.seed + b)
            criteria = StoppingCriteriaList(
                [StopTextCriteria(self.tokenizer, stop, enc["input_ids"].shape[1])] if stop else []
            )
            generated = self.model.generate(
                **enc,
                stopping_criteria=criteria,
                max_new_tokens=params.max_new_tokens,
                eos_token_id=self.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
            )
            new_tokens = generated[:, enc["input_ids"].shape[1] :].tolist()
            for (i, j), row in zip(batch, new_tokens, strict=True):
                ids, reason = self._finish(row, stop)
                text = self.tokenizer.decode(list(ids), skip_special_tokens=False)
                out[i][j] = Completion(text=text, token_ids=ids, finish_reason=reason)
        return out  # type: ignore[return-value]
