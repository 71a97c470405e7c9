import pytest

from tsq.sampling.base import SamplingParams
from tsq.sampling.hf import HFSampler


def test_greedy_completions_counts_and_finish_reasons(micro_model_dir):
    sampler = HFSampler(micro_model_dir, batch_size=4, progress=False)
    prompts = ["1 +3", "2 -4 +3 1 2", "1"]
    out = sampler.generate(prompts, SamplingParams(n=3, max_new_tokens=20, temperature=0.0))
    assert [len(g) for g in out] == [3, 3, 3]
    for group in out:
        for c in group:
            assert c.text == "<think> 3 ; </think> 3"
            # the length counts the EOS that ended the completion (tsq's one convention), the ids do not
            assert c.finish_reason == "eos" and c.n_tokens == 6 == len(c.token_ids) + 1
            assert sampler.tokenizer.eos_token_id not in c.token_ids


def test_length_and_stop_finish_reasons(micro_model_dir):
    sampler = HFSampler(micro_model_dir, batch_size=8, progress=False)
    cut = sampler.generate(["1 +3"], SamplingParams(n=2, max_new_tokens=2, temperature=0.0))[0]
    assert all(c.finish_reason == "length" and c.text == "<think> 3" and c.n_tokens == 2 for c in cut)
    semicolon = sampler.tokenizer.convert_tokens_to_ids(";")
    step = sampler.generate(["1 +3"], SamplingParams(n=1, max_new_tokens=20, temperature=0.0), [";"])[0][0]
    assert step.finish_reason == "stop" and step.text == "<think> 3 ;" and step.token_ids[-1] == semicolon
    # rows of one batch stop independently: a stop string no row writes changes nothing
    free = sampler.generate(["1 +3", "2 +3"], SamplingParams(n=1, max_new_tokens=20, temperature=0.0), ["nope"])
    plain = sampler.generate(["1 +3", "2 +3"], SamplingParams(n=1, max_new_tokens=20, temperature=0.0))
    assert free == plain


def test_sampling_is_seeded_and_returns_n_per_prompt(micro_model_dir):
    sampler = HFSampler(micro_model_dir, batch_size=5, progress=False)
    params = SamplingParams(n=4, max_new_tokens=6, temperature=5.0, top_p=1.0, seed=7)
    a = sampler.generate(["1", "2 +3"], params)
    b = sampler.generate(["1", "2 +3"], params)
    assert [len(g) for g in a] == [4, 4]
    assert a == b
    assert len({c.text for g in a for c in g}) > 1  # a hot temperature really samples
    for c in (c for g in a for c in g):
        assert c.n_tokens <= 6 and (c.finish_reason == "length") == (len(c.token_ids) == 6)


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"n": 0}, "n "),
        ({"temperature": -0.1}, "temperature"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"top_p": 0.0}, "top_p"),
    ],
)
def test_invalid_sampling_params(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        SamplingParams(**kwargs)
