"""A phase's evidence packed into the repository and restored on a machine without its runs (analysis/evidence.py)."""

import json

import pandas as pd
import pytest

from analysis.evidence import NotReproduced, archive_path, archives, disagreements, pack, read_members, restore
from analysis.runs import Run
from tsq.sampling.graded import read_samples
from tsq.stages.run_metrics import RunMetrics


def finished_phase(tmp_path):
    """A phase folder as a multirun leaves it: two jobs, each with a metrics.json whose evaluations point into a
    cache (graded samples with text; the trained model of job 1 with forced-budget rows too)."""
    cache, sweep = tmp_path / "cache", tmp_path / "logs" / "exp" / "search" / "train.lr1e-05"
    samples = pd.DataFrame(
        {"problem_id": ["p1", "p1", "p2"], "sample": [0, 1, 0], "text": ["a b", "<think> </think> 3", "c"],
         "n_tokens": [12, 3, 7], "correct": [True, False, True], "level": ["1", "1", "2"]}
    )  # fmt: skip
    for job in ("0", "1"):
        evaluations = {}
        for role in ("base", "trained"):
            folder = cache / "eval" / f"{role}{job}"
            folder.mkdir(parents=True)
            samples.assign(n_tokens=samples["n_tokens"] + int(job)).to_json(
                folder / "samples.jsonl", orient="records", lines=True
            )
            evaluations[role] = {"split": "dev", "path": str(folder)}
        forced = cache / "forced_budget" / job
        forced.mkdir(parents=True)
        (forced / "forced.jsonl").write_text(json.dumps({"problem_id": "p1", "budget": 8, "correct": True}) + "\n")
        evaluations["trained"]["forced_path"] = str(forced)
        record = RunMetrics(run={"overrides": [f"seed={job}", "train.lr=1e-05"]}, evaluations=evaluations)
        record.write(sweep / job)
        (sweep / job / "config.yaml").write_text(f"seed: {job}\n")
    return sweep, samples


def test_a_packed_phase_restores_elsewhere_with_its_samples_less_their_text(tmp_path):
    sweep, samples = finished_phase(tmp_path)
    entry = {"experiment": "exp", "phase": "search", "command": "python run.py -m ...", "wall_s": 61.5}
    archive = pack("exp/search/train.lr1e-05", sweep, entry, tmp_path / "evidence")
    assert archive == tmp_path / "evidence" / "exp" / "search" / "train.lr1e-05.tar.gz"
    assert pack("exp/search/train.lr1e-05", sweep, entry, tmp_path / "evidence").read_bytes() == archive.read_bytes()
    (row,) = archives(tmp_path / "evidence")
    assert row["phase"] == "exp/search/train.lr1e-05" and row["jobs"] == 2 and row["wall_s"] == 61.5

    elsewhere = tmp_path / "elsewhere" / "exp" / "search" / "train.lr1e-05"
    restored = restore("exp/search/train.lr1e-05", elsewhere, tmp_path / "evidence")
    assert restored == {**entry, "restored_from": "train.lr1e-05.tar.gz"}
    for job in ("0", "1"):
        record = RunMetrics.read(elsewhere / job)
        assert record.run["overrides"][0] == f"seed={job}"
        assert (elsewhere / job / "config.yaml").read_text() == f"seed: {job}\n"
        for role in ("base", "trained"):
            where = record.evaluations[role]
            assert where["path"].startswith(str(elsewhere / job)) and "cache" not in where["path"]
            assert where["packed_from"]["path"] == str(tmp_path / "cache" / "eval" / f"{role}{job}")
            frame = read_samples(f"{where['path']}/samples.jsonl")
            assert "text" not in frame.columns  # the responses are left out, every other column is kept as it was
            expected = samples.drop(columns="text").assign(n_tokens=samples["n_tokens"] + int(job))
            pd.testing.assert_frame_equal(frame[expected.columns], expected)
        # the readers of the tables find the restored samples where the metrics point
        assert Run(record, {}, "row").frame("trained")["n_tokens"].tolist() == [
            12 + int(job),
            3 + int(job),
            7 + int(job),
        ]
        forced = pd.read_json(f"{record.evaluations['trained']['forced_path']}/forced.jsonl", lines=True)
        assert forced["budget"].tolist() == [8]
    # a job that finished here is not written over
    with pytest.raises(FileExistsError, match="finished here"):
        restore("exp/search/train.lr1e-05", elsewhere, tmp_path / "evidence")
    assert restore("exp/search/train.lr5e-06", elsewhere, tmp_path / "evidence") is None  # no archive: run it


