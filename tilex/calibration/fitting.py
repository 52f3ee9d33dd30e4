"""The calibration's fit: robust least squares from mergeable sums over sampled squares.

See :mod:`tilex.calibration` for the method and its exactness; the model it
fits is :class:`tilex.calibration.Calibration`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from tilex.calibration.model import (
    _SURFACE_MODES,
    _TABLE_MODES,
    CUTOFF,
    LINEAR_LUMA,
    REFITS,
    SQUARE_CUT,
    SQUARE_MIN,
    TABLE_CELLS,
    TABLE_SHRINK,
    Calibration,
    CalibrationSpec,
    colour_cells,
    gradient_terms,
    srgb_to_linear,
    surface_terms,
)
from tilex.grid import Region
from tilex.kernels._numba import njit
from tilex.stats import ABS_FLOOR, MAD_TO_SIGMA, StatsSpec, sample_regions

__all__ = [
    "CACHE_BYTES",
    "FIT_THREADS",
    "FitSums",
    "fit",
    "fit_image",
    "fit_scan",
    "fit_squares",
    "fit_stride",
]

CACHE_BYTES = 256 << 20
"""The fit keeps the squares' features up to this size between its passes, as float32 where
that is exact (68 bytes a pixel for the colour model of 8 bands: about 3.9 Mpx). A scan fits
over an evenly spaced subset of the statistics' squares that fits in it
(:func:`fit_scan`), so each square is read and decoded once, whatever the scan's size."""

FIT_THREADS = 8
"""At most this many threads compute the squares' sums (their number changes no bit)."""

_SHIFT = 16  # |r| histogram: bits(float32) >> 16, 2**15 bins of relative width 2**-7
_NBINS = 1 << 15


def _features(
    visible: np.ndarray,
    mode: str,
    linearise: bool,
    place: tuple[tuple[int, int], tuple[int, int]] | None = None,
) -> np.ndarray:
    """``X [k, h*w]`` float64: linear ``R, G, B, 1`` (affine), ``Y, 1`` (gain), or the
    affine terms and :func:`surface_terms` (flat; ``place = (origin, scan shape)``)."""
    rgb = srgb_to_linear(visible) if linearise else np.asarray(visible, np.float32)
    h, w = rgb.shape[1:]
    rgb = rgb.reshape(3, -1).astype(np.float64)
    ones = np.ones((1, rgb.shape[1]))
    if mode == "gain":
        y = LINEAR_LUMA[0] * rgb[0] + LINEAR_LUMA[1] * rgb[1] + LINEAR_LUMA[2] * rgb[2]
        return np.concatenate([y[None], ones])
    if mode in _SURFACE_MODES:
        assert place is not None, "the flat model needs each square's place in the scan"
        (oy, ox), shape = place
        rows, cols = np.mgrid[oy : oy + h, ox : ox + w]
        terms = np.stack(surface_terms(rows, cols, shape)).reshape(5, -1).astype(np.float64)
        if mode == "registered":
            shifts = np.stack(gradient_terms(rgb.reshape(3, h, w).astype(np.float32)))
            terms = np.concatenate([terms, shifts.reshape(6, -1).astype(np.float64)])
        return np.concatenate([rgb, ones, terms])
    return np.concatenate([rgb, ones])


