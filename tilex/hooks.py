"""The one hook production code offers to tests: named checkpoints.

The engine and the output writer call :func:`checkpoint` at the moments a
crash matters (after a statistics tile, after a unit's data are written and
before its journal marker, ...). Normally nothing listens. A test installs a
listener with :func:`install`; the failpoints of :mod:`tilex.testing`, which
SIGKILL the process at the N-th pass of a checkpoint, install themselves when
``TILEX_FAILPOINT`` is set in the environment (so they also reach CLI
subprocesses and dask worker processes started by a test).

Examples
--------
>>> seen = []
>>> previous = install(seen.append)
>>> checkpoint("unit")
>>> seen, install(previous) is not None
(['unit'], True)
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["checkpoint", "install"]

Listener = Callable[[str], None]

_listener: Listener | None = None


def checkpoint(name: str) -> None:
    """Tell the installed listener, if any, that checkpoint ``name`` was passed."""
    if _listener is not None:
        _listener(name)


def install(listener: Listener | None) -> Listener | None:
    """Set the checkpoint listener (``None`` removes it); returns the previous one."""
    global _listener
    previous, _listener = _listener, listener
    return previous


if os.environ.get("TILEX_FAILPOINT"):  # set only by tests: see tilex.testing
    from tilex.testing import failpoint as _failpoint

    install(_failpoint)
