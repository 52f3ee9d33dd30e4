"""Compiled 2x2 reductions behind :mod:`tilex.pyramid` (imported on first use, with Numba).

The integer ones only: NumPy's float mean is as fast already.

Each kernel takes ``[n, h, w]`` C-contiguous planes and fills ``[n, ceil(h/2),
ceil(w/2)]``, treating the pixels beyond an odd edge as zeros, with the
integer arithmetic of the NumPy formulas in :mod:`tilex.pyramid`: the same
values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tilex.kernels._numba import njit

__all__ = ["mean_uint8", "mode"]


def mean_uint8(a: np.ndarray) -> np.ndarray:
    """:func:`tilex.pyramid.reduce_mean_uint8` of a uint8 array."""
    return _apply(_mean_uint8, a)


def mode(labels: np.ndarray) -> np.ndarray:
    """:func:`tilex.pyramid.reduce_mode` of uint8 labels."""
    return _apply(_mode, labels)


def _apply(kernel: Any, a: np.ndarray) -> np.ndarray:
    """``kernel`` over ``a [..., h, w]`` as ``[n, h, w]`` planes; the result keeps the lead axes."""
    lead, (h, w) = a.shape[:-2], a.shape[-2:]
    planes = np.ascontiguousarray(a).reshape(-1, h, w)
    out = np.empty((planes.shape[0], -(-h // 2), -(-w // 2)), np.uint8)
    kernel(planes, out)
    return out.reshape(*lead, *out.shape[1:])


@njit
def _block(a, c, i, j):  # pragma: no cover (compiled)
    """The 2x2 block ``(i, j)`` of plane ``c``: ``a00, a01, a10, a11`` (0 beyond an odd edge)
    and how many of them exist."""
    h, w = a.shape[1], a.shape[2]
    y, x = 2 * i, 2 * j
    two_rows, two_cols = y + 1 < h, x + 1 < w
    a00 = np.int32(a[c, y, x])
    a01 = np.int32(a[c, y, x + 1]) if two_cols else np.int32(0)
    a10 = np.int32(a[c, y + 1, x]) if two_rows else np.int32(0)
    a11 = np.int32(a[c, y + 1, x + 1]) if two_rows and two_cols else np.int32(0)
    return a00, a01, a10, a11, (2 if two_rows else 1) * (2 if two_cols else 1)


@njit
def _mean_uint8(a, out):  # pragma: no cover (compiled; tested against the NumPy formulas)
    for c in range(out.shape[0]):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                a00, a01, a10, a11, count = _block(a, c, i, j)
                total = a00 + a01 + a10 + a11
                # round(total / count) half up, in integers
                out[c, i, j] = np.uint8((2 * total + count) // (2 * count))


@njit
def _mode(a, out):  # pragma: no cover (compiled; tested against the NumPy formulas)
    v = np.zeros(4, np.int32)
    for c in range(out.shape[0]):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                v[0], v[1], v[2], v[3], _ = _block(a, c, i, j)
                best = 0
                for p in range(4):
                    if v[p] > 0:
                        count = 0
                        for q in range(4):
                            count += v[p] == v[q]
                        # most votes first, then the lowest label; 0 never wins
                        best = max(best, count * 256 + (255 - v[p]))
                out[c, i, j] = 255 - best % 256 if best > 0 else 0
