"""Crash safety for an output folder: the journal of finished write units, the
resume guard, and failpoints for testing both.

Journal
-------
``OUT/.journal/`` holds one *marker* file per finished write unit,
``L{level}-{uy}-{ux}``, plus ``arrays`` once every array of every level exists.
A unit is marked only after its data are durable: the shard (0.5) or chunk
(0.4) files of the unit are written, each is ``fsync``-ed with its folder, and
then the marker is written to a temporary file, ``fsync``-ed, renamed into
place with ``os.replace`` and the journal folder ``fsync``-ed.  A marker that
exists is therefore complete, and so is the unit it names.

Why one file per unit rather than an append-only log: units are finished by
several writer threads and, with :mod:`tilex.distributed`, by worker processes
on several hosts sharing the output over a network file system.  Creating a
file with a unique name needs no lock and is atomic on every POSIX file system
(NFS included), whereas concurrent appends to one log are not.  A level-0
marker carries a small payload (the unit's display-window sample, see
:mod:`tilex.omezarr`), so the group metadata can be written at the end without
reading the data back.

Resume guard
------------
:func:`fingerprint` summarises what determines an output's pixels: the
inputs (paths, shapes, tiling, plus size and modification time of each input
file), the bands, the parameters and the weights' SHA-256, never timestamps or
timings.  It is stored in ``tilex.json`` when the output is laid out and
compared by :func:`check_resumable`, which names what differs.

Failpoints
----------
``TILEX_FAILPOINT=NAME:N`` makes the process kill itself with ``SIGKILL`` at
the ``N``-th time it passes the failpoint ``NAME`` (counted per process):

``stats``
    after a tile of the statistics pass;
``unit``
    after a level-0 unit's data are written, before its marker;
``level<k>``
    the same for a unit of pyramid level ``k`` (``level1``, ``level2``, ...).

With ``TILEX_FAILPOINT_ONCE=PATH`` it fires in the first process that creates
``PATH`` only (for killing exactly one worker of a cluster).  Only tests set
these variables.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from tilex.errors import ResumeMismatchError

__all__ = [
    "FAILPOINT_ENV",
    "Journal",
    "check_resumable",
    "failpoint",
    "fingerprint",
    "fsync_files",
    "parameters_hash",
]

FAILPOINT_ENV = "TILEX_FAILPOINT"
FAILPOINT_ONCE_ENV = "TILEX_FAILPOINT_ONCE"
JOURNAL = ".journal"
ARRAYS = "arrays"
_SECTIONS = ("scan", "bands", "parameters", "weights")


# --------------------------------------------------------------------------- durability


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders; the rename is still atomic
        pass
    finally:
        os.close(fd)


def fsync_files(paths: Iterable[Path]) -> None:
    """``fsync`` each existing file and, once each, the folders holding them.

    Files that do not exist are skipped: zarr stores no file for a chunk or
    shard that holds only the fill value.
    """
    folders: set[Path] = set()
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        folders.add(path.parent)
    for folder in folders:
        _fsync_dir(folder)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


# --------------------------------------------------------------------------- journal


class Journal:
    """The markers of an output's finished write units (``OUT/.journal``).

    Examples
    --------
    >>> import tempfile
    >>> j = Journal(tempfile.mkdtemp())
    >>> j.mark(0, (1, 2), {"score": np.zeros((1, 3), np.float32)})
    >>> j.completed(0), j.payload(0, (1, 2))["score"].shape
    ({(1, 2)}, (1, 3))
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.folder = Path(out) / JOURNAL

    def _path(self, level: int, index: tuple[int, int]) -> Path:
        return self.folder / f"L{level}-{index[0]}-{index[1]}"

    def ensure(self) -> None:
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.folder.parent)

    def mark(self, level: int, index: tuple[int, int], payload: dict[str, np.ndarray] | None = None) -> None:
        """Record a unit as durably written (call only after its files are synced)."""
        data = b""
        if payload:
            buffer = io.BytesIO()
            np.savez(buffer, **payload)
            data = buffer.getvalue()
        self.ensure()
        _write_atomic(self._path(level, index), data)

    def has(self, level: int, index: tuple[int, int]) -> bool:
        return self._path(level, index).is_file()

    def completed(self, level: int) -> set[tuple[int, int]]:
        """The units of ``level`` marked as written."""
        done = set()
        prefix = f"L{level}-"
        if not self.folder.is_dir():
            return done
        for entry in os.scandir(self.folder):
            name = entry.name
            if name.startswith(prefix) and not name.endswith(".tmp"):
                uy, ux = name[len(prefix) :].split("-")
                done.add((int(uy), int(ux)))
        return done

    def payload(self, level: int, index: tuple[int, int]) -> dict[str, np.ndarray]:
        data = self._path(level, index).read_bytes()
        if not data:
            return {}
        with np.load(io.BytesIO(data)) as npz:
            return {k: npz[k] for k in npz.files}

    def mark_arrays(self) -> None:
        """Record that every array of every level has been created."""
        self.ensure()
        _write_atomic(self.folder / ARRAYS, b"")

    def has_arrays(self) -> bool:
        return (self.folder / ARRAYS).is_file()

    def clear(self) -> None:
        """Remove the journal (a complete output carries none)."""
        if not self.folder.is_dir():
            return
        for entry in os.scandir(self.folder):
            os.unlink(entry.path)
        self.folder.rmdir()