@dataclass
class FitSums:
    """Mergeable sums of one fitting pass, kept per sampled square (by its index).

    ``normal[i]`` holds ``X^T X`` ``[N, k, k]`` and ``X^T y`` ``[N, k]`` plus the
    pixel count ``[N]`` of square ``i``; ``hist`` the integer histogram of
    ``|r|`` ``[N, bins]`` and ``medians[i]`` the median signed residual ``[N]``
    of square ``i`` (a histogram pass). :meth:`merge` unites disjoint groups of squares;
    :meth:`totals` adds the squares in index order, so the result is the same
    bits however the squares were grouped.
    """

    normal: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    hist: np.ndarray | None = None
    medians: dict[int, np.ndarray] = field(default_factory=dict)

    def merge(self, other: FitSums) -> FitSums:
        merged = FitSums(
            dict(self.normal), None if self.hist is None else self.hist.copy(), dict(self.medians)
        )
        merged.update(other)
        return merged

    def update(self, other: FitSums) -> None:
        """Add ``other``'s squares to these, in place (the groups must be disjoint)."""
        if self.normal.keys() & other.normal.keys() or self.medians.keys() & other.medians.keys():
            raise ValueError("fit sums of overlapping groups of squares cannot be merged")
        self.normal.update(other.normal)
        self.medians.update(other.medians)
        if other.hist is not None:  # integer counts: the same whatever the order
            self.hist = other.hist.copy() if self.hist is None else self.hist + other.hist

    def totals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        xtx = xty = count = None
        for i in sorted(self.normal):
            a, b, n = self.normal[i]
            xtx, xty, count = (a, b, n) if xtx is None else (xtx + a, xty + b, count + n)
        if xtx is None:
            raise ValueError("no sampled square to fit the calibration from")
        return xtx, xty, count


