"""Hash-based noise: pure functions of integer coordinates and a key.

Every texture and every sensor noise of the synthetic scan comes from here, so
a pixel's value depends only on its coordinates and the seed, never on the
region it is rendered in.  Only integer hashing and IEEE-exact float
operations are used.
"""

from __future__ import annotations

import numpy as np

__all__ = ["U32", "gauss_noise", "hash2", "mix32", "mix32_int", "unit", "value_noise"]

U32 = 0xFFFFFFFF
"""The largest key (and seed): hashes work on 32-bit unsigned integers."""


def mix32_int(h: int) -> int:
    """Python-int twin of :func:`mix32` for scalar keys (no NumPy overflow warnings)."""
    h &= U32
    h ^= h >> 16
    h = (h * 0x7FEB352D) & U32
    h ^= h >> 15
    h = (h * 0x846CA68B) & U32
    h ^= h >> 16
    return h


def mix32(h: np.ndarray) -> np.ndarray:
    """Chris Wellons' ``lowbias32`` integer hash on uint32 arrays (wraps on purpose)."""
    h = h ^ (h >> np.uint32(16))
    h *= np.uint32(0x7FEB352D)
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x846CA68B)
    h ^= h >> np.uint32(16)
    return h


def hash2(ix: np.ndarray, iy: np.ndarray, key: int) -> np.ndarray:
    """uint32 hash of integer lattice coordinates (broadcast) under ``key``."""
    hy = mix32(iy.astype(np.int64).astype(np.uint32) ^ np.uint32(key))
    return mix32(ix.astype(np.int64).astype(np.uint32) + hy)


def unit(h: np.ndarray) -> np.ndarray:
    """uint32 hash -> float32 in [0, 1), exactly (24 bits)."""
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / 16777216.0)


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def value_noise(x: np.ndarray, y: np.ndarray, cell: float, key: int) -> np.ndarray:
    """Smooth value noise in [0, 1) with lattice spacing ``cell`` (same units as x, y).

    Bilinear interpolation (smoothstep weights) of hashed lattice values. When
    ``x`` is a row ``[1, w]`` and ``y`` a column ``[h, 1]`` the lattice values
    are hashed once per lattice point and interpolated along x per lattice
    row first: the same numbers at a fraction of the cost.
    """
    fx, fy = x / cell, y / cell
    x0, y0 = np.floor(fx), np.floor(fy)
    tx, ty = _fade(fx - x0), _fade(fy - y0)
    if x.ndim == 2 and y.ndim == 2 and x.shape[0] == 1 and y.shape[1] == 1:
        # lattice rows that this region touches, interpolated along x once each
        rows = np.arange(y0.min(), y0.max() + 2, dtype=np.float32)[:, None]
        lo = unit(hash2(x0, rows, key))
        hi = unit(hash2(x0 + 1, rows, key))
        along = lo + (hi - lo) * tx  # [rows, w]
        j = (y0[:, 0] - rows[0, 0]).astype(np.intp)
        top, bottom = along[j], along[j + 1]
        return top + (bottom - top) * ty
    v00 = unit(hash2(x0, y0, key))
    v10 = unit(hash2(x0 + 1, y0, key))
    v01 = unit(hash2(x0, y0 + 1, key))
    v11 = unit(hash2(x0 + 1, y0 + 1, key))
    top = v00 + (v10 - v00) * tx
    bottom = v01 + (v11 - v01) * tx
    return top + (bottom - top) * ty


def gauss_noise(ix: np.ndarray, iy: np.ndarray, key: int) -> np.ndarray:
    """Per-pixel standard normal-ish noise: Irwin-Hall sum of a hash's 4 bytes."""
    h = hash2(ix, iy, key)
    total = (
        (h & np.uint32(255)).astype(np.float32)
        + ((h >> np.uint32(8)) & np.uint32(255)).astype(np.float32)
        + ((h >> np.uint32(16)) & np.uint32(255)).astype(np.float32)
        + (h >> np.uint32(24)).astype(np.float32)
    )
    # mean 4 * 127.5, variance 4 * (256**2 - 1) / 12
    return (total - np.float32(510.0)) * np.float32(1.0 / 147.8006)
