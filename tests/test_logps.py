import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from tsq.training.logps import MODES, sequence_logps


def direct(model, prompt, completion) -> float:
    """Sum of log p(completion token) from one unpadded forward pass of prompt + completion."""
    ids = torch.tensor([prompt + completion])
    logp = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
    return float(sum(logp[len(prompt) - 1 + j, t] for j, t in enumerate(completion)))


@pytest.mark.parametrize("mode", MODES)
def test_every_batching_layout_gives_each_sequences_own_logps(micro_model_dir, mode):
    model = AutoModelForCausalLM.from_pretrained(micro_model_dir).eval()
    rng = random.Random(0)
    prompts = [[rng.randrange(4, 50) for _ in range(rng.randint(1, 6))] for _ in range(7)]
    completions = [[rng.randrange(4, 50) for _ in range(rng.randint(1, 12))] for _ in range(7)]
    with torch.no_grad():
        got = sequence_logps(model, prompts, completions, mode, rows_per_forward=3, pack_tokens=20)
    want = [direct(model, p, c) for p, c in zip(prompts, completions, strict=True)]
    assert got.tolist() == pytest.approx(want, abs=1e-4)


def test_unknown_layout_fails():
    with pytest.raises(ValueError, match="train.batching"):
        sequence_logps(None, [[1]], [[2]], "ragged")
