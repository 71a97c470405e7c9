import pytest
from helpers import run_context

from tsq.cache import ArtifactStore, Stage
from tsq.data.synthetic import SyntheticWorld
from tsq.models.base import ModelHandle
from tsq.sampling.base import SamplingParams
from tsq.sampling.hf import HFSampler
from tsq.stages.samples import graded_samples


class Killed(Exception):
    pass


class DiesAfter:
    """A real HFSampler that is 'killed' after `calls` generate calls (the run dies mid-stage)."""

    def __init__(self, sampler: HFSampler, calls: int) -> None:
        self.sampler, self.calls = sampler, calls

    def generate(self, prompts, params, stop=None):
        if self.calls == 0:
            raise Killed
        self.calls -= 1
        return self.sampler.generate(prompts, params, stop)

    def count_tokens(self, texts):
        return self.sampler.count_tokens(texts)


def test_interrupted_sampling_resumes_to_the_same_artifact(micro_model_dir, tmp_path):
    world = SyntheticWorld(split_sizes={"test": 2, "dev": 1, "train": 3})
    problems = world.split("train")  # 15 problems -> 4 shards of 4
    params = SamplingParams(n=3, max_new_tokens=8, temperature=3.0, seed=5)
    sampler = HFSampler(micro_model_dir, batch_size=7, progress=False)

    model = ModelHandle("micro", micro_model_dir, "micro")
    stage, settings = Stage("samples", 1), ({"n": 3}, {"model": "micro"})

    def sample(store, sampler):
        return graded_samples(
            run_context(world, store, sampler), model, problems, params, stage, *settings, shard_size=4
        )

    whole_store = ArtifactStore(tmp_path / "whole")
    built = sample(whole_store, sampler)
    whole, key = built.frame, built.key
    assert key == stage.key(*settings)

    store = ArtifactStore(tmp_path / "resumed")
    with pytest.raises(Killed):
        sample(store, DiesAfter(sampler, 2))
    assert not store.exists("samples", key)
    assert len(list(store.scratch("samples", key).glob("shard-*.jsonl"))) == 2  # finished shards survive

    resumed_calls = DiesAfter(sampler, 2)  # exactly the two missing shards may be sampled
    resumed = sample(store, resumed_calls).frame
    assert resumed_calls.calls == 0
    assert resumed.equals(whole)
    assert len(whole) == 15 * 3 and whole["text"].nunique() > 1
    assert (store.path("samples", key) / "samples.jsonl").read_bytes() == (
        whole_store.path("samples", key) / "samples.jsonl"
    ).read_bytes()
    assert not store.scratch("samples", key).exists()


def test_most_responses_cut_at_the_cap_is_a_loud_warning(caplog):
    import pandas as pd

    from tsq.sampling.graded import warn_if_cut

    frame = pd.DataFrame({"finish_reason": ["length", "length", "eos", "length"]})
    with caplog.at_level("WARNING"):
        assert warn_if_cut(frame, "eval", 1) == 0.75
    assert "75% of 4 responses were cut at max_new_tokens=1" in caplog.text and "eval.max_new_tokens" in caplog.text
    caplog.clear()
    assert warn_if_cut(frame.iloc[1:3], "samples", 8) == 0.5 and not caplog.text  # half is not most
