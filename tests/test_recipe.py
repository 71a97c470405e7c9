"""The recipe in process (no `run.py` start): its steps call the stages in order, every artifact lands under the key
the settings alone give, and the run record is written and read back through its one schema."""

from helpers import compose_config

from tsq.stages.recipe import build_parts, planned_keys, run_steps
from tsq.stages.run_metrics import RunMetrics

TINY = ["debug=smoke", "model.pretrain.steps=5", "model.pretrain.warmup_steps=1"]  # a base model in about a second


def test_the_recipe_runs_its_steps_and_records_them(tmp_path):
    overrides = [*TINY, "steps=[base_eval,construct]", f"paths.cache_dir={tmp_path / 'cache'}"]
    cfg = compose_config([*overrides, f"paths.output_dir={tmp_path / 'run'}"])
    result = run_steps(cfg)
    record = RunMetrics.read(tmp_path / "run")
    assert result.metrics_path == tmp_path / "run" / "metrics.json" and record == result.metrics
    assert list(record.timings) == ["base_model", "base_eval", "construct"]
    assert {r["role"] for r in record.rows} == {"base"} and record.training is None
    assert record.construction is not None and record.evaluations["base"]["split"] == "test"
    built = {a["stage"] for a in record.artifacts}
    assert {"base_model", "eval", "samples", "refined", "pairs"} <= built
    planned = planned_keys(*build_parts(cfg))
    served = {(a["stage"], a["key"]) for a in record.artifacts}
    for name in ("base_model", "samples", "refined", "pairs"):
        assert (name, planned[name]) in served, name
    assert ("eval", planned["eval_base"]) in served


def test_a_step_list_the_recipe_cannot_run_is_refused_by_name(tmp_path):
    import pytest

    for steps, message in (("[train]", "train needs construct"), ("[nope]", "unknown step")):
        cfg = compose_config([*TINY, f"steps={steps}", f"paths.cache_dir={tmp_path}", f"paths.output_dir={tmp_path}"])
        with pytest.raises(ValueError, match=message):
            build_parts(cfg)
