"""detector/io.py: the one atomic writer and the one JSON reader."""

import json
import os

import pytest

from detector.io import JSONReadError, atomic_path, read_json, write_atomic


def test_write_atomic_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.json"
    write_atomic(path, '{"x": 1}')
    assert json.loads(path.read_text()) == {"x": 1}
    write_atomic(path, b"\x00\x01", durable=True)
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    write_atomic(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed while writing")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_temporaries_of_dead_writers_are_removed(tmp_path):
    path = tmp_path / "a.txt"
    stale = tmp_path / ".a.txt.999999999.tmp"  # no process has that id
    stale.write_text("left by a killed writer")
    mine = tmp_path / f".a.txt.{os.getppid()}.tmp"  # a live process's (this one's parent)
    mine.write_text("still being written")
    write_atomic(path, "new")
    assert not stale.exists() and mine.exists() and path.read_text() == "new"


@pytest.mark.parametrize("content, missing, invalid, message", [
    (None, True, False, "file not found"),
    ('{"a": ', False, True, "Expecting value at line 1 column 7"),
    (b"{\"a\": \"\xc3\x28\"}", False, True, "not UTF-8 text"),
    ("[" * 100_000 + "]" * 100_000, False, True, "nested too deeply"),
])
def test_read_json_errors_say_what_is_wrong_in_one_line(tmp_path, content, missing, invalid, message):
    path = tmp_path / "x.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(JSONReadError) as info:
        read_json(path)
    assert (info.value.missing, info.value.invalid) == (missing, invalid)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value) and "\n" not in str(info.value)


def test_read_json_reads(tmp_path):
    (tmp_path / "x.json").write_text('{"images": [1, 2]}')
    assert read_json(tmp_path / "x.json") == {"images": [1, 2]}
