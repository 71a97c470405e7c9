"""Forced-budget evaluation (tsq/evaluation/forced.py) with a real tiny model that always answers 3."""

from types import SimpleNamespace

import pandas as pd
from transformers import AutoTokenizer

from tsq.evaluation.forced import forced_budget_samples, forced_curve
from tsq.sampling.base import SamplingParams
from tsq.sampling.hf import HFSampler
from tsq.text import answer_part


class AnswerIsThree:
    """A world whose every problem's answer is 3 (tsq's grading interface, nothing else)."""

    def grade_many(self, problems, texts):
        return [answer_part(t).strip() == "3" for t in texts]


def test_responses_over_the_budget_are_cut_closed_and_answered(micro_model_dir):
    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    sampler = HFSampler(micro_model_dir, batch_size=8, progress=False)
    problems = {"p": SimpleNamespace(prompt="1 +3")}
    long_wrong = "<think> 2 ; 2 ; 2 ; 2 ; </think> 2"  # 11 tokens and EOS: 12, wrong
    frame = pd.DataFrame(
        {
            "problem_id": ["p", "p"],
            "level": ["1", "1"],
            "sample": [0, 1],
            "text": ["<think> 3 ; </think> 3", long_wrong],
            "n_tokens": [6, 12],
            "correct": [True, False],
        }
    )
    params = SamplingParams(n=1, max_new_tokens=4, temperature=0.0)
    rows = forced_budget_samples(AnswerIsThree(), sampler, tok, problems, frame, [6, 12], params)
    by = rows.set_index(["budget", "sample"])
    # within the budget: kept as sampled
    assert not by.loc[(6, 0), "forced"] and by.loc[(6, 0), "n_tokens"] == 6 and by.loc[(6, 0), "correct"]
    assert not by.loc[(12, 1), "forced"] and not by.loc[(12, 1), "correct"]
    # over it: its first 6 tokens, then </think>, then the model's answer (3, then EOS), graded on that text
    cut = by.loc[(6, 1)]
    assert cut["forced"] and cut["correct"]
    assert cut["n_tokens"] == 6 + 1 + 2  # kept prefix, the closing tag, the answer and its EOS
    curve = {(c["budget"], c["level"]): c for c in forced_curve(rows)}
    assert curve[(6, "all")]["acc"] == 1.0 and curve[(12, "all")]["acc"] == 0.5
    assert curve[(6, "all")]["forced_share"] == 0.5
