import json

import pytest

from tsq.cache import ArtifactStore, atomic_write_json, stage_key


def test_stage_key_is_stable_and_sensitive():
    a = stage_key("eval", 1, {"n": 16, "t": 0.6}, {"model": "abc"})
    assert a == stage_key("eval", 1, {"t": 0.6, "n": 16}, {"model": "abc"})  # key order irrelevant
    assert a == stage_key("eval", 1, {"n": 16.0, "t": 0.6}, {"model": "abc"})  # 16 == 16.0
    assert a != stage_key("eval", 1, {"n": 8, "t": 0.6}, {"model": "abc"})
    assert a != stage_key("eval", 2, {"n": 16, "t": 0.6}, {"model": "abc"})
    assert a != stage_key("eval", 1, {"n": 16, "t": 0.6}, {"model": "abd"})


def test_failed_build_leaves_nothing_behind(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError):
        with store.build("s", "k") as d:
            (d / "half.txt").write_text("partial")
            raise RuntimeError("killed")
    assert not store.exists("s", "k")
    assert list((tmp_path / "s").iterdir()) == []


def test_finished_build_is_visible_with_its_files(tmp_path):
    store = ArtifactStore(tmp_path)
    with store.build("s", "k", {"note": 1}) as d:
        (d / "x.txt").write_text("done")
    assert store.exists("s", "k")
    assert (store.path("s", "k") / "x.txt").read_text() == "done"
    assert store.meta("s", "k")["note"] == 1


def test_atomic_write_replaces_whole_file(tmp_path):
    path = atomic_write_json(tmp_path / "m.json", {"a": 1})
    atomic_write_json(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
