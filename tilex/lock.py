"""Who owns an output folder: one run at a time writes ``OUT``.

:func:`tilex.run` holds :func:`output_lock` on ``OUT`` for the whole run, from
before it looks at ``OUT`` (to refuse it, check it for ``--resume`` or delete
it for ``--overwrite``) until it returns or raises.  Another run on the same
output, with or without ``--overwrite`` or ``--resume``, is refused with
:class:`~tilex.errors.OutputBusyError`, which names the process holding it.

Where: the lock file ``.OUT.tilex-lock`` lies beside ``OUT``, not inside it,
so that deleting ``OUT`` (``--overwrite``) never deletes a lock someone holds.
It is removed when the lock is released.

How: an advisory ``fcntl.flock``, which the kernel drops when its holder dies,
so a crashed or killed run leaves no output locked: the file it leaves behind
is taken over by the next run.  The holder writes its host, process id and
start time into the file, for the refusal.  A releasing run unlinks the file
before it unlocks, and a run that gets the lock checks that the path still
names the file it locked (else it retries), so two runs never hold two
different files for one output.

The workers of :mod:`tilex.distributed` write under their client's lock and
never take it.  On a network file system the lock holds across hosts where the
kernel maps ``flock`` to NFS locks (Linux does).  Without ``fcntl`` (Windows),
or on a file system that refuses locks, runs are not serialised: the output is
written unlocked, with a log message in the second case.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tilex.errors import OutputBusyError, OutputError

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None

__all__ = ["lock_path", "output_lock"]

log = logging.getLogger("tilex")

LOCK_SUFFIX = ".tilex-lock"


def lock_path(out: str | os.PathLike) -> Path:
    """The lock file of the output ``out``: ``.OUT.tilex-lock`` beside it.

    ``out`` is resolved first, so every spelling of one folder (relative,
    absolute, through a symbolic link) shares one lock.

    Examples
    --------
    >>> lock_path("/data/OUT")
    PosixPath('/data/.OUT.tilex-lock')
    """
    out = Path(out).resolve()
    return out.with_name(f".{out.name}{LOCK_SUFFIX}")


@contextmanager
def output_lock(out: str | os.PathLike) -> Iterator[Path]:
    """Hold the output ``out`` for one run, or refuse if another process holds it.

    Parameters
    ----------
    out : path-like
        The output folder; it need not exist (its parent is created).

    Yields
    ------
    Path
        The lock file (see :func:`lock_path`).

    Raises
    ------
    OutputBusyError
        Another process, or another run in this one, holds ``out``.
    OutputError
        The lock file cannot be created.

    Examples
    --------
    >>> import tempfile
    >>> from tilex.errors import OutputBusyError
    >>> out = tempfile.mkdtemp() + "/OUT"
    >>> with output_lock(out):
    ...     try:
    ...         with output_lock(out):
    ...             pass
    ...     except OutputBusyError as err:
    ...         print("refused:", err.holder["pid"] == os.getpid())
    refused: True
    """
    path = lock_path(out)
    fd = _acquire(Path(out), path) if fcntl is not None else None
    try:
        yield path
    finally:
        if fd is not None:
            _release(path, fd)


def _acquire(out: Path, path: Path) -> int | None:
    """Lock ``path`` and write the holder into it; ``None`` when the file system has no locks."""
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise OutputError(
                f"cannot lock the output {out}: {path}: {err.strerror or err}"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise _busy(out, holder) from None
        except OSError as err:
            os.close(fd)
            log.warning("cannot lock %s (%s): another run on it would not be refused", out, err)
            return None
        if _names(path, fd):
            break
        os.close(fd)  # its holder released and removed it meanwhile: lock the new file
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(holder).encode())
    os.fsync(fd)  # readable by a refused run on another host
    return fd


def _release(path: Path, fd: int) -> None:
    try:
        if _names(path, fd):  # not a file someone made after deleting ours
            path.unlink()
    finally:
        os.close(fd)  # drops the lock, after the unlink: see the module docstring


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` is still the file open as ``fd``."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0))
    except ValueError:  # its holder has not written it yet
        return {}
    return holder if isinstance(holder, dict) else {}


def _busy(out: Path, holder: dict) -> OutputBusyError:
    if "pid" in holder:
        since = time.localtime(holder.get("since", 0))
        clock = "%H:%M:%S" if since[:3] == time.localtime()[:3] else "%Y-%m-%d %H:%M:%S"
        who = f"process {holder['pid']} on host {holder.get('host', '?')} since {time.strftime(clock, since)}"
    else:
        who = "another process"
    return OutputBusyError(
        f"{out} is being written by {who}; wait for it or stop it", path=out, holder=holder
    )
