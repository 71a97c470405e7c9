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


def full_vocab_logps(model, prompts, completions) -> torch.Tensor:
    """The path this module replaced: full-vocabulary log_softmax over every position of each row."""
    out = []
    for p, c in zip(prompts, completions, strict=True):
        logp = model(input_ids=torch.tensor([p + c])).logits[0, :-1].float().log_softmax(-1)
        out.append(logp[len(p) - 1 :].gather(-1, torch.tensor(c)[:, None]).sum())
    return torch.stack(out)


@pytest.mark.parametrize(("chunk_tokens", "checkpoint_forwards"), [(1, False), (5, False), (4096, False), (5, True)])
def test_chunked_logps_and_gradients_equal_the_full_vocabulary_path(micro_model_dir, chunk_tokens, checkpoint_forwards):
    """Chunking, recomputing chunks in the backward and recomputing whole forwards in the backward change
    neither the values nor the gradients."""
    model = AutoModelForCausalLM.from_pretrained(micro_model_dir).train()
    rng = random.Random(1)
    prompts = [[rng.randrange(4, 50) for _ in range(rng.randint(1, 6))] for _ in range(5)]
    completions = [[rng.randrange(4, 50) for _ in range(rng.randint(1, 12))] for _ in range(5)]
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0])

    want = full_vocab_logps(model, prompts, completions)
    (want * weights).sum().backward()
    want_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    got = sequence_logps(
        model, prompts, completions, "bucket", 2, chunk_tokens=chunk_tokens, checkpoint_forwards=checkpoint_forwards
    )
    (got * weights).sum().backward()
    assert got.tolist() == pytest.approx(want.tolist(), abs=1e-4)
    for name, param in model.named_parameters():
        # float32 sums in another order differ by rounding in proportion to the gradients' size (5.7e-5 was
        # seen at a magnitude of 264 on another machine): the tolerance scales with what is compared
        scale = max(1.0, float(want_grads[name].abs().max()))
        assert torch.allclose(param.grad, want_grads[name], rtol=1e-5, atol=1e-5 * scale), name


def test_token_logps_never_projects_more_than_one_chunk(micro_model_dir):
    """The head sees at most `chunk_tokens` rows per call, forward and backward (recomputation) alike."""
    from tsq.training.logps import split_causal_lm, token_logps

    model = AutoModelForCausalLM.from_pretrained(micro_model_dir)
    _, head = split_causal_lm(model)
    seen = []
    handle = head.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    hidden = torch.randn(23, model.config.hidden_size, requires_grad=True)
    targets = torch.randint(0, model.config.vocab_size, (23,))
    token_logps(head, hidden, targets, chunk_tokens=4).sum().backward()
    handle.remove()
    assert max(seen) == 4
    assert sum(seen) == 2 * 23  # each chunk projected once forward and once again in the backward
    want = torch.log_softmax(head(hidden).float(), -1).gather(-1, targets[:, None]).squeeze(-1)
    assert torch.allclose(token_logps(head, hidden, targets, 4), want, atol=1e-5)


def test_logit_softcapping_models_are_refused(micro_model_dir):
    from tsq.training.logps import split_causal_lm

    model = AutoModelForCausalLM.from_pretrained(micro_model_dir)
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="final_logit_softcapping=30.0"):
        split_causal_lm(model)


@pytest.mark.parametrize("mode", MODES)
def test_checkpointed_forwards_run_again_in_the_backward(micro_model_dir, mode):
    """With checkpoint_forwards each forward of the body runs twice (once more during the backward), and
    only while gradients are on; the values stay those of the plain path."""
    model = AutoModelForCausalLM.from_pretrained(micro_model_dir).train()
    calls = []
    model.model.register_forward_hook(lambda *_: calls.append(1))
    prompts, completions = [[5, 6], [7], [8, 9, 10]], [[11, 12], [13, 14, 15], [16]]
    plain = sequence_logps(model, prompts, completions, mode, rows_per_forward=2, pack_tokens=6)
    forwards = len(calls)
    calls.clear()
    got = sequence_logps(model, prompts, completions, mode, 2, pack_tokens=6, checkpoint_forwards=True)
    assert len(calls) == forwards  # nothing recomputed yet
    got.sum().backward()
    assert len(calls) == 2 * forwards
    assert got.tolist() == pytest.approx(plain.tolist(), abs=1e-6)
