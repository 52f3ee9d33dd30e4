"""tilex.omezarr.journal: the journal of written units and the one atomic writer behind it."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading

import numpy as np
import pytest

from tilex.omezarr.journal import (
    Journal,
    fsync_files,
    os_errors_name,
    write_atomic,
    write_json_atomic,
)

# --------------------------------------------------------------------------- journal


def test_marks_are_listed_per_level(tmp_path):
    journal = Journal(tmp_path)
    assert journal.completed(0) == set() and not journal.has(0, (0, 0))
    journal.mark(0, (0, 1))
    journal.mark(0, (2, 3))
    journal.mark(1, (0, 0))
    journal.mark(11, (0, 0))  # "L1-" must not match level 11
    assert journal.completed(0) == {(0, 1), (2, 3)}
    assert journal.completed(1) == {(0, 0)}
    assert journal.has(0, (2, 3)) and not journal.has(0, (3, 2))


def test_payloads_round_trip(tmp_path):
    journal = Journal(tmp_path)
    sample = {
        "score.sample": np.arange(6, dtype=np.float32).reshape(1, 6),
        "score.lo": np.array([0.5]),
    }
    journal.mark(0, (1, 1), sample)
    journal.mark(1, (0, 0))
    got = journal.payload(0, (1, 1))
    assert sorted(got) == sorted(sample)
    for name, values in sample.items():
        np.testing.assert_array_equal(got[name], values)
        assert got[name].dtype == values.dtype
    assert journal.payload(1, (0, 0)) == {}


def test_temporary_files_are_never_marks(tmp_path):
    journal = Journal(tmp_path)
    journal.ensure()
    (journal.folder / ".L0-0-0.0123abcd.tmp").write_bytes(b"torn")  # a writer killed mid-way
    assert journal.completed(0) == set()


def test_arrays_mark_and_clear(tmp_path):
    journal = Journal(tmp_path)
    assert not journal.has_arrays()
    journal.mark_arrays()
    journal.mark(0, (0, 0))
    assert journal.has_arrays() and journal.completed(0) == {(0, 0)}
    journal.clear()
    assert not journal.folder.exists() and journal.completed(0) == set()
    journal.clear()  # nothing left: nothing to do


def test_concurrent_writers_each_leave_a_whole_mark(tmp_path):
    journal = Journal(tmp_path)
    payload = {"x": np.ones(4096, np.float64)}
    threads = [
        threading.Thread(target=journal.mark, args=(0, (i % 3, 0), payload)) for i in range(12)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert journal.completed(0) == {(0, 0), (1, 0), (2, 0)}
    assert sorted(p.name for p in journal.folder.iterdir()) == ["L0-0-0", "L0-1-0", "L0-2-0"]
    for i in range(3):
        np.testing.assert_array_equal(journal.payload(0, (i, 0))["x"], payload["x"])


# --------------------------------------------------------------------------- atomic writes


def test_write_atomic_replaces_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "tilex.json"
    write_atomic(target, b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["tilex.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    target = tmp_path / "tilex.json"
    write_atomic(target, b"old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as err:
        write_atomic(target, b"new")
    assert err.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["tilex.json"]


def test_data_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_atomic(tmp_path / "marker", b"x")
    assert events == ["fsync file", "replace", "fsync folder"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_the_umask_sets_the_mode(tmp_path, umask):
    previous = os.umask(umask)
    try:
        write_atomic(tmp_path / "tilex.json", b"{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "tilex.json").stat().st_mode) == 0o666 & ~umask


def test_write_json_atomic_writes_numpy_values_and_paths(tmp_path):
    write_json_atomic(tmp_path / "x.json", {"n": np.int32(3), "a": np.arange(2), "p": tmp_path})
    assert json.loads((tmp_path / "x.json").read_text()) == {
        "n": 3,
        "a": [0, 1],
        "p": str(tmp_path),
    }
    with pytest.raises(TypeError, match="set is not JSON serialisable"):
        write_json_atomic(tmp_path / "y.json", {"s": {1}})
    assert not (tmp_path / "y.json").exists()


def test_fsync_files_skips_missing_files(tmp_path):
    (tmp_path / "a").write_bytes(b"1")
    fsync_files([tmp_path / "a", tmp_path / "absent"])  # zarr writes no file for an empty shard


def test_os_errors_name_keeps_an_existing_name():
    with pytest.raises(OSError) as err, os_errors_name("OUT"):
        raise FileNotFoundError(errno.ENOENT, "No such file", "OUT/zarr.json")
    assert err.value.filename == "OUT/zarr.json"
