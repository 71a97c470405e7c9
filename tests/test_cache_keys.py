"""What a stage's cache key is made of, checked on the composed default configs.

The expected keys below were computed at commit 64049a5 (before stages went through
`ArtifactStore.cached`) with that commit's own key formulas, for `python run.py` and `debug=smoke`.
The refactor kept them, except the policy's: the trainer's `enable_progress_bar` no longer enters it
(`tsq.cache.NON_RESULT_SETTINGS`). The default base model has since moved to
`model.pretrain.batch_size=32`; the first row pins the batch the keys were computed with (64). Since the
one length convention (a completion's length counts the EOS that ended it), the stages whose artifacts
hold lengths (samples, eval, refined, pairs, policy) have new versions and so new keys; the base model's
key, which no length enters, is still the one of 64049a5. World v2 became the default world after them; the
keys are those of world v1 (`data=synthetic_v1`), which kept its key.
"""

import pytest
from helpers import compose_config

from tsq.pipeline import build_parts, planned_keys

BEFORE_REFACTOR = {
    ("data=synthetic_v1", "model.pretrain.batch_size=64"): {
        "base_model": "aed2bcf7d6ea7227",
        "eval_base": "fefabaf82fdee854",
        "samples": "e065ddeb99e8f899",
        "refined": "1130fd736b4a3fa2",
        "pairs": "53a26ee45f5f928a",
        "ref_logps": "8f3dbb01aacbc56c",
        "policy": "47b01891d3360237",
    },
    ("data=synthetic_v1", "debug=smoke"): {
        "base_model": "0621d3f0a7c1989d",
        "eval_base": "8eca3ff55aa9d10e",
        "samples": "6f903798c5c83ff0",
        "refined": "0f702d9bcf01ece0",
        "pairs": "18232e88cddb29d3",
        "ref_logps": "c077dba48931feb8",
        "policy": "d8145ecc4ba4f1ef",
    },
}
KEPT = {"base_model"}  # every later stage's version changed with the length convention


def keys(tmp_path, *overrides: str) -> dict[str, str]:
    cfg = compose_config([*overrides, f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}"])
    return planned_keys(*build_parts(cfg))


@pytest.mark.parametrize("overrides", list(BEFORE_REFACTOR))
def test_base_model_keys_are_the_ones_before_the_cache_helper(overrides, tmp_path):
    now = keys(tmp_path, *overrides)
    before = BEFORE_REFACTOR[overrides]
    assert {k: now[k] for k in KEPT} == {k: before[k] for k in KEPT}
    assert all(now[k] != before[k] for k in before if k not in KEPT)


def test_progress_bars_change_no_key_and_result_settings_change_only_their_stages(tmp_path):
    base = keys(tmp_path, "debug=smoke")
    assert keys(tmp_path, "debug=smoke", "sampler.progress=false", "trainer.enable_progress_bar=false") == base
    lr = keys(tmp_path, "debug=smoke", "train.lr=1e-3")
    assert {k for k in base if lr[k] != base[k]} == {"policy", "eval_trained"}
    cap = keys(tmp_path, "debug=smoke", "pairs.max_pairs=2")
    assert {k for k in base if cap[k] != base[k]} == {"pairs", "ref_logps", "policy", "eval_trained"}
    epsilon = keys(tmp_path, "debug=smoke", "refiner.epsilon=0.01")
    assert {k for k in base if epsilon[k] != base[k]} == {"refined", "pairs", "ref_logps", "policy", "eval_trained"}
    temperature = keys(tmp_path, "debug=smoke", "eval.temperature=1.0")
    assert {k for k in base if temperature[k] != base[k]} == {"eval_base", "eval_trained"}
