"""The NumPy oracle: the fusion and statistics contracts written as plainly as possible.

Every other implementation (Numba on CPU, CuPy on GPU) is tested against this
module. It is slow on purpose: it favours obviousness over speed and keeps
float32 arithmetic in the same order as the fast kernels, so that winners can be
compared exactly.

Fusion
------
For visible features ``g [C, h, w]`` and band features ``b [N, C, h, w]``:

1. ``d_i = sum_c |g_c - b_ic|`` (summed over c in order, float32).
2. Normalise. ``norm="band"``: ``n_i = (d_i - lo_i) / ((hi_i - lo_i) + 1e-8)``
   with per-band ``lo``/``hi`` from the caller. ``norm="pixel"``:
   ``n_i = (d_i - m) / ((M - m) + 1e-8)`` with ``m``/``M`` the min/max over
   the bands at that pixel (NaN ignored).
3. Clamp ``n`` to ``[0.1, 1.0]``; set ``n_i = 0`` where ``n_i <= threshold``.
   A NaN ``d_i`` gives ``n_i = 0``: it never wins.
4. ``winner = 1 + argmax_i n_i`` (lowest band on ties), ``0`` where every
   ``n_i`` is 0.
5. ``score = n_winner`` (0 where none); ``collage = b_winner`` (0 where none).

Histogram of the dissimilarity
------------------------------
An exact, mergeable per-band summary of ``d_i`` over a tile. ``d >= 0`` by
construction, and for non-negative float32 the unsigned bit pattern is
monotonic in the value, so the bin of ``d`` is the top bits of its pattern::

    bin(d) = bits(d) >> SHIFT        (SHIFT = 13, NBINS = 2**18)

Bin ``i`` holds the float32 values whose pattern lies in
``[i << SHIFT, (i + 1) << SHIFT)``: 2**13 consecutive floats, so a relative
width of 2**-10 for normal numbers. ``-0.0`` counts as ``0.0``; ``+inf`` has
its own bin (``INF_BIN``); NaN is not binned but counted in ``nan``. ``dmin``
and ``dmax`` are exact; a band with no non-NaN value has ``dmin = +inf`` and
``dmax = -inf`` (the identities of min and max, so merging needs no special
case). Counts are integers, so the histogram of a scan is the same whatever
tiles it was computed in.

Overlay
-------
ArtExtract's picture: the visible image in grey, high-score areas in blue.
All in float32::

    alpha = 0.65 * score
    rgb   = (1 - alpha) * gray + alpha * (0, 0, 1)
    out   = uint8(floor(clip(rgb, 0, 1) * 255 + 0.5))     (NaN -> 0)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "ALPHA",
    "EPS",
    "FLOOR",
    "INF_BIN",
    "NBINS",
    "SHIFT",
    "BandHistogram",
    "Fusion",
    "bin_lower_edge",
    "bin_of",
    "bin_upper_edge",
    "dissimilarity_reference",
    "fuse_reference",
    "histogram_percentiles",
    "histogram_reference",
    "merge_histograms",
    "overlay_reference",
]

EPS = np.float32(1e-8)
"""Added to the normalisation range so a flat band divides safely."""

FLOOR = np.float32(0.1)
"""Lower clamp of a normalised dissimilarity (ArtExtract's ``clip(0.1, 1)``)."""

ALPHA = np.float32(0.65)
"""Opacity of the blue overlay at score 1."""

SHIFT = 13
"""Bits of the float32 pattern dropped to form a histogram bin (10 mantissa bits kept)."""

NBINS = 1 << (31 - SHIFT)
"""Number of histogram bins: every non-negative float32 pattern has one (2**18)."""

INF_BIN = 0x7F800000 >> SHIFT
"""The bin of ``+inf``; bins above it would hold NaN patterns and stay empty."""


class Fusion(NamedTuple):
    """Per-pixel result of the fusion of one tile."""

    winner: np.ndarray  # uint8 [h, w]: 0 = no band, i = band i (1-based)
    score: np.ndarray  # float32 [h, w]: normalised dissimilarity of the winner
    collage: np.ndarray  # float32 [C, h, w]: the winning band's features
    normalised: np.ndarray | None  # float32 [N, h, w] clamped n (NaN kept), or None


class BandHistogram(NamedTuple):
    """Exact per-band histogram of the dissimilarity ``d_i`` over some pixels.

    Merge two with :func:`merge_histograms`; read percentiles with
    :func:`histogram_percentiles`.
    """

    counts: np.ndarray  # int64 [N, NBINS]: non-NaN values per bin
    dmin: np.ndarray  # float32 [N]: exact minimum (+inf when no value)
    dmax: np.ndarray  # float32 [N]: exact maximum (-inf when no value)
    nan: np.ndarray  # int64 [N]: NaN values (not binned)


def dissimilarity_reference(g: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``d [N, h, w] = sum_c |g_c - b_ic|`` in float32, channels summed in order."""
    g = np.asarray(g, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    d = np.zeros((b.shape[0],) + b.shape[2:], dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN features are allowed
        for c in range(b.shape[1]):
            d += np.abs(g[c][None] - b[:, c])
    return d


def fuse_reference(
    g: np.ndarray,
    b: np.ndarray,
    lo: np.ndarray | None = None,
    hi: np.ndarray | None = None,
    *,
    norm: str = "band",
    threshold: float = 0.5,
    keep_normalised: bool = False,
) -> Fusion:
    """Fuse one tile following the contract in this module's docstring."""
    b = np.asarray(b, dtype=np.float32)
    n_bands, channels = b.shape[:2]
    d = dissimilarity_reference(g, b)
    # IEEE results (inf - inf = NaN, ...) are the contract; silence their warnings.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if norm == "band":
            lo = np.asarray(lo, dtype=np.float32).reshape(n_bands, 1, 1)
            hi = np.asarray(hi, dtype=np.float32).reshape(n_bands, 1, 1)
            n = (d - lo) / ((hi - lo) + EPS)
        elif norm == "pixel":
            with _quiet_nan_warnings():
                m = np.nanmin(d, axis=0, keepdims=True)
                big = np.nanmax(d, axis=0, keepdims=True)
            n = (d - m) / ((big - m) + EPS)
        else:
            raise ValueError(f"norm must be 'band' or 'pixel', got {norm!r}")
    n = n.astype(np.float32)
    clamped = np.clip(n, FLOOR, np.float32(1.0))  # NaN stays NaN
    kept = np.where(clamped > np.float32(threshold), clamped, np.float32(0.0))
    kept = np.nan_to_num(kept, nan=0.0).astype(np.float32)

    h, w = d.shape[1:]
    winner = np.zeros((h, w), dtype=np.uint8)
    score = np.zeros((h, w), dtype=np.float32)
    for i in range(n_bands):  # strict '>' keeps the lowest band on ties
        better = kept[i] > score
        winner[better] = i + 1
        score[better] = kept[i][better]
    collage = np.zeros((channels, h, w), dtype=np.float32)
    for i in range(n_bands):
        collage[:, winner == i + 1] = b[i][:, winner == i + 1]
    return Fusion(winner, score, collage, clamped if keep_normalised else None)


# --------------------------------------------------------------------------- histogram


def bin_of(d: np.ndarray) -> np.ndarray:
    """Bin index (int64) of non-negative float32 values: ``bits(d) >> SHIFT``.

    ``-0.0`` goes to bin 0 like ``0.0``. The result for NaN or negative values
    is meaningless (they are never binned).
    """
    d = np.asarray(d, dtype=np.float32)
    bits = np.where(d == 0, np.float32(0), d).view(np.uint32)  # -0.0 -> +0.0
    return (bits >> np.uint32(SHIFT)).astype(np.int64)


def bin_lower_edge(i: np.ndarray | int) -> np.ndarray:
    """Smallest value of bin ``i`` (float64, vectorised): the float32 ``i << SHIFT``.

    Bins above ``INF_BIN`` hold no value; their edges are ``+inf``.

    Examples
    --------
    >>> float(bin_lower_edge(bin_of(np.float32(1.5))))
    1.5
    """
    i = _check_bins(i)
    bits = (np.minimum(i, INF_BIN) << SHIFT).astype(np.uint32)
    return bits.view(np.float32).astype(np.float64)


def bin_upper_edge(i: np.ndarray | int) -> np.ndarray:
    """Exclusive upper edge of bin ``i`` (float64, vectorised).

    A value ``d`` of bin ``i`` satisfies ``lower <= d < upper``, except in
    ``INF_BIN`` (and the empty bins above it), whose edges are both ``+inf``.
    """
    i = _check_bins(i)
    return bin_lower_edge(np.minimum(i + 1, INF_BIN))


def _check_bins(i: np.ndarray | int) -> np.ndarray:
    i = np.asarray(i)
    if i.dtype.kind not in "iu":
        raise TypeError(f"bin indices must be integers, got dtype {i.dtype}")
    i = i.astype(np.int64)
    if i.size and (i.min() < 0 or i.max() >= NBINS):
        raise ValueError(f"bin indices must lie in [0, {NBINS}), got {i.min()}..{i.max()}")
    return i


def histogram_reference(g: np.ndarray, b: np.ndarray) -> BandHistogram:
    """Histogram of ``d_i`` for each band, following this module's docstring."""
    d = dissimilarity_reference(g, b)
    n_bands = d.shape[0]
    counts = np.zeros((n_bands, NBINS), dtype=np.int64)
    dmin = np.full(n_bands, np.inf, dtype=np.float32)
    dmax = np.full(n_bands, -np.inf, dtype=np.float32)
    nan = np.zeros(n_bands, dtype=np.int64)
    for i in range(n_bands):
        values = d[i].ravel()
        finite_or_inf = values[~np.isnan(values)]
        nan[i] = values.size - finite_or_inf.size
        counts[i] = np.bincount(bin_of(finite_or_inf), minlength=NBINS)
        if finite_or_inf.size:
            dmin[i] = finite_or_inf.min()
            dmax[i] = finite_or_inf.max()
    return BandHistogram(counts, dmin, dmax, nan)


def merge_histograms(a: BandHistogram, b: BandHistogram) -> BandHistogram:
    """Merge two histograms of the same bands: sum the counts, min the mins, max the maxes.

    Works on NumPy or CuPy histograms (not a mix); the result is a new histogram.
    """
    if a.counts.shape != b.counts.shape:
        raise ValueError(
            f"cannot merge histograms of {a.counts.shape[0]} and {b.counts.shape[0]} bands"
        )
    xp = _namespace_of(a.counts, b.counts)
    return BandHistogram(
        a.counts + b.counts,
        xp.minimum(a.dmin, b.dmin),
        xp.maximum(a.dmax, b.dmax),
        a.nan + b.nan,
    )


def histogram_percentiles(h: BandHistogram, q: float) -> np.ndarray:
    """Percentile ``q`` (0..100) of each band, read from the histogram (float64 ``[N]``).

    The rule, deterministic and independent of tiling: with ``n`` the band's
    non-NaN count, take the 0-based rank ``r = ceil(q / 100 * (n - 1))`` (the
    element ``np.percentile(..., method="higher")`` returns) and the bin ``k``
    holding it (the first bin whose cumulative count exceeds ``r``). The result
    is ``bin_lower_edge(k)`` clamped to ``[dmin, dmax]``, except that rank 0 is
    exactly ``dmin`` and rank ``n - 1`` exactly ``dmax``. So the result lies in
    the same bin as the true order statistic, at or below it (relative error
    below 2**-10), and q=0 / q=100 are the exact min / max. A band with no
    value gives NaN.

    Examples
    --------
    >>> g = np.zeros((1, 1, 5), np.float32)
    >>> b = np.arange(5, dtype=np.float32).reshape(1, 1, 1, 5)
    >>> histogram_percentiles(histogram_reference(g, b), 50.0)
    array([2.])
    """
    if not isinstance(h.counts, np.ndarray):
        raise TypeError(
            f"histogram_percentiles reads host (NumPy) histograms, got "
            f"{type(h.counts).__module__}.{type(h.counts).__name__}: move it with .get() first"
        )
    q = float(q)
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must lie in [0, 100], got {q}")
    cum = np.cumsum(h.counts, axis=1)
    n = cum[:, -1]
    out = np.full(n.shape, np.nan, dtype=np.float64)
    for i in np.flatnonzero(n > 0):
        # Same float steps as NumPy's virtual index: (q / 100) * (n - 1).
        rank = int(np.ceil(np.true_divide(q, 100) * (n[i] - 1)))
        if rank == 0:
            out[i] = h.dmin[i]
        elif rank == n[i] - 1:
            out[i] = h.dmax[i]
        else:
            k = int(np.searchsorted(cum[i], rank, side="right"))
            out[i] = min(max(float(bin_lower_edge(k)), float(h.dmin[i])), float(h.dmax[i]))
    return out


# --------------------------------------------------------------------------- overlay


def overlay_reference(gray: np.ndarray, score: np.ndarray) -> np.ndarray:
    """``uint8 [3, h, w]``: ``gray`` in grey, blended to blue by ``0.65 * score``."""
    gray = np.asarray(gray, dtype=np.float32)
    score = np.asarray(score, dtype=np.float32)
    blue = np.array([0.0, 0.0, 1.0], dtype=np.float32)[:, None, None]
    with np.errstate(over="ignore", invalid="ignore"):
        alpha = ALPHA * score
        rgb = (np.float32(1.0) - alpha) * gray + alpha * blue  # float32, two roundings
        rgb = np.nan_to_num(np.clip(rgb, np.float32(0.0), np.float32(1.0)), nan=0.0)
        scaled = rgb * np.float32(255.0) + np.float32(0.5)
    return np.floor(scaled).astype(np.uint8)


# --------------------------------------------------------------------------- helpers


def _namespace_of(*arrays: object):
    """NumPy or CuPy, from the arrays' types (without importing CuPy for NumPy arrays)."""
    modules = {type(a).__module__.split(".")[0] for a in arrays}
    if modules == {"numpy"}:
        return np
    if modules == {"cupy"}:
        import cupy

        return cupy
    raise TypeError(f"expected all NumPy or all CuPy arrays, got types from {sorted(modules)}")


class _quiet_nan_warnings:
    """Silence NumPy's 'All-NaN slice' warning: an all-NaN pixel has no winner."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
