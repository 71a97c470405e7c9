import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from tsq.cache import ArtifactStore, Stage, atomic_write_json, stage_key


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


STAGE = Stage("s", 1)


def build_counting(calls: list, text: str = "payload"):
    def build(job):
        calls.append(job.dir)
        (job.dir / "data.txt").write_text(text)
        (job.dir / "sub").mkdir()
        (job.dir / "sub" / "more.bin").write_bytes(b"\x00\x01" * 100)

    return build


@pytest.mark.parametrize(
    ("damage", "verify", "caught"),
    [
        (lambda d: (d / "data.txt").write_text("pAyload"), "hash", True),  # same size, other bytes
        (lambda d: (d / "data.txt").write_text("pAyload"), "size", False),  # what verify=size cannot see
        (lambda d: (d / "data.txt").write_text("pay"), "size", True),  # cut short
        (lambda d: (d / "sub" / "more.bin").unlink(), "size", True),
        (lambda d: (d / "extra.txt").write_text("x"), "size", True),
        (lambda d: (d / "artifact.json").write_text('{"stage": "s", "files": {'), "size", True),  # torn meta
    ],
)
def test_a_damaged_artifact_is_moved_aside_and_rebuilt_never_used(tmp_path, caplog, damage, verify, caught):
    store, calls = ArtifactStore(tmp_path, verify=verify), []
    first = store.cached(STAGE, {"a": 1}, None, build_counting(calls))
    assert first.built and (first.path / "artifact.json").is_file()
    damage(first.path)
    caplog.set_level("INFO")
    again = store.cached(STAGE, {"a": 1}, None, build_counting(calls))
    assert again.built is caught and len(calls) == (2 if caught else 1)
    if caught:
        assert (again.path / "data.txt").read_text() == "payload"
        assert "is corrupt" in caplog.text and str(first.path) in caplog.text
        assert len(list(tmp_path.glob("s/.*.corrupt-*"))) == 1  # kept for inspection, never read again


