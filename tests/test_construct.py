import json
import random
from dataclasses import replace

import pytest
from helpers import SharedSamplerChoice, run_context

from tsq.cache import ArtifactStore
from tsq.data.synthetic import SyntheticWorld, TeacherStyle
from tsq.models.base import ModelHandle
from tsq.refinement.base import NoRefiner
from tsq.refinement.kl import StepRefiner
from tsq.sampling.hf import HFSampler
from tsq.sampling.settings import SamplingSettings
from tsq.selection import QDyn
from tsq.stages.pairs import PAIR_FIELDS, PairSettings
from tsq.stages.recipe import construct_step
from tsq.stages.samples import SAMPLES, SAMPLES_FILE, samples_key_parts
from tsq.text import split_steps

SLIPPY = TeacherStyle(p_shortcut=0.0, p_slip=0.5)


def write_samples(ctx, handle, sampling) -> None:
    """A samples artifact made of teacher traces (half of them slipped: long and wrong), so that every
    problem has correct and incorrect responses of many lengths."""
    rng, world = random.Random(0), ctx.world
    rows = []
    for p in sampling.problems(world):
        for j in range(sampling.n):
            text = world.teacher_response(p, rng, SLIPPY)
            steps = split_steps(text, world.step_delimiter)
            rows.append(
                {
                    "problem_id": p.id,
                    "benchmark": p.benchmark,
                    "level": str(p.level),
                    "sample": j,
                    "text": text,
                    "n_tokens": len(text.split()) + 1,  # its words and the EOS that ended it
                    "finish_reason": "eos",
                    "correct": world.grade(p, text),
                    "n_steps": len(steps),
                    "step_tokens": sum(len(s.split()) for s in steps),
                }
            )
    with ctx.store.build(SAMPLES.name, SAMPLES.key(*samples_key_parts(ctx, handle, sampling))) as tmp:
        (tmp / SAMPLES_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
        (tmp / "diagnostics.json").write_text("{}")


@pytest.fixture()
def setup(tmp_path, copy_model_dir):
    world = SyntheticWorld(operands=[3, 4], split_sizes={"test": 2, "dev": 1, "train": 6})
    handle = ModelHandle(name="copy", path=copy_model_dir, key="copy-model")
    ctx = run_context(world, ArtifactStore(tmp_path), HFSampler(handle.path, batch_size=64, progress=False))
    sampling = SamplingSettings(n=8)
    write_samples(ctx, handle, sampling)
    return world, ctx, handle, sampling


def run(setup, refiner, max_pairs=64):
    world, ctx, handle, sampling = setup
    return construct_step(ctx, handle, sampling, QDyn(alpha=0.2), refiner, PairSettings(max_pairs=max_pairs))


def test_pairs_follow_the_rules_and_trl_format(setup):
    world = setup[0]
    result = run(setup, NoRefiner())
    rows = [json.loads(line) for line in result.pairs.path.read_text().splitlines()]
    assert rows and result.pairs.stats["pairs"] == len(rows)
    problems = {p.id: p for p in world.split("train")}
    for r in rows:
        assert set(PAIR_FIELDS) <= set(r)
        assert r["prompt"] == problems[r["problem_id"]].prompt
        assert world.grade(problems[r["problem_id"]], r["chosen"])
        assert not world.grade(problems[r["problem_id"]], r["rejected"])
        assert r["rejected_len"] > r["chosen_original_len"] == r["chosen_len"]  # refiner none
    hist = result.pairs.stats["pass_rate_histogram"]
    assert sum(hist.values()) == result.pairs.stats["problems"] == 12


def test_kl_refinement_shortens_chosen_only_and_keeps_answers(setup):
    world = setup[0]
    problems = {p.id: p for p in world.split("train")}
    result = run(setup, StepRefiner(accept="kl", k=8, epsilon=0.05, max_step_tokens=12))
    rows = [json.loads(line) for line in result.pairs.path.read_text().splitlines()]
    assert rows
    for r in rows:
        assert r["chosen_len"] <= r["chosen_original_len"]
        assert world.grade(problems[r["problem_id"]], r["chosen"])
    s = result.pairs.stats
    assert 0 <= s["refine_acceptance"] <= 1 and s["step_len_after"] <= s["step_len_before"]


def test_a_second_construction_is_a_cache_hit(setup, caplog):
    refiner = StepRefiner(accept="kl", k=4, max_step_tokens=12)
    first = run(setup, refiner)
    caplog.set_level("INFO")
    second = run(setup, refiner)
    assert second.pairs.path == first.pairs.path and second.pairs.stats == first.pairs.stats
    assert "stage pairs: cache hit" in caplog.text and "stage samples: cache hit" in caplog.text
    capped = run(setup, refiner, max_pairs=1)  # only the pair stage reruns
    assert (
        capped.pairs.stats["pairs"] == capped.pairs.stats["problems_with_pairs"]
        and "stage refined: cache hit" in caplog.text
    )


class DiesAfter:
    """The setup's real HFSampler, 'killed' after `calls` candidate-sampling calls (one per refined shard)."""

    def __init__(self, sampler, calls: int) -> None:
        self.sampler, self.calls = sampler, calls
        self.model, self.tokenizer = sampler.model, sampler.tokenizer

    def generate_ids(self, prompts, params, stop=None):
        if self.calls == 0:
            raise KeyboardInterrupt
        self.calls -= 1
        return self.sampler.generate_ids(prompts, params, stop)


def test_sharded_refinement_resumes_to_the_same_artifact(setup, tmp_path):
    world, ctx, handle, sampling = setup
    sampler = ctx.sampler(handle)
    refiner = StepRefiner(accept="kl", k=4, epsilon=0.05, max_step_tokens=12, shard_traces=3)
    whole = run(setup, refiner).refined
    records = [json.loads(line) for line in (whole.path / "refined.jsonl").read_text().splitlines()]
    shards = -(-len(records) // 3)
    assert shards >= 3
    assert whole.key != run(setup, replace(refiner, shard_traces=None)).refined.key  # shards draw other candidates

    def construct(store, live):
        choice = SharedSamplerChoice(lambda **_: live, ctx.sampler.settings)  # the samples' key is the setup's
        fresh = replace(ctx, store=store, sampler=choice)
        write_samples(fresh, handle, sampling)
        return construct_step(fresh, handle, sampling, QDyn(alpha=0.2), refiner, PairSettings())

    store = ArtifactStore(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        construct(store, DiesAfter(sampler, 2))
    assert len(list(store.scratch("refined", whole.key).glob("shard-*.jsonl"))) == 2  # finished shards survive
    resumed_calls = DiesAfter(sampler, shards - 2)  # exactly the missing shards are refined
    resumed = construct(store, resumed_calls).refined
    assert resumed_calls.calls == 0 and resumed.key == whole.key
    assert (resumed.path / "refined.jsonl").read_bytes() == (whole.path / "refined.jsonl").read_bytes()
    assert not store.scratch("refined", whole.key).exists()


def test_a_shards_refiner_draws_its_own_candidates():
    refiner = StepRefiner(k=4, seed=7, shard_traces=2)
    assert refiner.for_shard(0) is refiner  # one shard refines as the unsharded stage did
    seeds = {refiner.for_shard(i).params.seed for i in range(50)}
    assert len(seeds) == 50 and refiner.for_shard(3).k == 4 and refiner.for_shard(3).shard_traces == 2
    assert "shard_traces" not in StepRefiner(k=4).key_material()  # unset: the keys of earlier artifacts
    with pytest.raises(ValueError, match="refiner.shard_traces"):
        StepRefiner(shard_traces=0)
