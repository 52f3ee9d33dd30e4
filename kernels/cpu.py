"""The Numba CPU backend: the oracle's float32 arithmetic, one pass over memory.

Every public function here has the same name and signature as its twin in
:mod:`tilex.kernels.gpu`; :mod:`tilex.kernels.api` validates the inputs (dtype,
shape, C-contiguity) before calling them, so they do not check again.

The kernels run in parallel over blocks of rows and keep one row of ``d`` for
every band in a small scratch buffer, so each feature value comes from memory
once while the inner loops stay simple enough for LLVM to vectorise. The float
operations are the oracle's, in the oracle's order, and ``fastmath`` is off
(see :mod:`tilex.kernels._numba`): results are bit-identical to
:mod:`tilex.kernels.reference` (``tests/test_kernels.py``,
``test_numba_is_bit_identical_to_the_oracle``).
"""

from __future__ import annotations

import numba
import numpy as np
from tilex.kernels._numba import njit_parallel, prange
from tilex.kernels.reference import (
    ALPHA,
    EPS,
    FLOOR,
    NBINS,
    SHIFT,
    BandHistogram,
    Fusion,
)

__all__ = ["dissimilarity", "dissimilarity_histogram", "fuse", "overlay"]

ROWS_PER_BLOCK = 8
"""Rows handled by one parallel work item (amortises its scratch allocation)."""

# float32 constants: Numba freezes NumPy scalars as typed constants, so none of
# the arithmetic below is promoted to float64.
_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
_HALF = np.float32(0.5)
_SCALE = np.float32(255.0)
_INF = np.float32(np.inf)
_NAN = np.float32(np.nan)


# --------------------------------------------------------------------------- fusion


def fuse(
    g: np.ndarray,
    b: np.ndarray,
    lo: np.ndarray | None,
    hi: np.ndarray | None,
    *,
    norm: str,
    threshold: float,
    keep_normalised: bool,
) -> Fusion:
    """Fuse one tile on the CPU (see :func:`tilex.kernels.fuse`)."""
    n_bands, channels, h, w = b.shape
    pixel = norm == "pixel"
    if pixel:
        lo = hi = np.zeros(n_bands, dtype=np.float32)  # unused, keeps one signature
    # (hi - lo) + eps in float32, as the oracle computes it per band.
    rng = (hi - lo) + EPS
    winner = np.empty((h, w), dtype=np.uint8)
    score = np.empty((h, w), dtype=np.float32)
    collage = np.empty((channels, h, w), dtype=np.float32)
    normalised = np.empty((n_bands, h, w) if keep_normalised else (0, 0, 0), dtype=np.float32)
    _fuse_kernel(
        g, b, lo, rng, pixel, np.float32(threshold), keep_normalised,
        winner, score, collage, normalised,
    )  # fmt: skip
    return Fusion(winner, score, collage, normalised if keep_normalised else None)


