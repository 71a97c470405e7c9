"""`refiner=prompt_rewrite`: an instruct model is asked to shorten each reasoning step (TokenSqueeze Table 3's
"4o-mini Rewrite" row, with a local model instead of GPT-4o-mini; the paper does not give its prompt).

Each step of a chosen trace is sent, alone, through the rewriting model's chat template with `instruction`
and decoded greedily; the rewrite replaces the step when it is shorter in the policy's tokens. There is no
check that the meaning survives: that is the point of this baseline against KL refinement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tsq.refinement.base import ModelRefiner, RefinedTrace, ScoringSampler
from tsq.refinement.kl import assemble_trace, trace_step_spans, warn_cut
from tsq.sampling.base import SamplingParams

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class PromptRewriter(ModelRefiner, part="refiner/prompt_rewrite"):
    """`model_path`: the instruct model that rewrites (null: the model being compressed)."""

    name: str = "prompt_rewrite"
    instruction: str = (
        "Rewrite the following reasoning step as briefly as possible. Keep every number, formula and conclusion. "
        "Reply with the rewritten step only.\n\n{step}"
    )
    model_path: str | None = None
    max_step_tokens: int = 64
    accept: str = "rewrite"

    def __post_init__(self) -> None:
        if "{step}" not in self.instruction:
            raise ValueError("refiner.instruction must contain {step}")
        if self.max_step_tokens <= 0:
            raise ValueError(f"refiner.max_step_tokens must be > 0, got {self.max_step_tokens}")
        self.params = SamplingParams(n=1, max_new_tokens=self.max_step_tokens, temperature=0.0)

    def rewrite_prompts(self, tokenizer: PreTrainedTokenizerBase, steps: list[str]) -> list[str]:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"refiner={self.name}: the rewriting model's tokenizer has no chat template")
        return [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": self.instruction.replace("{step}", step)}],
                tokenize=False,
                add_generation_prompt=True,
            )
            for step in steps
        ]

    def refine(
        self, sampler: ScoringSampler, prompts: list[str], responses: list[str], step_delimiter: str
    ) -> list[RefinedTrace]:
        """`sampler` holds the policy (its tokenizer measures lengths); `rewriter`, when set, writes."""
        from tsq.sampling.hf import HFSampler

        tok = sampler.tokenizer
        rewriter = sampler if self.model_path is None else HFSampler(self.model_path, progress=False)
        response_ids = tok(list(responses), add_special_tokens=False)["input_ids"] if responses else []
        spans = [trace_step_spans(tok, r, step_delimiter) for r in response_ids]
        steps = [
            tok.decode(r[a:b]).removesuffix(step_delimiter).strip()
            for r, sp in zip(response_ids, spans, strict=True)
            for a, b in sp
        ]
        outputs = iter(rewriter.generate(self.rewrite_prompts(rewriter.tokenizer, steps), self.params) if steps else [])
        results, counts = [], []
        for r, sp in zip(response_ids, spans, strict=True):
            chosen, cut = [], 0
            for a, b in sp:
                output = next(outputs)[0]
                cut += output.finish_reason == "length"  # cut off mid-rewrite: not a usable step
                text = output.text.strip() if output.finish_reason != "length" else ""
                if rewriter.tokenizer.eos_token:
                    text = text.replace(rewriter.tokenizer.eos_token, "").strip()
                new = tok(text + step_delimiter, add_special_tokens=False)["input_ids"] if text else []
                if new and len(new) < b - a:
                    chosen.append((a, b, new, float("nan")))
            counts.append((len(sp), cut))
            results.append(assemble_trace(tok, r, sp, chosen, len(sp), step_delimiter, len(sp), cut))
        warn_cut(self.name, "rewrites", counts, self.max_step_tokens)
        return results
