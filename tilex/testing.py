"""Failpoints: kill the process at a named checkpoint, to test crash safety.

``TILEX_FAILPOINT=NAME:N`` makes the process kill itself with ``SIGKILL`` the
``N``-th time it passes the checkpoint ``NAME`` (counted per process; see
:mod:`tilex.hooks`, which installs :func:`failpoint` when the variable is set):

``stats``
    after a tile of the statistics pass;
``unit``
    after a level-0 unit's data are written, before its journal marker;
``level<k>``
    the same for a unit of pyramid level ``k`` (``level1``, ``level2``, ...).

With ``TILEX_FAILPOINT_ONCE=PATH`` it fires only in the first process that
creates ``PATH`` (to kill exactly one worker of a cluster). Only tests set
these variables; production code never imports this module otherwise.
"""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["FAILPOINT_ENV", "FAILPOINT_ONCE_ENV", "failpoint"]

FAILPOINT_ENV = "TILEX_FAILPOINT"
FAILPOINT_ONCE_ENV = "TILEX_FAILPOINT_ONCE"

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
