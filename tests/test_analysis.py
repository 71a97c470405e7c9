import json

import pytest

from analysis.collect import collect_metrics


def test_collect_reads_every_run_below_a_folder(tmp_path):
    for i, acc in enumerate([0.5, 0.75]):
        run = tmp_path / "multiruns" / "x" / str(i)
        run.mkdir(parents=True)
        rows = [{"role": "base", "level": "all", "acc": acc}, {"role": "base", "level": "1", "acc": 1.0}]
        (run / "metrics.json").write_text(json.dumps({"rows": rows, "curves": []}))
    frame = collect_metrics(tmp_path)
    assert len(frame) == 4
    assert sorted(frame[frame["level"] == "all"]["acc"]) == [0.5, 0.75]
    assert frame["run"].str.endswith(("0", "1")).all()


def test_collect_names_a_bad_file(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match="metrics.json"):
        collect_metrics(tmp_path)
    with pytest.raises(FileNotFoundError):
        collect_metrics(tmp_path / "empty")