@njit_parallel
def _fuse_kernel(g, b, lo, rng, pixel, threshold, keep, winner, score, collage, normalised):
    n_bands, channels, h, w = b.shape
    n_blocks = (h + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK
    for block in prange(n_blocks):
        d = np.empty((n_bands, w), dtype=np.float32)
        m = np.empty(w, dtype=np.float32)  # pixel norm: offset m
        den = np.empty(w, dtype=np.float32)  # pixel norm: (M - m) + eps
        for y in range(block * ROWS_PER_BLOCK, min(h, (block + 1) * ROWS_PER_BLOCK)):
            _row_dissimilarity(g, b, y, d)
            for x in range(w):
                score[y, x] = _ZERO
                winner[y, x] = 0
            if pixel:
                # m, M = nanmin_i d_i, nanmax_i d_i: NaN fails both tests and is
                # skipped; m = +inf with M = -inf is left only when every d_i is NaN.
                for x in range(w):
                    m[x] = _INF
                    den[x] = -_INF  # holds M until the division below
                for i in range(n_bands):
                    for x in range(w):
                        v = d[i, x]
                        if v < m[x]:
                            m[x] = v
                        if v > den[x]:
                            den[x] = v
                for x in range(w):
                    if m[x] == _INF and den[x] == -_INF:
                        m[x] = _NAN
                        den[x] = _NAN
                    den[x] = (den[x] - m[x]) + EPS  # (M - m) + eps
                for i in range(n_bands):
                    for x in range(w):
                        # n = (d - m) / ((M - m) + eps)
                        _keep_best(i, (d[i, x] - m[x]) / den[x], threshold, keep, y, x,
                                   winner, score, normalised)  # fmt: skip
            else:
                for i in range(n_bands):
                    for x in range(w):
                        # n = (d - lo) / ((hi - lo) + eps)
                        _keep_best(i, (d[i, x] - lo[i]) / rng[i], threshold, keep, y, x,
                                   winner, score, normalised)  # fmt: skip
            for c in range(channels):
                for x in range(w):
                    k = np.int64(winner[y, x])
                    collage[c, y, x] = b[k - 1, c, y, x] if k > 0 else _ZERO


@numba.njit(nogil=True, cache=True, fastmath=False, inline="always")
def _keep_best(i, n, threshold, keep, y, x, winner, score, normalised):
    """Clamp band ``i``'s ``n``, store it if asked, and make it the winner if it beats the best."""
    # clamp to [0.1, 1]; NaN fails both tests and stays NaN
    if n < FLOOR:
        n = FLOOR
    elif n > _ONE:
        n = _ONE
    if keep:
        normalised[i, y, x] = n
    # kept = n > t ? n : 0, then strict '>' so the lowest band wins ties
    if n > threshold and n > score[y, x]:
        score[y, x] = n
        winner[y, x] = i + 1


# --------------------------------------------------------------------------- dissimilarity


def dissimilarity(g: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``d [N, h, w] = sum_c |g_c - b_ic|`` on the CPU (see :func:`tilex.kernels.dissimilarity`)."""
    n_bands, _, h, w = b.shape
    out = np.empty((n_bands, h, w), dtype=np.float32)
    _dissimilarity_kernel(g, b, out)
    return out


@njit_parallel
def _dissimilarity_kernel(g, b, out):
    n_bands, _, h, w = b.shape
    n_blocks = (h + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK
    for block in prange(n_blocks):
        d = np.empty((n_bands, w), dtype=np.float32)
        for y in range(block * ROWS_PER_BLOCK, min(h, (block + 1) * ROWS_PER_BLOCK)):
            _row_dissimilarity(g, b, y, d)
            for i in range(n_bands):
                for x in range(w):
                    out[i, y, x] = d[i, x]


@numba.njit(nogil=True, cache=True, fastmath=False, inline="always")
def _row_dissimilarity(g, b, y, d):
    """``d[i, :] = sum_c |g[c, y, :] - b[i, c, y, :]|``, summed from 0 in channel order."""
    n_bands, channels, _, w = b.shape
    for i in range(n_bands):
        for x in range(w):
            d[i, x] = _ZERO
        for c in range(channels):
            for x in range(w):
                d[i, x] += abs(g[c, y, x] - b[i, c, y, x])


# --------------------------------------------------------------------------- histogram


def dissimilarity_histogram(g: np.ndarray, b: np.ndarray) -> BandHistogram:
    """Exact histogram of ``d_i`` per band on the CPU (see :func:`tilex.kernels.dissimilarity_histogram`).

    Work is split into ``N * K`` items (band, slab of rows) with ``K`` chosen so
    that there are at least as many items as threads; each item fills its own
    integer histogram, and the partial histograms are summed exactly.
    """
    n_bands, _, h, _ = b.shape
    slabs = max(1, min(h, -(-numba.get_num_threads() // n_bands)))
    counts = np.zeros((n_bands, slabs, NBINS), dtype=np.int64)
    dmin = np.empty((n_bands, slabs), dtype=np.float32)
    dmax = np.empty((n_bands, slabs), dtype=np.float32)
    nan = np.empty((n_bands, slabs), dtype=np.int64)
    _histogram_kernel(g, b, counts, dmin, dmax, nan)
    if slabs == 1:
        return BandHistogram(counts[:, 0], dmin[:, 0], dmax[:, 0], nan[:, 0])
    return BandHistogram(counts.sum(axis=1), dmin.min(axis=1), dmax.max(axis=1), nan.sum(axis=1))


@njit_parallel
def _histogram_kernel(g, b, counts, dmin, dmax, nan):
    n_bands, channels, h, w = b.shape
    slabs = counts.shape[1]
    rows = (h + slabs - 1) // slabs
    for item in prange(n_bands * slabs):
        i = item // slabs
        k = item % slabs
        d = np.empty((1, w), dtype=np.float32)
        bits = d.view(np.uint32)
        lo = _INF
        hi = -_INF
        n_nan = 0
        for y in range(k * rows, min(h, (k + 1) * rows)):
            for x in range(w):
                d[0, x] = _ZERO
            for c in range(channels):
                for x in range(w):
                    d[0, x] += abs(g[c, y, x] - b[i, c, y, x])
            for x in range(w):
                v = d[0, x]
                if v != v:
                    n_nan += 1
                    continue
                # bin = bits(d) >> SHIFT, with -0.0 folded onto 0.0
                k_bin = 0
                if v != _ZERO:
                    k_bin = np.int64(bits[0, x]) >> SHIFT
                counts[i, k, k_bin] += 1
                if v < lo:
                    lo = v
                if v > hi:
                    hi = v
        dmin[i, k] = lo
        dmax[i, k] = hi
        nan[i, k] = n_nan


# --------------------------------------------------------------------------- overlay


def overlay(gray: np.ndarray, score: np.ndarray) -> np.ndarray:
    """``uint8 [3, h, w]`` grey-and-blue picture on the CPU (see :func:`tilex.kernels.overlay`)."""
    h, w = gray.shape
    out = np.empty((3, h, w), dtype=np.uint8)
    _overlay_kernel(gray, score, out)
    return out


@njit_parallel
def _overlay_kernel(gray, score, out):
    h, w = gray.shape
    for y in prange(h):
        for x in range(w):
            # alpha = 0.65 s; rgb = (1 - alpha) gray + alpha (0, 0, 1)
            alpha = ALPHA * score[y, x]
            base = (_ONE - alpha) * gray[y, x]
            out[0, y, x] = _to_byte(base + alpha * _ZERO)
            out[1, y, x] = _to_byte(base + alpha * _ZERO)
            out[2, y, x] = _to_byte(base + alpha * _ONE)


@numba.njit(nogil=True, cache=True, fastmath=False, inline="always")
def _to_byte(v):
    """``floor(clip(v, 0, 1) * 255 + 0.5)`` as uint8, NaN -> 0."""
    if v > _ONE:
        v = _ONE
    elif not v >= _ZERO:  # negative or NaN
        v = _ZERO
    return np.uint8(np.floor(v * _SCALE + _HALF))
