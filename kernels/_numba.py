"""Numba presets for tilex, in one place.

Every CPU kernel is compiled with the same options:

- ``nogil=True``: the engine runs tiles on threads; a kernel must not hold the GIL.
- cached: compiled code is kept on disk, so only the first run of a machine
  pays for compilation (compilation itself happens lazily, on first call).
- ``fastmath=False``: no reassociation, no FMA contraction, NaN honoured. The
  kernels must reproduce the NumPy oracle's float32 results bit for bit.
- ``error_model="numpy"``: a division by zero gives inf/NaN as in NumPy, never
  a Python exception.

The cache lives in the user's cache directory, never in the installed package:
``$TILEX_CACHE_DIR/numba`` if set, else ``$NUMBA_CACHE_DIR`` if set, else
``$XDG_CACHE_HOME/tilex/numba`` (``~/.cache/tilex/numba``). Numba's own
``cache=True`` writes next to the source, into ``site-packages/tilex/kernels/
__pycache__``, where files that pip did not install outlive ``pip uninstall``
and turn the leftover folder into a namespace package that shadows a later
editable install. So the presets compile uncached and give each dispatcher a
cache whose only locator is tilex's directory; Numba's process-wide settings
(``numba.config.CACHE_DIR``) are left alone. When that directory cannot be
created or written to, the kernels run uncached and compile on every run.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numba
from numba.core.caching import CompileResultCacheImpl, FunctionCache, UserProvidedCacheLocator

__all__ = ["CACHE_DIR_ENV", "cache_dir", "njit", "njit_parallel", "prange"]

F = TypeVar("F", bound=Callable[..., Any])

CACHE_DIR_ENV = "TILEX_CACHE_DIR"
"""Environment variable naming tilex's cache directory (compiled kernels go in its ``numba/``)."""

_PRESET: dict[str, Any] = {
    "nogil": True,
    "cache": False,  # cached through tilex's own locator instead, see _cached
    "fastmath": False,
    "error_model": "numpy",
}

prange = numba.prange


def cache_dir() -> Path | None:
    """Where the compiled kernels are kept; ``None`` when no home directory is known."""
    if own := os.environ.get(CACHE_DIR_ENV):
        return Path(own) / "numba"
    if numba.config.CACHE_DIR:  # NUMBA_CACHE_DIR: the user's place for all Numba caches
        return Path(numba.config.CACHE_DIR)
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg) / "tilex" / "numba"
    try:
        return Path.home() / ".cache" / "tilex" / "numba"
    except RuntimeError:  # no HOME and no passwd entry (some containers)
        return None


class _TilexCacheLocator(UserProvidedCacheLocator):
    """Numba's locator for ``NUMBA_CACHE_DIR``, pointed at :func:`cache_dir` instead.

    Like Numba's, it keeps one sub-folder per source folder (its name and a
    hash of its path), so an installed and an editable tilex do not share files.
    """

    def __init__(self, py_func: Callable[..., Any], py_file: str, root: Path) -> None:
        super().__init__(py_func, py_file)
        self._tilex_path = str(root / self.get_suitable_cache_subpath(py_file))

    def get_cache_path(self) -> str:
        return self._tilex_path

    @classmethod
    def from_function(cls, py_func: Callable[..., Any], py_file: str) -> _TilexCacheLocator | None:
        """The locator, or ``None`` when its directory cannot be created or written to."""
        root = cache_dir()
        if root is None or not os.path.exists(py_file):
            return None
        locator = cls(py_func, py_file, root)
        try:
            locator.ensure_cache_path()
        except OSError:
            return None
        return locator


class _TilexCacheImpl(CompileResultCacheImpl):
    # no fallback to Numba's in-tree locator: that is the folder to stay out of
    _locator_classes = [_TilexCacheLocator]


class _TilexFunctionCache(FunctionCache):
    _impl_class = _TilexCacheImpl


def _cached(dispatcher: Any) -> Any:
    """Give ``dispatcher`` tilex's on-disk cache, or leave it uncached if that is unusable."""
    py_func = dispatcher.py_func
    if _TilexCacheLocator.from_function(py_func, inspect.getfile(py_func)) is not None:
        # what Dispatcher.enable_caching() does, with tilex's cache class
        dispatcher._cache = _TilexFunctionCache(py_func)
    return dispatcher


def njit(fn: F) -> F:
    """Compile ``fn`` with the tilex preset, serially (for helpers and small kernels)."""
    return _cached(numba.njit(parallel=False, **_PRESET)(fn))


def njit_parallel(fn: F) -> F:
    """Compile ``fn`` with the tilex preset and ``parallel=True`` (``prange`` loops)."""
    return _cached(numba.njit(parallel=True, **_PRESET)(fn))
