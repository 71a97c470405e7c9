import pytest

from tsq.reporting import _records


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
