"""Crash safety of an output folder: durable writes and the journal of finished units.

Durable writes
--------------
Every small file tilex writes itself (``tilex.json``, the journal's markers)
goes through :func:`write_atomic`: the bytes go to a uniquely named temporary
file in the same folder, which is ``fsync``-ed, renamed over the target with
``os.replace`` (atomic on POSIX file systems, NFS included), and the folder
is ``fsync``-ed so the rename itself survives a power cut. A reader sees the
old file or the new one, never a torn one, and no temporary file outlives a
failed write. The temporary file is created with mode ``0o666`` and the
umask decides, as for the arrays zarr writes: ``tempfile.mkstemp`` would make
``tilex.json`` ``0600`` and hide it from colleagues who may read the images.

:func:`os_errors_name` gives an ``OSError`` the path being written when it
names none (``write()`` on a full disk says only "No space left on device").

Journal
-------
``OUT/.journal/`` holds one *marker* file per finished write unit,
``L{level}-{uy}-{ux}``, plus ``arrays`` once every array of every level exists.
A unit is marked only after its data are durable: the shard (0.5) or chunk
(0.4) files of the unit are written, each is ``fsync``-ed with its folder
(:func:`fsync_files`), and then the marker is written with
:func:`write_atomic`. A marker that exists is therefore complete, and so is
the unit it names.

Why one file per unit rather than an append-only log: units are finished by
several writer threads and, with :mod:`tilex.distributed`, by worker processes
on several hosts sharing the output over a network file system. Creating a
file with a unique name needs no lock and is atomic on every POSIX file system
(NFS included), whereas concurrent appends to one log are not. A level-0
marker carries a small payload (the unit's display-window sample, see
:mod:`tilex.omezarr.ngff`), so the group metadata can be written at the end
without reading the data back.
"""

from __future__ import annotations

import io
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "JOURNAL",
    "Journal",
    "fsync_files",
    "os_errors_name",
    "write_atomic",
    "write_json_atomic",
]

JOURNAL = ".journal"
ARRAYS = "arrays"
_TMP = ".tmp"


# --------------------------------------------------------------------------- durable writes


@contextmanager
def os_errors_name(path: str | os.PathLike) -> Iterator[None]:
    """Give an OSError raised while writing ``path`` that file name, when it names none.

    ``write()`` on a full disk raises ``No space left on device`` without a
    file name; the one-line error should still say where tilex was writing.
    The error stays an OSError of the same errno (``except OSError`` works).

    Examples
    --------
    >>> import errno
    >>> try:
    ...     with os_errors_name("OUT/score.ome.zarr/0"):
    ...         raise OSError(errno.ENOSPC, "No space left on device")
    ... except OSError as err:
    ...     print(err.filename, err.errno == errno.ENOSPC)
    OUT/score.ome.zarr/0 True
    """
    try:
        yield
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(err.errno, err.strerror or str(err), os.fspath(path)) from err


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


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically and durably; the umask sets its mode.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "marker"
    >>> write_atomic(p, b"done")
    >>> p.read_bytes(), [q.name for q in p.parent.iterdir()]
    (b'done', ['marker'])
    """
    path = Path(path)
    # unique per writer (threads, processes, hosts on NFS), hidden, and never a journal marker
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}{_TMP}")
    # not tempfile.mkstemp, whose mode 0600 would hide tilex.json from colleagues: the umask decides
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # make the rename itself durable


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` with :func:`write_atomic`.

    NumPy scalars and arrays and paths are written as plain JSON values.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.json"
    >>> write_json_atomic(p, {"state": "running", "n": np.int64(3)})
    >>> json.loads(p.read_text())
    {'state': 'running', 'n': 3}
    """
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    write_atomic(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


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
        """Create the journal folder (durably) if it does not exist."""
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.folder.parent)

    def mark(
        self, level: int, index: tuple[int, int], payload: dict[str, np.ndarray] | None = None
    ) -> None:
        """Record a unit as durably written (call only after its files are synced)."""
        data = b""
        if payload:
            buffer = io.BytesIO()
            np.savez(buffer, **payload)
            data = buffer.getvalue()
        self.ensure()
        write_atomic(self._path(level, index), data)

    def has(self, level: int, index: tuple[int, int]) -> bool:
        """Whether unit ``index`` of ``level`` is marked as written."""
        return self._path(level, index).is_file()

    def completed(self, level: int) -> set[tuple[int, int]]:
        """The units of ``level`` marked as written."""
        done: set[tuple[int, int]] = set()
        prefix = f"L{level}-"
        if not self.folder.is_dir():
            return done
        for entry in os.scandir(self.folder):
            name = entry.name  # temporary files start with "." and are never markers
            if name.startswith(prefix) and not name.endswith(_TMP):
                uy, ux = name[len(prefix) :].split("-")
                done.add((int(uy), int(ux)))
        return done

    def payload(self, level: int, index: tuple[int, int]) -> dict[str, np.ndarray]:
        """The arrays a unit's marker carries (``{}`` when none)."""
        data = self._path(level, index).read_bytes()
        if not data:
            return {}
        with np.load(io.BytesIO(data)) as npz:
            return {k: npz[k] for k in npz.files}

    def mark_arrays(self) -> None:
        """Record that every array of every level has been created."""
        self.ensure()
        write_atomic(self.folder / ARRAYS, b"")

    def has_arrays(self) -> bool:
        """Whether :meth:`mark_arrays` was called (the arrays can be opened, not created)."""
        return (self.folder / ARRAYS).is_file()

    def clear(self) -> None:
        """Remove the journal (a complete output carries none)."""
        if not self.folder.is_dir():
            return
        for entry in os.scandir(self.folder):
            os.unlink(entry.path)
        self.folder.rmdir()