def test_packing_refuses_a_phase_without_finished_jobs_or_with_missing_samples(tmp_path):
    with pytest.raises(ValueError, match="no finished job"):
        pack("exp/search/x", tmp_path, {}, tmp_path / "evidence")
    sweep, _ = finished_phase(tmp_path)
    (tmp_path / "cache" / "eval" / "trained1" / "samples.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="trained evaluation's samples"):
        pack("exp/search/x", sweep, {}, tmp_path / "evidence")
    assert not archive_path("exp/search/x", tmp_path / "evidence").exists()  # nothing half-written


def test_packing_refuses_a_phase_whose_shared_evaluation_came_out_differently_on_another_machine(tmp_path):
    evidence = tmp_path / "evidence"
    first, _ = finished_phase(tmp_path / "machine1")
    pack("exp/search/train.lr1e-05", first, {}, evidence)
    # another machine runs the next grid point: the same base-model evaluations (same cache keys), other trained ones
    second, _ = finished_phase(tmp_path / "machine2")
    for job in ("0", "1"):
        (tmp_path / "machine2" / "cache" / "eval" / f"trained{job}").rename(second / f"trained{job}")
        record = RunMetrics.read(second / job)
        record.evaluations["trained"]["path"] = str(second / f"trained{job}")
        record.write(second / job)
    pack("exp/search/train.lr2e-05", second, {}, evidence)  # the base evaluations agree: packed
    # a third machine's base model differs (one response one token longer): its phase is not packed
    third, _ = finished_phase(tmp_path / "machine3")
    base = tmp_path / "machine3" / "cache" / "eval" / "base1" / "samples.jsonl"
    base.write_text(base.read_text().replace('"n_tokens":8', '"n_tokens":9', 1))
    with pytest.raises(
        NotReproduced, match=r"eval/base1/samples.jsonl: \w{12} in .*train.lr1e-05.tar.gz.*lr5e-05"
    ) as e:
        pack("exp/search/train.lr5e-05", third, {}, evidence)
    assert "eval/base0" not in str(e.value)  # only the evaluation that differs is named
    assert not archive_path("exp/search/train.lr5e-05", evidence).exists()


def test_disagreements_name_each_version_and_its_sources():
    digests = {
        "a": {"eval/k/s": "1" * 64, "eval/j/s": "3" * 64},
        "b": {"eval/k/s": "2" * 64},
        "c": {"eval/k/s": "1" * 64},
    }
    assert disagreements(digests) == ["eval/k/s: 111111111111 in a, c; 222222222222 in b"]
    assert disagreements({"a": digests["a"], "c": digests["c"]}) == []


def test_a_restored_phase_can_move_and_still_be_read_and_packed(tmp_path):
    """The restored metrics point at their samples relative to the job's folder: a logs folder restored in one
    checkout (a worktree) and read from another finds them, and packs to the archive it came from."""
    sweep, _ = finished_phase(tmp_path)
    archive = pack("exp/search/train.lr1e-05", sweep, {"wall_s": 1.0}, tmp_path / "evidence")
    restored = tmp_path / "checkout1" / "exp" / "search" / "train.lr1e-05"
    restore("exp/search/train.lr1e-05", restored, tmp_path / "evidence")
    moved = tmp_path / "checkout2"
    (tmp_path / "checkout1").rename(moved)
    for job in ("0", "1"):
        record = RunMetrics.read(moved / "exp" / "search" / "train.lr1e-05" / job)
        assert record.evaluations["trained"]["path"] == str(
            moved / "exp/search/train.lr1e-05" / job / "evidence/trained"
        )
        assert len(Run(record, {}, "row").frame("base")) == 3
    repacked = pack(
        "exp/search/train.lr1e-05", moved / "exp" / "search" / "train.lr1e-05", {"wall_s": 1.0}, tmp_path / "again"
    )
    samples = {n: d for n, d in read_members(repacked).items() if n.endswith("samples.jsonl")}
    assert (
        samples == {n: d for n, d in read_members(archive).items() if n.endswith("samples.jsonl")} and len(samples) == 4
    )
