"""Golden cache keys: every stage's key for the default, smoke, TL;DR and RL configs, pinned.

A key names an artifact on disk; a change that moves one silently rebuilds (or orphans) everything after it.
These keys are the ones the stages compute from the composed configs (`tsq.stages.recipe.planned_keys`,
checked against the artifacts a real run builds in tests/test_run.py). A change that moves a key fails here
until it is deliberate: then bump the stage's version or say in the commit why the key moved, and update the
table. Keys last moved when swappable parts were keyed by registered names (`tsq.cache.ConfiguredPart`) instead
of their module paths (refined, pairs and everything after them; base_model, eval_base and samples kept theirs),
when ref_logps's key took in `train.rows_per_forward` and `train.logit_chunk_tokens`, which its values depend
on in the last bits, and when the evaluations took the run's `seed` (0; it was a fixed 1234) so that a seed
redraws them too, and when TL;DR's kept checkpoint had to follow a re-weighting (tldr_policy version 3) and
its settings gained `schedule_end` (the fixed-schedule ablation), and when a training of `train.max_steps` steps
had reference log-probs computed for the pairs it reads only (ref_logps's key names what decides them).
"""

import pytest
from helpers import compose_config

from tsq.stages.recipe import build_parts, planned_keys

GOLDEN = {
    (): {
        "base_model": "1dd27f0d3c18acf3",
        "eval_base": "f6ca1b9ec800c625",
        "samples": "add026a9aa26e16a",
        "refined": "c476dfff1045cec8",
        "pairs": "8767bd575a3fa789",
        "pairs_export": "b8c2f568ba6b7b8a",
        "ref_logps": "4b3e9c970c6f659a",
        "policy": "2ba4befd7fac5e0b",
        "eval_trained": "dec9482d3951d6d0",
    },
    ("debug=smoke",): {
        "base_model": "d4fcb8c3491c57f6",
        "eval_base": "14e9b24d3abbec43",
        "samples": "826f6dca3ffc302e",
        "refined": "796b9fc719f4a533",
        "pairs": "24f681fd0bd6ad5e",
        "pairs_export": "d2405ddc4dc3336d",
        "ref_logps": "660745b785cffe1b",
        "policy": "6a433fac37520c12",
        "eval_trained": "2337bdd1b3f9e8e0",
    },
    ("method=tldr",): {
        "base_model": "1dd27f0d3c18acf3",
        "eval_base": "f6ca1b9ec800c625",
        "samples": "add026a9aa26e16a",
        "short_model": "be241d697b09780f",
        "system1_samples": "23b5ff58f2306881",
        "eval_bound_long": "7df1a20fc5e3b84f",
        "eval_bound_short": "a364f413816fd30c",
        "tldr_policy": "dfc81b7b47083ff9",
        "eval_trained": "5649797e9f3442ab",
    },
    ("method=tldr", "debug=smoke"): {
        "base_model": "d4fcb8c3491c57f6",
        "eval_base": "14e9b24d3abbec43",
        "samples": "826f6dca3ffc302e",
        "short_model": "7b5ee82f7c681086",
        "system1_samples": "d84cfb5ae29f669e",
        "eval_bound_long": "096845daed8b032f",
        "eval_bound_short": "3d7791d9a287eeef",
        "tldr_policy": "eb5e5076d703b0b6",
        "eval_trained": "024d6ea215138d67",
    },
    ("method=grpo_kimi",): {
        "base_model": "1dd27f0d3c18acf3",
        "eval_base": "f6ca1b9ec800c625",
        "rl_policy": "2346f0c3abeca816",
        "eval_trained": "770796133a0169bb",
    },
    ("method=grpo_kimi", "debug=smoke"): {
        "base_model": "d4fcb8c3491c57f6",
        "eval_base": "14e9b24d3abbec43",
        "rl_policy": "c015f5ccad089084",
        "eval_trained": "470d59774fb1cfe9",
    },
}


def keys(tmp_path, *overrides: str) -> dict[str, str]:
    cfg = compose_config([*overrides, f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}"])
    return planned_keys(*build_parts(cfg), tldr="tldr" in cfg.steps, rl="rl" in cfg.steps)


@pytest.mark.parametrize("overrides", list(GOLDEN), ids=lambda o: " ".join(o) or "default")
def test_every_stage_key_is_the_pinned_one(overrides, tmp_path):
    assert keys(tmp_path, *overrides) == GOLDEN[overrides]


def test_a_part_moved_to_another_module_keeps_its_key_and_an_unregistered_part_has_none():
    import types
    from dataclasses import dataclass

    from tsq.cache import PARTS
    from tsq.selection import Selector

    def define(module: str) -> type:
        """The class statement `class Mover(Selector, part="selector/test_mover"): alpha: float = 0.5` in `module`."""

        def body(ns: dict) -> None:
            ns.update({"__module__": module, "__annotations__": {"alpha": float}, "alpha": 0.5})

        return dataclass(types.new_class("Mover", (Selector,), {"part": "selector/test_mover"}, body))

    try:
        before = define("tsq.old_home")(alpha=0.3).key_material()
        with pytest.raises(ValueError, match="taken by tsq.old_home.Mover"):
            define("tsq.new_home")  # two classes cannot claim one name in one process
        del PARTS["selector/test_mover"]  # a fresh process after the file moved
        after = define("tsq.new_home")(alpha=0.3).key_material()
    finally:
        PARTS.pop("selector/test_mover", None)
    assert before == after == {"part": "selector/test_mover", "alpha": 0.3}

    @dataclass
    class Unnamed(Selector):
        def k(self, c: int, n: int) -> int:
            return 1

    with pytest.raises(TypeError, match="no registered part name"):
        Unnamed().key_material()


def test_progress_bars_change_no_key_and_result_settings_change_only_their_stages(tmp_path):
    base = keys(tmp_path, "debug=smoke")
    assert keys(tmp_path, "debug=smoke", "sampler.progress=false", "trainer.enable_progress_bar=false") == base
    lr = keys(tmp_path, "debug=smoke", "train.lr=1e-3")
    assert {k for k in base if lr[k] != base[k]} == {"policy", "eval_trained"}
    cap = keys(tmp_path, "debug=smoke", "pairs.max_pairs=2")
    assert {k for k in base if cap[k] != base[k]} == {"pairs", "pairs_export", "ref_logps", "policy", "eval_trained"}
    epsilon = keys(tmp_path, "debug=smoke", "refiner.epsilon=0.01")
    after_refined = {"refined", "pairs", "pairs_export", "ref_logps", "policy", "eval_trained"}
    assert {k for k in base if epsilon[k] != base[k]} == after_refined
    temperature = keys(tmp_path, "debug=smoke", "eval.temperature=1.0")
    assert {k for k in base if temperature[k] != base[k]} == {"eval_base", "eval_trained"}


@pytest.mark.parametrize("overrides", [("debug=smoke",), ("method=tldr", "debug=smoke")], ids=["preference", "tldr"])
def test_a_seed_redraws_every_artifact_below_the_base_model(overrides, tmp_path):
    first, second = keys(tmp_path, *overrides), keys(tmp_path, *overrides, "seed=1")
    kept = {k for k in first if first[k] == second[k]}
    assert kept == ({"base_model", "short_model"} & set(first)), kept