# --------------------------------------------------------------------------- guard


def parameters_hash(metadata: dict) -> str:
    """A hash of what determines an output's pixels (inputs, parameters, weights)."""
    keep = {k: metadata.get(k) for k in _SECTIONS}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()


def _input_files(scan: dict | None) -> list[list[Any]]:
    """``[path, size, mtime_ns]`` of every regular input file named by a scan description."""
    if not scan:
        return []
    paths = {scan.get("visible", {}).get("path")}
    paths.update(b.get("path") for b in scan.get("bands", []))
    out = []
    for p in sorted(p for p in paths if p):
        try:
            st = os.stat(p)
        except OSError:
            out.append([p, None, None])
            continue
        if os.path.isfile(p):  # a Zarr folder's own stat says nothing about its chunks
            out.append([p, st.st_size, st.st_mtime_ns])
    return out


def fingerprint(metadata: dict) -> dict[str, Any]:
    """What a resumed run must match: the hash of the sections that set the pixels
    (:func:`parameters_hash`) and the size and modification time of each input file."""
    return {
        "parameters_hash": parameters_hash(metadata),
        "input_files": _input_files(metadata.get("scan")),
    }


def _differences(old: Any, new: Any, where: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))
        return out
    if _canonical(old) == _canonical(new):
        return []
    return [f"{where} (output: {_short(old)}, now: {_short(new)})"]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def check_resumable(path: Path, manifest: dict, metadata: dict) -> None:
    """Refuse to resume the output at ``path`` (its ``tilex.json`` is ``manifest``) for a
    run described by ``metadata`` when their fingerprints differ.

    Raises
    ------
    ResumeMismatchError
        Naming every differing input, parameter, weight or input file.
    """
    stored = manifest.get("resume")
    if not isinstance(stored, dict) or "parameters_hash" not in stored:
        raise ResumeMismatchError(
            f"cannot resume {path}: its tilex.json records no run fingerprint "
            "(written by an older tilex?); start again with --overwrite"
        )
    now = fingerprint(metadata)
    if stored == now:
        return
    diffs = []
    for section in _SECTIONS:
        diffs += _differences(manifest.get(section), metadata.get(section), section)
    old_files = {f[0]: f[1:] for f in stored.get("input_files") or []}
    new_files = {f[0]: f[1:] for f in now["input_files"]}
    for p in sorted(set(old_files) | set(new_files)):
        if old_files.get(p) != new_files.get(p):
            diffs.append(
                f"input file {p} changed (size, mtime_ns: {old_files.get(p)} -> {new_files.get(p)})"
            )
    raise ResumeMismatchError(
        f"cannot resume {path}: it was made with different inputs, parameters or weights: "
        + "; ".join(diffs or ["the run fingerprint"])
        + " (rerun with the original options, or start again with --overwrite)"
    )


# --------------------------------------------------------------------------- failpoints

_counts: dict[str, int] = {}
_lock = threading.Lock()


def failpoint(name: str) -> None:
    """SIGKILL this process at the ``N``-th pass of ``name`` when ``TILEX_FAILPOINT=name:N``."""
    spec = os.environ.get(FAILPOINT_ENV)
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        if _counts[name] != int(count or 1):
            return
    once = os.environ.get(FAILPOINT_ONCE_ENV)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)
