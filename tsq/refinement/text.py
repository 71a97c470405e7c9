"""`refiner=text_rewrite`: shorten a trace from its text alone, as an external rewriter or TokenSkip does.

The baseline TokenSqueeze's Table 3 sets against KL-constrained refinement is a rewriter that does not ask the
model what its reasoning depends on. This one drops every filler word it is given and every reasoning step that
opens with a restatement marker (`check`, `again`, `fix` in the synthetic worlds), keeping the rest of the text
word for word. It reads no model distribution; the policy's tokenizer only counts the new text's tokens. What it
cannot see is what the KL refiner measures: a cue word that makes a check likely, or a check whose fix the
following steps build on, looks like any other filler or restatement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from tsq.refinement.base import ModelRefiner, RefinedTrace, ScoringSampler
from tsq.text import THINK_CLOSE, THINK_OPEN


@dataclass
class TextRewriter(ModelRefiner, part="refiner/text_rewrite"):
    """Drops `drop_words` everywhere in the thinking block, and the steps whose first remaining word is in
    `drop_steps`. Text outside the thinking block (the answer) is never touched."""

    name: str = "text_rewrite"
    drop_words: list[str] = field(default_factory=list)
    drop_steps: list[str] = field(default_factory=list)
    accept: ClassVar[str] = "text"

    def rewrite(self, response: str, step_delimiter: str) -> tuple[str, list[str], list[str], int]:
        """(the rewritten response, its reasoning steps before, after, and how many steps changed)."""
        head, sep, tail = response.partition(THINK_CLOSE)
        if not sep:  # an unclosed thinking block: no answer to keep it consistent with, left as it is
            return response, [], [], 0
        opened = head.lstrip().startswith(THINK_OPEN)
        body = head.lstrip()[len(THINK_OPEN) :] if opened else head
        mark = step_delimiter.strip() or step_delimiter
        words_out, before, after, changed = set(self.drop_words), [], [], 0
        for part in body.split(step_delimiter):
            if not part.strip():
                continue
            before.append(f"{part.strip()} {mark}")
            words = [w for w in part.split() if w not in words_out]
            if not words or words[0] in self.drop_steps:
                changed += 1
                continue
            after.append(f"{' '.join(words)} {mark}")
            changed += words != part.split()
        text = " ".join(after)
        rebuilt = (f"{THINK_OPEN} " if opened else "") + (f"{text} " if text else "") + sep + tail
        return rebuilt, before, after, changed

    def refine(
        self, sampler: ScoringSampler, prompts: list[str], responses: list[str], step_delimiter: str
    ) -> list[RefinedTrace]:
        def count(texts: list[str]) -> int:
            return sum(len(sampler.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)

        out = []
        for response in responses:
            text, before, after, changed = self.rewrite(response, step_delimiter)
            ids = sampler.tokenizer(text, add_special_tokens=False)["input_ids"]
            out.append(
                RefinedTrace(
                    text=text,
                    n_tokens=len(ids),
                    steps_before=len(before),
                    steps_after=len(after),
                    step_tokens_before=count(before),
                    step_tokens_after=count(after),
                    steps_scored=len(before),
                    steps_accepted=changed,
                    token_ids=ids,
                )
            )
        return out
