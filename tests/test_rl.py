"""Online RL (method=grpo_*) through TRL's GRPOTrainer: a run trains a policy that differs from the base model,
evaluates it like every other policy, and the rewards TRL trained on are the pure functions' on the logged rollouts."""

import json
from collections import defaultdict

import pytest
import torch
from helpers import compose_config
from hydra.utils import instantiate
from safetensors.torch import load_file
from transformers import AutoTokenizer

from tsq.stages.recipe import build_parts, planned_keys, run_steps
from tsq.stages.run_metrics import RunMetrics
from tsq.training.length_rewards import Group, correctness, kimi_length_term
from tsq.training.rl import ROLLOUTS_FILE, RLSettings, rollout_groups, step_metrics

TINY = ["debug=smoke", "model.pretrain.steps=60", "model.pretrain.warmup_steps=1"]


@pytest.mark.slow
def test_a_grpo_run_trains_and_its_rewards_are_the_pure_functions(tmp_path):
    overrides = [*TINY, "method=grpo_kimi", "rl.max_steps=3", f"paths.cache_dir={tmp_path / 'cache'}"]
    cfg = compose_config([*overrides, f"paths.output_dir={tmp_path / 'run'}"])
    run_steps(cfg)
    record = RunMetrics.read(tmp_path / "run")
    assert list(record.timings) == ["base_model", "base_eval", "train", "trained_eval"]
    assert {r["role"] for r in record.rows} == {"base", "trained"}
    planned = planned_keys(*build_parts(cfg), rl=True)
    served = {(a["stage"], a["key"]): a["path"] for a in record.artifacts}
    policy_dir = served[("rl_policy", planned["rl_policy"])]
    assert ("eval", planned["eval_trained"]) in served
    base_dir = served[("base_model", planned["base_model"])]

    # the policy moved away from the base model
    base, policy = load_file(f"{base_dir}/model.safetensors"), load_file(f"{policy_dir}/model.safetensors")
    assert base.keys() == policy.keys()
    assert any(not torch.equal(base[k], policy[k]) for k in base)

    # every logged rollout: graded by the world, its length the tokens generated (EOS included), its reward the
    # pure functions' value on its group
    world = instantiate(cfg.data, _convert_="all")
    problems = {p.id: p for p in world.split("train")}
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    rollouts = [json.loads(line) for line in open(f"{policy_dir}/{ROLLOUTS_FILE}")]
    settings = instantiate(cfg.rl, _convert_="all")
    assert len(rollouts) == settings.max_steps * settings.completions_per_step == record.rl["rollouts"]
    groups = defaultdict(list)
    for r in rollouts:
        assert r["correct"] == world.grade(problems[r["problem_id"]], r["text"])
        ids = tokenizer(r["text"], add_special_tokens=False)["input_ids"]
        assert r["n_tokens"] == len(ids) + (0 if r["truncated"] else 1)
        groups[(r["step"], r["group"])].append(r)
    weight = cfg.reward.weight
    for members in groups.values():
        assert len(members) == settings.num_generations and len({m["problem_id"] for m in members}) == 1
        group = Group(
            tuple(m["n_tokens"] for m in members), tuple(m["correct"] for m in members), (False,) * len(members)
        )
        expected = [c + weight * x for c, x in zip(correctness(group), kimi_length_term(group), strict=True)]
        assert [m["reward"] for m in members] == pytest.approx(expected)
    # what TRL logged as each step's mean reward is the mean of these rewards
    history = json.loads(open(f"{policy_dir}/rl_summary.json").read())["log_history"]
    logged = [h["reward"] for h in history if "reward" in h]
    by_step = defaultdict(list)
    for r in rollouts:
        by_step[r["step"]].append(r["reward"])
    assert logged == pytest.approx([sum(v) / len(v) for _, v in sorted(by_step.items())], abs=1e-6)
    assert record.rl["generated_tokens"] == sum(r["n_tokens"] for r in rollouts)
    assert record.compute["generated_tokens"] == {"rollouts": record.rl["generated_tokens"]}


def test_rollouts_are_grouped_by_problem_or_refused():
    assert rollout_groups(["a", "a", "b", "b"], 2) == [range(0, 2), range(2, 4)]
    with pytest.raises(RuntimeError, match="mix problems"):
        rollout_groups(["a", "b", "b", "b"], 2)
    with pytest.raises(RuntimeError, match="not whole groups"):
        rollout_groups(["a", "a", "a"], 2)


def test_step_metrics_split_lengths_by_correctness():
    out = step_metrics([4, 6, 10, 20], [True, True, False, False], [False, False, False, True], {"c": [1, 1, 0, 0]})
    assert out["rollouts/correct_length"] == 5 and out["rollouts/incorrect_length"] == 15
    assert out["rollouts/cut_at_cap"] == 0.25 and out["rollouts/accuracy"] == 0.5 and out["reward_components/c"] == 0.5


@pytest.mark.parametrize(
    "bad", [{"num_generations": 1}, {"loss_type": "ppo"}, {"scale_rewards": "x"}, {"epsilon_high": 0.1}, {"lr": 0}]
)
def test_bad_rl_settings_are_refused_by_key(bad):
    with pytest.raises(ValueError, match="rl\\."):
        RLSettings(**bad)


def test_rl_with_several_processes_is_refused(tmp_path):
    cfg = compose_config(
        [*TINY, "method=grpo", "trainer=ddp_cpu", f"paths.cache_dir={tmp_path}", f"paths.output_dir={tmp_path}"]
    )
    with pytest.raises(ValueError, match="rl trains in one process"):
        build_parts(cfg)


def test_an_rl_split_the_world_lacks_is_refused_by_key(tmp_path):
    cfg = compose_config(
        [*TINY, "method=grpo", "rl.split=nope", f"paths.cache_dir={tmp_path}", f"paths.output_dir={tmp_path}"]
    )
    with pytest.raises(ValueError, match="rl.split='nope'"):
        build_parts(cfg)
