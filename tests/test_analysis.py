import pytest

from analysis.runs import collect_metrics
from tsq.stages.run_metrics import RunMetrics


def test_collect_reads_every_run_below_a_folder(tmp_path):
    for i, acc in enumerate([0.5, 0.75]):
        run = tmp_path / "multiruns" / "x" / str(i)
        run.mkdir(parents=True)
        rows = [{"role": "base", "level": "all", "acc": acc}, {"role": "base", "level": "1", "acc": 1.0}]
        RunMetrics(rows=rows).write(run)
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


def test_a_record_from_an_older_tsq_is_refused_by_name(tmp_path):
    import json

    (tmp_path / "metrics.json").write_text(json.dumps({"rows": [], "curves": []}))  # schema 1: no schema field
    with pytest.raises(ValueError, match="schema 1, this tsq reads schema 2"):
        RunMetrics.read(tmp_path)
    record = RunMetrics(rows=[{"role": "base", "level": "all", "acc": 0.5}], timings={"base_eval": 1.5})
    assert RunMetrics.read(record.write(tmp_path)) == record
