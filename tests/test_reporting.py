import pytest

from tsq.stages.reporting import _records


def leveldb_record(payload: bytes, kind: int) -> bytes:
    return b"\0\0\0\0" + len(payload).to_bytes(2, "little") + bytes([kind]) + payload


def test_records_are_reassembled_across_fragments_and_block_padding(tmp_path):
    header = b":W&B\xe1\xbe\x00"
    first = leveldb_record(b"abc", 1)
    # a record split in FIRST / MIDDLE / LAST fragments
    split = leveldb_record(b"he", 2) + leveldb_record(b"ll", 3) + leveldb_record(b"o", 4)
    body = header + first + split
    pad = 32768 - len(body) - 3  # leave 3 bytes (< a header) at the block's end: padding
    body += leveldb_record(b"x" * (pad - 7), 1) + b"\0\0\0"
    body += leveldb_record(b"next block", 1)
    path = tmp_path / "run-x.wandb"
    path.write_bytes(body)
    assert list(_records(path)) == [b"abc", b"hello", b"x" * (pad - 7), b"next block"]


def test_not_a_wandb_file(tmp_path):
    path = tmp_path / "f.wandb"
    path.write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a W&B run file"):
        list(_records(path))


def test_step_edits_pair_each_replaced_step_with_its_replacement():
    from tsq.text import step_edits

    original = "<think> a b c ; keep this ; x y z ; end ; </think> 7"
    refined = "<think> a c ; keep this ; end ; </think> 7"
    assert step_edits(original, refined, ";") == [{"before": "a b c", "after": "a c"}, {"before": "x y z", "after": ""}]
    assert step_edits(original, original, ";") == []


def test_stage_progress_logs_a_line_at_every_tenth_where_no_bar_is_drawn(caplog):
    import logging

    from tsq.progress import StageProgress

    with caplog.at_level(logging.INFO, logger="tsq.progress"):
        with StageProgress("eval: sampling", 250, "problems", bar=False, initial=50) as progress:
            for _ in range(4):
                progress.update(50, "acc 0.9")
        with StageProgress("silent", 10, "problems", enabled=False) as quiet:
            quiet.update(10)
    lines = [r.getMessage() for r in caplog.records]
    expected = [f"eval: sampling: problems {n}/250" for n in (100, 150, 200, 250)]
    assert [line.split(" (")[0] for line in lines] == expected
    assert lines[0].startswith("eval: sampling: problems 100/250 (40%), acc 0.9, ") and "about 0 s left" in lines[-1]


def test_word_diff_marks_removed_and_inserted_words_and_escapes_html():
    from analysis.report import word_diff_html

    assert word_diff_html("a <b> c d", "a c e") == "a<del> &lt;b&gt;</del> c <del>d</del><ins>e</ins>"
