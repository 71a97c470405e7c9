"""`sampler=hf`: batched, left-padded sampling with `transformers`' `generate`."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from tsq.sampling.base import Completion, FinishReason, SamplingParams

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


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
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"sampler.batch_size must be > 0, got {batch_size}")
        if dtype not in DTYPES:
            raise ValueError(f"sampler.dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.batch_size, self.progress = batch_size, progress
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code
        ).to(self.device)
        self.model.eval()
        self.eos_token_id = self.tokenizer.eos_token_id

    def count_tokens(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def _finish(self, row: list[int], stop_ids: set[int]) -> tuple[tuple[int, ...], FinishReason]:
        for i, tok in enumerate(row):
            if tok == self.eos_token_id:
                return tuple(row[:i]), "eos"
            if tok in stop_ids:
                return tuple(row[: i + 1]), "stop"
        return tuple(row), "length"

    def generate(
        self, prompts: list[str], params: SamplingParams, stop_token_ids: list[int] | None = None
    ) -> list[list[Completion]]:
        prompt_ids = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
        return self.generate_ids(prompt_ids, params, stop_token_ids)

    @torch.inference_mode()
    def generate_ids(
        self, prompt_ids: list[list[int]], params: SamplingParams, stop_token_ids: list[int] | None = None
    ) -> list[list[Completion]]:
        """`generate` on token ids (refinement continues exact token prefixes, no re-tokenising)."""
        stop_ids = set(stop_token_ids or [])
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
            generated = self.model.generate(
                **enc,
                max_new_tokens=params.max_new_tokens,
                eos_token_id=[self.eos_token_id, *stop_ids],
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
            )
            new_tokens = generated[:, enc["input_ids"].shape[1] :].tolist()
            for (i, j), row in zip(batch, new_tokens, strict=True):
                ids, reason = self._finish(row, stop_ids)
                text = self.tokenizer.decode(list(ids), skip_special_tokens=False)
                out[i][j] = Completion(text=text, token_ids=ids, finish_reason=reason)
        return out  # type: ignore[return-value]
