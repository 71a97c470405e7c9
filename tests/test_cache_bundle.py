"""Carrying finished cache artifacts to another machine (tsq/cache_bundle.py): what is packed, what is left out and
why, and that an unpacked artifact is the one packed or nothing."""

import gzip
import io
import tarfile

import pytest

from tsq.cache import ArtifactStore, CorruptArtifact
from tsq.cache_bundle import main, pack_bundle, unpack_bundle


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    """A store with a small artifact (a nested file), a large one (3000 bytes) and a build that never finished."""
    store = ArtifactStore(tmp_path / "here")
    with store.build("pairs", "aaaa") as folder:
        (folder / "pairs.jsonl").write_text('{"chosen": 1}\n')
        (folder / "export").mkdir()
        (folder / "export" / "train.jsonl").write_text("x\n")
    with store.build("policy", "bbbb") as folder:
        (folder / "model.bin").write_bytes(b"\0" * 3000)
    (store.root / "samples" / "cccc.partial").mkdir(parents=True)  # a build's scratch
    (store.root / "samples" / "dddd").mkdir()  # a folder without artifact.json
    return store


def test_a_bundle_carries_the_small_finished_artifacts_and_names_what_it_left(store, tmp_path):
    report = pack_bundle(store, tmp_path / "bundle.tar.gz", max_bytes=1000)
    assert report.done == ["pairs/aaaa"]
    assert report.skipped["policy/bbbb"] == "3,000 bytes, over the limit of 1,000"
    assert report.skipped["samples/dddd"] == "unfinished (no artifact.json)"
    assert "samples/cccc.partial" in report.skipped  # a scratch folder is not an artifact either
    there = ArtifactStore(tmp_path / "there")
    restored = unpack_bundle(tmp_path / "bundle.tar.gz", there)
    assert restored.done == ["pairs/aaaa"] and there.usable("pairs", "aaaa")
    assert (there.path("pairs", "aaaa") / "export" / "train.jsonl").read_text() == "x\n"
    assert there.meta("pairs", "aaaa") == store.meta("pairs", "aaaa")
    assert not there.exists("policy", "bbbb")
    again = unpack_bundle(tmp_path / "bundle.tar.gz", there)  # what the store holds is kept
    assert again.done == [] and again.skipped == {"pairs/aaaa": "already in the store"}
    # packing the same artifacts twice gives the same bytes
    pack_bundle(store, tmp_path / "again.tar.gz", max_bytes=1000)
    assert (tmp_path / "again.tar.gz").read_bytes() == (tmp_path / "bundle.tar.gz").read_bytes()


def test_stages_select_what_is_packed_and_an_empty_bundle_is_refused(store, tmp_path):
    assert pack_bundle(store, tmp_path / "b.tar.gz", max_bytes=10_000, stages=["policy"]).done == ["policy/bbbb"]
    with pytest.raises(ValueError, match="no finished artifact to pack"):
        pack_bundle(store, tmp_path / "c.tar.gz", max_bytes=10, stages=["pairs"])
    assert not (tmp_path / "c.tar.gz").exists()


def rewritten(bundle, tmp_path, change) -> object:
    """The bundle with each member passed through `change(name, data) -> (name, data)`."""
    out = tmp_path / "changed.tar.gz"
    with tarfile.open(bundle, "r:gz") as src, gzip.open(out, "wb") as gz, tarfile.open(fileobj=gz, mode="w") as dst:
        for member in src.getmembers():
            name, data = change(member.name, src.extractfile(member).read())
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return out


def test_an_altered_artifact_is_refused_and_leaves_nothing_behind(store, tmp_path):
    pack_bundle(store, tmp_path / "bundle.tar.gz", max_bytes=1000)
    altered = rewritten(
        tmp_path / "bundle.tar.gz", tmp_path, lambda n, d: (n, b'{"chosen": 2}\n' if n.endswith("pairs.jsonl") else d)
    )
    there = ArtifactStore(tmp_path / "there")
    with pytest.raises(CorruptArtifact, match="pairs/aaaa.*pairs.jsonl"):
        unpack_bundle(altered, there)
    assert not there.exists("pairs", "aaaa") and not list((there.root / "pairs").iterdir())
    escaping = rewritten(tmp_path / "bundle.tar.gz", tmp_path, lambda n, d: (n.replace("pairs/", "../", 1), d))
    with pytest.raises(ValueError, match="not a file below <stage>/<key>/"):
        unpack_bundle(escaping, there)


def test_the_command_line_packs_and_unpacks(store, tmp_path, capsys):
    assert main(["pack", str(store.root), str(tmp_path / "b.tar.gz"), "--max-mb", "0.001"]) == 0
    assert main(["unpack", str(tmp_path / "b.tar.gz"), str(tmp_path / "there")]) == 0
    printed = capsys.readouterr().out
    assert "packed: pairs/aaaa" in printed and "left: policy/bbbb" in printed and "restored: pairs/aaaa" in printed
    assert ArtifactStore(tmp_path / "there").usable("pairs", "aaaa")


def test_an_artifact_that_fails_its_manifest_check_is_not_packed(store, tmp_path):
    (store.path("pairs", "aaaa") / "pairs.jsonl").write_text('{"chosen": 2}\n')  # same size, other bytes
    report = pack_bundle(store, tmp_path / "b.tar.gz", max_bytes=10_000)
    assert report.skipped["pairs/aaaa"] == "fails its manifest check" and report.done == ["policy/bbbb"]
