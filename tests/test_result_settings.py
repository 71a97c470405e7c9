"""Every setting that can change a result enters the key of the stage it affects.

The first test enumerates every numeric and boolean setting of the smoke config's groups, changes it, and checks
that some planned key moves, except the settings listed in NOT_IN_THESE_KEYS with the reason. A setting added
later that enters no key fails here until it is keyed or listed. The others check the graders' settings, which
live inside a benchmark world (a cache hit once served accuracy 0.031 where a fresh cache graded 0.0).
"""

import json

import pytest
from helpers import compose_config
from omegaconf import OmegaConf

from tsq.cache import NON_RESULT_SETTINGS, world_key
from tsq.data.benchmarks import BenchmarkSource
from tsq.stages.recipe import build_parts, planned_keys

GROUPS = ("data", "model", "sampling", "sampler", "selector", "refiner", "pairs", "loss", "train", "trainer", "eval")
NOT_IN_THESE_KEYS = {
    "eval.curve_points": "a read-out of the evaluation samples, computed at every run",
    "eval.forced_samples": "keys the forced_budget stage (tsq.evaluation.evaluate.Evaluator.forced)",
    "eval.forced_answer_tokens": "keys the forced_budget stage (tsq.evaluation.evaluate.Evaluator.forced)",
}


def planned(tmp_path, *overrides: str) -> dict[str, str]:
    cfg = compose_config(["debug=smoke", f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}", *overrides])
    return planned_keys(*build_parts(cfg))


def leaves(node, prefix: str):
    if isinstance(node, dict):
        for name, value in node.items():
            yield from leaves(value, f"{prefix}.{name}")
    else:
        yield prefix, node


def changed(value):
    """Other valid values to try for a setting (the first one the config accepts is used)."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value * 2, value - 1]
    if isinstance(value, float):
        return [value * 0.5, value * 1.5, value + 0.1, 0.5] if value else [0.5, 0.1]
    return []


def test_every_numeric_and_boolean_setting_moves_a_key_or_says_why_not(tmp_path):
    base = planned(tmp_path)
    cfg = OmegaConf.to_container(compose_config(["debug=smoke", f"paths.output_dir={tmp_path}"]), resolve=True)
    unkeyed, tried = [], 0
    for group in GROUPS:
        for setting, value in leaves(cfg[group], group):
            if setting.rsplit(".", 1)[-1] in NON_RESULT_SETTINGS or setting in NOT_IN_THESE_KEYS:
                continue  # NON_RESULT_SETTINGS: left out of every key by design (tsq/cache.py)
            for other in changed(value):
                try:
                    keys = planned(tmp_path, f"{setting}={json.dumps(other)}")
                except Exception:  # noqa: BLE001 - a value the config refuses; try the next one
                    continue
                tried += 1
                if keys == base:
                    unkeyed.append(setting)
                break
    assert tried > 50  # the enumeration reached the groups' settings
    assert unkeyed == []


def test_the_listed_exceptions_really_change_no_planned_key(tmp_path):
    base = planned(tmp_path)
    assert planned(tmp_path, "sampler.progress=false", "trainer.enable_progress_bar=false") == base
    assert planned(tmp_path, "sampling.allow_held_out_split=true", "eval.allow_train_split=true") == base
    assert planned(tmp_path, "eval.curve_points=7", "eval.forced_samples=3", "eval.forced_answer_tokens=9") == base


def math_world(**math_grader) -> BenchmarkSource:
    template = {"name": "plain", "use_chat_template": False}
    splits = {"test": [{"benchmark": "aime24", "limit": 3}]}
    return BenchmarkSource(name="math", splits=splits, template=template, math_grader=math_grader)


def code_world(tmp_path, **code_grader) -> BenchmarkSource:
    row = {
        "question_id": "q1",
        "question_content": "Print 1.",
        "public_test_cases": json.dumps([{"input": "", "output": "1", "testtype": "stdin"}]),
        "contest_date": "2024-09-01T00:00:00",
    }
    path = tmp_path / "lcb.jsonl"
    path.write_text(json.dumps(row) + "\n")
    template = {"name": "plain", "use_chat_template": False}
    splits = {"test": [{"benchmark": "livecodebench", "path": str(path)}]}
    grader = {"sandbox": "audit_hook", **code_grader}
    return BenchmarkSource(name="lcb", splits=splits, template=template, code_grader=grader)


@pytest.mark.parametrize(
    ("setting", "moves"),
    [({"fallback": "last_number"}, True), ({"timeout_s": 9}, True), ({"workers": 0}, False)],
)
def test_math_grader_settings_that_change_a_grade_move_the_world_key(setting, moves):
    assert (world_key(math_world(**setting)) != world_key(math_world())) is moves


@pytest.mark.parametrize(
    ("setting", "moves"),
    [
        ({"timeout_s": 2}, True),
        ({"memory_mb": 512}, True),
        ({"processes": 4}, True),
        ({"disk_mb": 8}, True),
        ({"file_size_mb": 2}, True),
        ({"workers": 1}, False),
    ],
)
def test_code_grader_settings_that_change_a_grade_move_the_world_key(tmp_path, setting, moves):
    assert (world_key(code_world(tmp_path, **setting)) != world_key(code_world(tmp_path))) is moves
