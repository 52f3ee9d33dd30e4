"""Numba presets for tilex, in one place.

Every CPU kernel is compiled with the same options:

- ``nogil=True``: the engine runs tiles on threads; a kernel must not hold the GIL.
- ``cache=True``: compiled code is kept on disk, so only the first run of a
  machine pays for compilation (compilation itself happens lazily, on first call).
- ``fastmath=False``: no reassociation, no FMA contraction, NaN honoured. The
  kernels must reproduce the NumPy oracle's float32 results bit for bit.
- ``error_model="numpy"``: a division by zero gives inf/NaN as in NumPy, never
  a Python exception.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numba

__all__ = ["njit", "njit_parallel", "prange"]

F = TypeVar("F", bound=Callable[..., Any])

_PRESET: dict[str, Any] = {
    "nogil": True,
    "cache": True,
    "fastmath": False,
    "error_model": "numpy",
}

prange = numba.prange


def njit(fn: F) -> F:
    """Compile ``fn`` with the tilex preset, serially (for helpers and small kernels)."""
    return numba.njit(parallel=False, **_PRESET)(fn)


def njit_parallel(fn: F) -> F:
    """Compile ``fn`` with the tilex preset and ``parallel=True`` (``prange`` loops)."""
    return numba.njit(parallel=True, **_PRESET)(fn)
