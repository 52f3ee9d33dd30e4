"""Compiled 2x2 reductions behind :mod:`tilex.pyramid` (imported on first use, with Numba).

The integer ones only: NumPy's float mean is as fast already.

Each kernel takes ``[n, h, w]`` C-contiguous planes and fills ``[n, ceil(h/2),
ceil(w/2)]``, treating the pixels beyond an odd edge as zeros, with the
integer arithmetic of the NumPy formulas in :mod:`tilex.pyramid`: the same
values.
"""

from __future__ import annotations

import numpy as np

from tilex.kernels._numba import njit

__all__ = ["mean_uint8", "mode"]


def _planes(a: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    lead = a.shape[:-2]
    return np.ascontiguousarray(a).reshape(-1, *a.shape[-2:]), lead


def _out(planes: np.ndarray) -> np.ndarray:
    n, h, w = planes.shape
    return np.empty((n, -(-h // 2), -(-w // 2)), np.uint8)


def mean_uint8(a: np.ndarray) -> np.ndarray:
    """:func:`tilex.pyramid.reduce_mean_uint8` of a uint8 array."""
    planes, lead = _planes(a)
    out = _out(planes)
    _mean_uint8(planes, out)
    return out.reshape(*lead, *out.shape[1:])


def mode(labels: np.ndarray) -> np.ndarray:
    """:func:`tilex.pyramid.reduce_mode` of uint8 labels."""
    planes, lead = _planes(labels)
    out = _out(planes)
    _mode(planes, out)
    return out.reshape(*lead, *out.shape[1:])


@njit
def _mean_uint8(a, out):  # pragma: no cover (compiled; tested against the NumPy formulas)
    n, h, w = a.shape
    for c in range(n):
        for i in range(out.shape[1]):
            y = 2 * i
            two_rows = y + 1 < h
            for j in range(out.shape[2]):
                x = 2 * j
                two_cols = x + 1 < w
                total = np.int32(a[c, y, x])
                count = 1
                if two_rows:
                    total += a[c, y + 1, x]
                    count = 2
                if two_cols:
                    total += a[c, y, x + 1]
                    if two_rows:
                        total += a[c, y + 1, x + 1]
                    count *= 2
                # round(total / count) half up, in integers
                out[c, i, j] = np.uint8((2 * total + count) // (2 * count))


@njit
def _mode(a, out):  # pragma: no cover (compiled; tested against the NumPy formulas)
    n, h, w = a.shape
    v = np.zeros(4, np.int32)
    for c in range(n):
        for i in range(out.shape[1]):
            y = 2 * i
            two_rows = y + 1 < h
            for j in range(out.shape[2]):
                x = 2 * j
                two_cols = x + 1 < w
                v[0] = a[c, y, x]
                v[1] = a[c, y, x + 1] if two_cols else 0
                v[2] = a[c, y + 1, x] if two_rows else 0
                v[3] = a[c, y + 1, x + 1] if two_rows and two_cols else 0
                best = 0
                for p in range(4):
                    if v[p] > 0:
                        count = 0
                        for q in range(4):
                            count += v[p] == v[q]
                        # most votes first, then the lowest label; 0 never wins
                        best = max(best, count * 256 + (255 - v[p]))
                out[c, i, j] = 255 - best % 256 if best > 0 else 0