def test_one_process_builds_while_another_waits_for_it(tmp_path):
    """Two processes ask for the same missing artifact at once: one builds, the other waits and reads it."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    log = tmp_path / "builds.log"
    procs = [ctx.Process(target=_slow_build, args=(str(tmp_path / "cache"), str(log))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text().count("built") == 1
    built = [p for p in (tmp_path / "cache" / "s").iterdir() if (p / "artifact.json").is_file()]
    assert len(built) == 1 and not list((tmp_path / "cache" / "s").glob(".*.tmp"))


def _slow_build(root: str, log: str) -> None:
    import time

    def build(job):
        with open(log, "a") as fh:
            fh.write("built\n")
        time.sleep(1.0)
        (job.dir / "x").write_text("x")

    artifact = ArtifactStore(root).cached(STAGE, {"slow": 1}, None, build)
    assert (artifact.path / "x").read_text() == "x"


def test_temporary_folders_of_killed_builders_are_removed_and_live_ones_kept(tmp_path):
    import socket
    import subprocess
    import sys

    store = ArtifactStore(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    stale = tmp_path / "s" / f".k~{host}~{dead.stdout.strip()}~abc.tmp"
    live = tmp_path / "s" / f".k~{host}~{os.getpid()}~def.tmp"
    other_host = tmp_path / "s" / f".k~not-{host}~1~ghi.tmp"
    for d in (stale, live, other_host):
        d.mkdir(parents=True)
    store.cached(STAGE, {"b": 2}, None, build_counting([]))
    assert not stale.exists() and live.exists() and other_host.exists()


@pytest.mark.parametrize(
    "manifest_text",
    [
        "{}",
        "[]",
        "null",
        '{"stage": "s", "key": "k"}',  # no files: what a pre-manifest tsq wrote
        '{"files": {"data.txt": {"sha256": "' + "0" * 64 + '"}}}',  # an entry without its size
        '{"files": {"data.txt": {"size": 3}, "sub/more.bin": {"size": 200}}}',  # entries without their hashes
        '{"files": {"data.txt": null}}',
        None,  # artifact.json deleted
    ],
)
def test_a_missing_or_malformed_manifest_makes_the_artifact_untrusted_and_the_rebuild_replaces_it(
    tmp_path, caplog, manifest_text
):
    store, calls = ArtifactStore(tmp_path), []
    first = store.cached(STAGE, {"a": 1}, None, build_counting(calls, "old"))
    meta = first.path / "artifact.json"
    if manifest_text is None:
        meta.unlink()
    else:
        meta.write_text(manifest_text)
    caplog.set_level("INFO")
    again = store.cached(STAGE, {"a": 1}, None, build_counting(calls, "new"))
    assert again.built and len(calls) == 2
    assert (again.path / "data.txt").read_text() == "new"  # the rebuild is what is used, not the old files
    assert store.usable("s", again.key)
    assert "is corrupt" in caplog.text and str(first.path) in caplog.text and "used unchecked" not in caplog.text
    assert len(list(tmp_path.glob("s/.*.corrupt-*"))) == 1


def test_pre_manifest_artifacts_are_used_only_when_a_setting_says_so(tmp_path, caplog):
    calls = []
    first = ArtifactStore(tmp_path).cached(STAGE, {"a": 1}, None, build_counting(calls, "old"))
    (first.path / "artifact.json").write_text(json.dumps({"stage": "s", "key": first.key}))
    caplog.set_level("INFO")
    legacy = ArtifactStore(tmp_path, accept_unmanifested=True).cached(STAGE, {"a": 1}, None, build_counting(calls))
    assert not legacy.built and len(calls) == 1 and "used unchecked (paths.accept_unmanifested)" in caplog.text


def test_artifacts_are_written_with_the_umasks_modes(tmp_path):
    old = os.umask(0o002)
    try:
        art = ArtifactStore(tmp_path).cached(STAGE, {"a": 1}, None, build_counting([]))
    finally:
        os.umask(old)
    assert stat.S_IMODE(art.path.stat().st_mode) == 0o775
    assert stat.S_IMODE((art.path / "sub").stat().st_mode) == 0o775
    for name in ("data.txt", "sub/more.bin", "artifact.json"):
        assert stat.S_IMODE((art.path / name).stat().st_mode) == 0o664, name


def as_other_user(uid: int, gid: int, job) -> tuple[int, str]:
    """Run `job()` in a forked child under another uid and gid; (exit status, what it reported)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        try:
            os.setgroups([gid])
            os.setgid(gid)
            os.setuid(uid)
            message = repr(job())
            code = 0
        except BaseException as err:  # noqa: BLE001 - reported to the parent
            message, code = f"{type(err).__name__}: {err}", 1
        os.write(write, message.encode())
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as fh:
        message = fh.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), message


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to a second uid needs root")
def test_a_cache_shared_by_a_group_works_for_two_users_and_a_permission_error_is_not_corruption():
    uid, gid = 54321, 54321
    root = Path(tempfile.mkdtemp(prefix="tsq-shared-cache-"))  # pytest's own tmp folders are 0700
    os.chown(root, 0, gid)
    root.chmod(0o2775)  # group-owned, new folders inherit the group: a group's shared cache
    old = os.umask(0o002)
    try:
        mine = ArtifactStore(root).cached(STAGE, {"a": 1}, None, build_counting([]))
        # the other user reads the first user's artifact and builds one the first user then reads
        code, said = as_other_user(uid, gid, lambda: (
            ArtifactStore(root).usable("s", mine.key),
            ArtifactStore(root).cached(STAGE, {"a": 2}, None, build_counting([], "theirs")).key,
        ))  # fmt: skip
        assert code == 0, said
        usable, their_key = eval(said)  # noqa: S307 - a tuple the child wrote
        assert usable is True
        theirs = ArtifactStore(root).cached(STAGE, {"a": 2}, None, build_counting([], "rebuilt"))
        assert theirs.key == their_key and not theirs.built
        assert (theirs.path / "data.txt").read_text() == "theirs" and (theirs.path / "data.txt").stat().st_uid == uid
        # a file the other user may not read: a permission error naming the artifact, and nothing moved
        (mine.path / "data.txt").chmod(0o600)
        code, said = as_other_user(uid, gid, lambda: ArtifactStore(root).usable("s", mine.key))
        assert code == 1 and "ArtifactPermissionError" in said and str(mine.path) in said
        assert mine.path.is_dir() and not list(root.glob("s/.*.corrupt-*"))
    finally:
        os.umask(old)
        shutil.rmtree(root)