def _residuals(x: np.ndarray, y: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``|y - X a|`` ``[N, n]`` float64 for coefficients ``coef [N, k]``."""
    return np.abs(y - coef @ x)


def _squares_kept(medians: dict[int, np.ndarray], n_squares: int) -> np.ndarray | None:
    """``[S, N]`` bool: whether each square stays in each band's refit (see :data:`SQUARE_CUT`).

    ``None`` (every square stays) below :data:`SQUARE_MIN` squares. A square within
    one 16-bit grey level (:data:`tilex.stats.ABS_FLOOR`) of the squares' median always
    stays, so squares that agree to rounding (an exact fit) are never cut. The medians
    are taken over the squares' values as an array in the squares' order: the same
    bits however they were grouped.

    Examples
    --------
    >>> medians = {i: np.array([0.01 * (i % 3), 0.0]) for i in range(20)}
    >>> medians[7] = np.array([0.5, 0.0])  # one square far from the others in band 0
    >>> kept = _squares_kept(medians, 20)
    >>> kept[:, 0].sum(), kept[7, 0], kept[:, 1].all()
    (np.int64(19), np.False_, np.True_)
    """
    if n_squares < SQUARE_MIN:
        return None
    values = np.stack([medians[i] for i in range(n_squares)])  # [S, N]
    centre = np.median(values, axis=0)
    spread = MAD_TO_SIGMA * np.median(np.abs(values - centre), axis=0)
    return np.abs(values - centre) <= np.maximum(SQUARE_CUT * spread, ABS_FLOOR)


def _accumulate(
    index: int,
    x: np.ndarray,
    y: np.ndarray,
    previous: np.ndarray | None,
    cutoff: np.ndarray | None,
    sums: FitSums,
    histogram: bool,
    square_kept: np.ndarray | None = None,
) -> None:
    """Add one square's contribution to ``sums``: the normal equations of its kept pixels
    (within ``cutoff`` of ``previous``, in the bands ``square_kept`` keeps it for), or the
    ``|r|`` histogram and median signed residual of ``previous``."""
    n_bands = y.shape[0]
    if histogram:
        r = y - previous @ x  # type: ignore[operator]
        counts = _abs_histogram(r)
        sums.medians[index] = np.median(r, axis=1)
        if sums.hist is None:
            sums.hist = counts
        else:
            sums.hist += counts
        return
    keep = np.ones(y.shape, bool)
    if previous is not None:
        keep = _residuals(x, y, previous) <= cutoff[:, None]  # type: ignore[index]
    if square_kept is not None:
        keep &= square_kept[:, None]
    k = x.shape[0]
    xtx = np.zeros((n_bands, k, k))
    xty = np.zeros((n_bands, k))
    _normal_sums(x, y, keep, xtx, xty)
    sums.normal[index] = (xtx, xty, keep.sum(axis=1))


@njit
def _normal_sums(
    x: np.ndarray, y: np.ndarray, keep: np.ndarray, xtx: np.ndarray, xty: np.ndarray
) -> None:  # pragma: no cover (compiled; tested through fit)
    """Add ``X^T X`` ``[N, k, k]`` and ``X^T y`` ``[N, k]`` of the kept pixels to ``xtx``, ``xty``.

    ``x [k, n]``, ``y [N, n]`` and ``keep [N, n]``, as :func:`fit` holds them.
    Each sum runs over the pixels in their order, one product at a time (no
    reassociation, no FMA: the tilex Numba preset), so a square gives the same
    bits however it was read and whatever else the fit saw; the upper triangle
    is summed, the lower one copied from it.
    """
    k, n = x.shape
    n_bands = y.shape[0]
    m = k * (k + 1) // 2
    row = np.empty(k)
    outer = np.empty(m)
    acc = np.zeros((n_bands, m))
    for p in range(n):
        for i in range(k):
            row[i] = x[i, p]
        q = 0
        for i in range(k):
            for j in range(i, k):
                outer[q] = row[i] * row[j]
                q += 1
        for b in range(n_bands):
            if keep[b, p]:
                target = acc[b]
                for q in range(m):
                    target[q] += outer[q]
                yb = y[b, p]
                for i in range(k):
                    xty[b, i] += row[i] * yb
    for b in range(n_bands):
        q = 0
        for i in range(k):
            for j in range(i, k):
                xtx[b, i, j] = acc[b, q]
                xtx[b, j, i] = acc[b, q]
                q += 1


def _abs_histogram(r: np.ndarray) -> np.ndarray:
    """Integer histogram ``[N, bins]`` of ``|r|`` (float32 bit-pattern bins, see the module)."""
    a = np.abs(r).astype(np.float32)
    bins = (a.view(np.uint32) >> np.uint32(_SHIFT)).astype(np.intp)
    bins += np.arange(a.shape[0], dtype=np.intp)[:, None] * _NBINS  # one count per band
    n_bands = a.shape[0]
    return np.bincount(bins.ravel(), minlength=n_bands * _NBINS).reshape(n_bands, _NBINS)


def _solve(xtx: np.ndarray, xty: np.ndarray) -> np.ndarray:
    return np.stack([np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(xtx, xty, strict=True)])


def _median_cutoff(hist: np.ndarray) -> np.ndarray:
    """Per band ``CUTOFF * 1.4826 * median |r|`` from the histogram (the median bin's upper edge)."""
    cum = np.cumsum(hist, axis=1)
    half = (cum[:, -1] + 1) // 2
    median_bin = np.array([int(np.searchsorted(c, h)) for c, h in zip(cum, half, strict=True)])
    upper = ((median_bin.astype(np.uint64) + 1) << np.uint64(_SHIFT)).astype(np.uint32)
    median = upper.view(np.float32).astype(np.float64)
    return CUTOFF * MAD_TO_SIGMA * median


def fit(
    squares: Sequence[tuple[np.ndarray, np.ndarray]] | Iterable[tuple[np.ndarray, np.ndarray]],
    spec: CalibrationSpec,
    *,
    groups: int = 1,
    origins: Sequence[tuple[int, int]] | None = None,
    shape: tuple[int, int] | None = None,
    threads: int | None = None,
) -> Calibration:
    """Fit ``spec``'s model to ``(visible [3, h, w], bands [N, h, w])`` squares, robustly.

    The fit makes 1 + 2 * :data:`REFITS` passes over ``squares``; each square is
    read once while the features fit in :data:`CACHE_BYTES`, otherwise once
    per pass, so ``squares`` must be a sequence (or a re-iterable). The
    result is the same bits either way. ``groups`` splits the squares into
    that many contiguous groups whose sums are merged, as a cluster would;
    the result does not depend on it, nor on ``threads`` (default: the CPU
    count, at most :data:`FIT_THREADS`), the threads that work on the
    squares (each square's sums are its own; they are added in the squares'
    order). The flat model needs each square's
    top-left ``origins`` in a scan of ``shape``; without them one square is
    taken as the whole scan.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> vis = rng.random((3, 32, 32), dtype=np.float32)
    >>> band = 0.5 * srgb_to_linear(vis)[1:2] + 0.1
    >>> cal = fit([(vis, band)], CalibrationSpec("affine"))
    >>> np.round(cal.coefficients[0], 4) + 0.0  # (+ 0.0: no -0.0)
    array([0. , 0.5, 0. , 0.1])
    """
    if not spec.enabled:
        raise ValueError("calibrate='none' fits nothing")
    squares = list(squares) if not isinstance(squares, Sequence) else squares
    threads = threads or min(FIT_THREADS, os.cpu_count() or 1)
    linearise = spec.visible == "srgb"
    if spec.mode in _SURFACE_MODES and origins is None:
        if len(squares) != 1:
            raise ValueError("the flat model needs the squares' origins and the scan's shape")
        origins, shape = [(0, 0)], tuple(squares[0][0].shape[1:])  # type: ignore[assignment]

    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    held = 0
    lock = threading.Lock()

    def features(index: int) -> tuple[np.ndarray, np.ndarray]:
        """``X`` and ``y`` of square ``index``: kept in memory up to CACHE_BYTES, else made again."""
        nonlocal held
        kept = cache.get(index)
        if kept is not None:
            x, y = kept
            return x.astype(np.float64), y.astype(np.float64)
        visible, bands = squares[index]
        place = (origins[index], shape) if spec.mode in _SURFACE_MODES else None  # type: ignore[index]
        x = _features(visible, spec.mode, linearise, place)  # type: ignore[arg-type]
        y = np.asarray(bands, np.float32).reshape(bands.shape[0], -1)
        # float32 values kept as float32 (the same numbers, half the memory); the gain
        # model's luminance is a float64 sum
        kept = (x if spec.mode == "gain" else x.astype(np.float32), y)
        size = kept[0].nbytes + kept[1].nbytes
        with lock:  # which squares are kept may depend on the threads; their values do not
            if held + size <= CACHE_BYTES:
                cache[index] = kept
                held += size
        return x, y.astype(np.float64)

    def one_pass(
        previous: np.ndarray | None,
        cutoff: np.ndarray | None,
        hist: bool,
        kept: np.ndarray | None = None,
    ) -> FitSums:
        def group(bound: tuple[int, int]) -> FitSums:
            part = FitSums()
            for index in range(*bound):
                square = None if kept is None else kept[index]
                _accumulate(index, *features(index), previous, cutoff, part, hist, square)
            return part

        merged = FitSums()
        for part in pool.map(group, _groups(len(squares), groups, threads)):
            merged.update(part)
        return merged

    threads = max(1, min(threads, len(squares)))
    with ThreadPoolExecutor(threads, thread_name_prefix="tilex-fit") as pool:
        coef, count = _fit_from(one_pass(None, None, False))
        for _ in range(REFITS):
            residuals = one_pass(coef, None, True)
            cutoff = _median_cutoff(residuals.hist)  # type: ignore[arg-type]
            squares_kept = _squares_kept(residuals.medians, len(squares))
            refit, kept = _fit_from(one_pass(coef, cutoff, False, squares_kept))
            # too few inliers (an exact fit): keep the previous model
            ok = kept >= 4 * coef.shape[1]
            coef = np.where(ok[:, None], refit, coef)
            count = np.where(ok, kept, count)
        table = None
        if spec.mode in _TABLE_MODES:
            # cut the residuals at float32 as predict() adds them: the table sees what a run compares
            coef = coef.astype(np.float32).astype(np.float64)
            table = _fit_table(len(squares), features, coef, pool, threads)
    if spec.mode == "gain":
        coef = np.concatenate([coef[:, :1] * np.array(LINEAR_LUMA), coef[:, 1:]], axis=1)
    return Calibration(
        spec.mode,
        linearise,
        tuple(tuple(float(v) for v in c) for c in coef),
        tuple(int(n) for n in count),
        (int(shape[0]), int(shape[1])) if spec.mode in _SURFACE_MODES else None,  # type: ignore[index]
        None if table is None else tuple(tuple(float(v) for v in band) for band in table),
    )


def _fit_table(
    n_squares: int, features: Any, coef: np.ndarray, pool: Any = None, threads: int = 1
) -> np.ndarray:
    """The colour table ``[N, TABLE_CELLS ** 3]`` (float32) of the model's residuals, robustly.

    Per cell and band the residuals' sum and count over the squares, added in
    the squares' order, give ``sum / (count + TABLE_SHRINK)``; then
    :data:`REFITS` times the same without the residuals farther from their
    cell's mean (``sum / count``, not shrunk: a colour's pixels are not
    outliers of their own colour) than ``CUTOFF`` robust spreads of what the
    means leave.
    """
    n_bands, cells = coef.shape[0], TABLE_CELLS**3
    offsets = np.arange(n_bands, dtype=np.int64)[:, None] * cells

    def residuals(index: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = features(index)
        return colour_cells(x[:3]), y - coef @ x

    def each_square(work: Any) -> Iterator[Any]:
        """``work(index)`` of every square, in the squares' order, on the pool's threads."""
        if pool is None:
            return map(work, range(n_squares))
        batches = pool.map(
            lambda run: [work(i) for i in range(*run)], _groups(n_squares, 1, threads)
        )
        return (one for batch in batches for one in batch)

    def fit_cells(
        means: np.ndarray | None, cutoff: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The shrunk table and the cells' means, of the residuals within ``cutoff`` of ``means``."""

        def square(index: int) -> tuple[np.ndarray, np.ndarray]:
            cell, r = residuals(index)
            keep = np.ones(r.shape, bool)
            if means is not None:
                keep = np.abs(r - means[:, cell]) <= cutoff[:, None]  # type: ignore[index]
            # one count for all bands (band i's cells offset by i * cells): each cell's
            # residuals are still added in the pixels' order
            index = (cell[None, :] + offsets)[keep]
            return (
                np.bincount(index, weights=r[keep], minlength=n_bands * cells),
                np.bincount(index, minlength=n_bands * cells),
            )

        total, count = np.zeros((n_bands, cells)), np.zeros((n_bands, cells))
        for part_total, part_count in each_square(square):  # added in the squares' order
            total += part_total.reshape(n_bands, cells)
            count += part_count.reshape(n_bands, cells)
        return total / (count + TABLE_SHRINK), total / np.maximum(count, 1)

    def spread(means: np.ndarray) -> np.ndarray:
        def square(index: int) -> np.ndarray:
            cell, r = residuals(index)
            return _abs_histogram(r - means[:, cell])

        hist = None
        for part in each_square(square):
            if hist is None:
                hist = part
            else:
                hist += part
        return _median_cutoff(hist)  # type: ignore[arg-type]

    table, means = fit_cells(None, None)
    for _ in range(REFITS):
        table, means = fit_cells(means, spread(means))
    return table.astype(np.float32)


def _groups(n: int, groups: int, threads: int) -> list[tuple[int, int]]:
    """Contiguous ``(lo, hi)`` runs of ``n`` squares: ``groups`` of them, each cut into a few
    batches a thread (the sums are per square, so the cut changes no result)."""
    runs = []
    bounds = np.linspace(0, n, max(1, groups) + 1).astype(int)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        per = max(1, -(-(hi - lo) // (4 * threads)))
        runs += [(i, min(i + per, hi)) for i in range(lo, hi, per)]
    return runs


def _fit_from(sums: FitSums) -> tuple[np.ndarray, np.ndarray]:
    xtx, xty, count = sums.totals()
    return _solve(xtx, xty), count


class _ScanSquares(Sequence):
    """The sampled squares of a scan, read on demand (a sequence: :func:`fit` indexes it)."""

    def __init__(self, scan: Any, regions: list[Region]) -> None:
        self.scan, self.regions = scan, regions

    def __len__(self) -> int:
        return len(self.regions)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        return self.scan.read_region(*self.regions[i])


def fit_stride(regions: Sequence[Region], spec: CalibrationSpec, n_bands: int) -> int:
    """The ``k`` of :func:`fit_scan`: keep every ``k``-th square so the features fit the cache.

    Examples
    --------
    >>> squares = [(0, 64, 64 * i, 64 * (i + 1)) for i in range(10_000)]  # 41 Mpx
    >>> fit_stride(squares, CalibrationSpec("colour"), 8), fit_stride(squares[:100], CalibrationSpec(), 8)
    (11, 1)
    """
    per_pixel = (8 if spec.mode == "gain" else 4) * _N_FEATURES[spec.mode] + 4 * n_bands
    pixels = sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in regions)
    return max(1, -(-pixels * per_pixel // max(CACHE_BYTES, 1)))


_N_FEATURES = {"gain": 2, "affine": 4, "flat": 9, "colour": 9, "registered": 15}


def fit_scan(
    scan: Any, spec: CalibrationSpec, regions: list[Region], *, groups: int = 1
) -> Calibration:
    """Fit ``spec``'s model over ``regions`` of ``scan`` (those of :func:`tilex.stats.sample_regions`).

    Squares are read without a halo (the model is pointwise), once each: the
    fit takes every ``k``-th of ``regions``, the smallest ``k`` whose squares'
    features fit in :data:`CACHE_BYTES` (a subset fixed by the regions alone,
    so the model does not depend on the tiling or the workers).
    """
    return fit_squares(
        scan, spec, regions[:: fit_stride(regions, spec, scan.n_bands)], groups=groups
    )


def fit_squares(
    scan: Any, spec: CalibrationSpec, regions: Sequence[Region], *, groups: int = 1
) -> Calibration:
    """Fit ``spec``'s model over exactly these ``regions`` of ``scan``, read on demand."""
    origins = [(y0, x0) for y0, _, x0, _ in regions]
    shape = (int(scan.shape[0]), int(scan.shape[1]))
    return fit(_ScanSquares(scan, list(regions)), spec, groups=groups, origins=origins, shape=shape)


class _Image(NamedTuple):
    """An image in memory with the part of a scan's interface :func:`fit_scan` reads."""

    visible: np.ndarray  # [3, h, w]
    bands: np.ndarray  # [N, h, w]

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.visible.shape[1]), int(self.visible.shape[2])

    @property
    def n_bands(self) -> int:
        return int(self.bands.shape[0])

    def read_region(self, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
        return self.visible[:, y0:y1, x0:x1], self.bands[:, y0:y1, x0:x1]


def fit_image(visible: np.ndarray, bands: np.ndarray, spec: CalibrationSpec) -> Calibration:
    """Fit ``spec``'s model to an image in memory as a run with default statistics fits a scan.

    ``visible [3, h, w]`` and ``bands [N, h, w]`` as a run reads them; the squares are
    those of :func:`tilex.stats.sample_regions` at the default sample
    (:class:`tilex.stats.StatsSpec`), through :func:`fit_scan`, so the model is the one
    ``tilex run`` would fit (training and validation scenes use it).
    """
    image = _Image(visible, bands)
    stats = StatsSpec()
    regions = sample_regions(image.shape, stats.fraction_for(image.shape), stats.block)
    return fit_scan(image, spec, regions)
