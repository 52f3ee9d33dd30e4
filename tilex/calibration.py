"""Whole-scan calibration: what the visible image predicts for each band.

The visible image is sRGB-encoded colour; each band is linear reflectance on
its own scale. Compared in absolute value, every coloured region differs.
With a calibration each band ``i`` is compared with its prediction from the
visible image instead:

- the visible plane is decoded to linear light (the piecewise sRGB EOTF,
  :func:`srgb_to_linear`) unless it is already linear (``visible="linear"``);
- ``mode="affine"``: ``p_i = a_i . [R, G, B, 1]`` of linear RGB;
  ``mode="gain"``: ``p_i = g_i * Y + c_i`` with ``Y`` the Rec. 709 luminance
  of linear RGB (:data:`LINEAR_LUMA`), stored as the same 4 coefficients;
  ``mode="flat"``: the affine model plus a quadratic surface over the scan,
  ``q_i . [u, v, u^2, u v, v^2]`` with ``u, v`` the pixel's column and row
  mapped to ``[-1, 1]`` over the whole scan (:func:`surface_terms`): each
  band's own uneven illumination and vignetting, which no colour explains;
  ``mode="colour"``: the flat model plus a colour table, ``t_i[cell(R, G, B)]``
  with linear RGB cut into :data:`TABLE_CELLS` cells per channel: what a band
  holds for each visible colour beyond the smooth model (a pigment that is
  darker in the infrared than its colour says). A cell's value is the mean
  residual of its pixels shrunk towards 0 by :data:`TABLE_SHRINK` pixels, so a
  rare colour keeps the smooth model, and it is refitted without the pixels
  far from it like the model (:data:`REFITS`). Hidden content is what differs
  from the other pixels of the same visible colour;
  ``mode="registered"``: the colour model plus ``d_i . [dR/dx, dG/dx, dB/dx,
  dR/dy, dG/dy, dB/dy]``, the linear RGB's central differences
  (:func:`gradient_terms`): to first order, a band registered a fraction of
  a pixel off the visible image, which otherwise differs along every edge.
  A prediction then needs one pixel around it (:attr:`Calibration.context`).

The fit is least squares from float64 sums ``X^T X`` and ``X^T y`` of each
sampled square (:func:`tilex.stats.sample_regions`, read straight from the
scan: pointwise, so no halo and no encoder), kept per square and added up in
the order of the squares, so the model is bit-identical whatever the tile
size, the tile order or the grouping of squares into tasks
(:meth:`FitSums.merge`).

Robustness to the hidden content itself: :data:`REFITS` times, the pixels
whose residual exceeds ``CUTOFF`` times a robust scale are dropped and the
model refitted. The scale is ``1.4826 * median |r|`` (the normal-consistent
median absolute residual), the median read from a mergeable histogram of
``|r|`` (integer counts over float32 bit-pattern bins of relative width
2**-7, so it too is independent of the order; the bin's upper edge is used).

Examples
--------
>>> spec = CalibrationSpec(mode="gain")
>>> spec.enabled, spec.visible
(True, 'srgb')
>>> CalibrationSpec(mode="rainbow")
Traceback (most recent call last):
...
tilex.errors.PlanError: --calibrate must be one of none, gain, affine, flat, colour, registered, got 'rainbow'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from tilex.errors import PlanError
from tilex.grid import Region
from tilex.stats import MAD_TO_SIGMA

__all__ = [
    "CACHE_BYTES",
    "CALIBRATION_MODES",
    "CUTOFF",
    "LINEAR_LUMA",
    "REFITS",
    "TABLE_CELLS",
    "TABLE_SHRINK",
    "VISIBLE_ENCODINGS",
    "Calibration",
    "CalibrationSpec",
    "FitSums",
    "fit",
    "fit_scan",
    "srgb_to_linear",
    "colour_cells",
    "fit_stride",
    "gradient_terms",
    "surface_terms",
]

CALIBRATION_MODES = ("none", "gain", "affine", "flat", "colour", "registered")
_SURFACE_MODES = ("flat", "colour", "registered")  # with the lighting surface (the scan's shape)
_TABLE_MODES = ("colour", "registered")  # with the colour table
VISIBLE_ENCODINGS = ("srgb", "linear")
LINEAR_LUMA: tuple[float, float, float] = (0.2126, 0.7152, 0.0722)
"""Rec. 709 luminance weights of *linear* red, green and blue (the gain model's ``Y``)."""

REFITS = 2
"""Robust refits after the first plain fit."""

CACHE_BYTES = 256 << 20
"""The fit keeps the squares' features up to this size between its passes, as float32 where
that is exact (68 bytes a pixel for the colour model of 8 bands: about 3.9 Mpx). A scan fits
over an evenly spaced subset of the statistics' squares that fits in it
(:func:`fit_scan`), so each square is read and decoded once, whatever the scan's size."""

CUTOFF = 3.0
"""Pixels with ``|r| > CUTOFF * 1.4826 * median |r|`` are dropped before a refit."""

TABLE_CELLS = 12
"""Cells of the colour table per linear channel (``TABLE_CELLS ** 3`` colours)."""

TABLE_SHRINK = 20.0
"""A cell's value is ``sum(r) / (count + TABLE_SHRINK)``: a colour seen on few pixels adds little."""

_SHIFT = 16  # |r| histogram: bits(float32) >> 16, 2**15 bins of relative width 2**-7
_NBINS = 1 << 15


@dataclass(frozen=True)
class CalibrationSpec:
    """Whether and how bands are predicted from the visible image (``--calibrate``)."""

    mode: str = "registered"
    visible: str = "srgb"

    def __post_init__(self) -> None:
        for name, option, choices in (
            ("mode", "--calibrate", CALIBRATION_MODES),
            ("visible", "--visible-encoding", VISIBLE_ENCODINGS),
        ):
            value = getattr(self, name)
            if str(value) not in choices:
                raise PlanError(f"{option} must be one of {', '.join(choices)}, got {value!r}")
            object.__setattr__(self, name, str(value))

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @property
    def context(self) -> int:
        """Pixels around a pixel its prediction reads: the exact halo grows by this much."""
        return 1 if self.mode == "registered" else 0


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """Linear light (float32) of sRGB-encoded values in [0, 1] (IEC 61966-2-1 EOTF).

    Computed in float64 and rounded once, so every pixel gets the same bits
    wherever it lies in the array.

    Examples
    --------
    >>> srgb_to_linear(np.array([0.0, 0.04045, 0.5, 1.0], np.float32)).round(6)
    array([0.      , 0.003131, 0.214041, 1.      ], dtype=float32)
    """
    x = np.asarray(rgb, np.float64)
    low = x / 12.92
    high = ((np.maximum(x, 0.04045) + 0.055) / 1.055) ** 2.4
    return np.where(x <= 0.04045, low, high).astype(np.float32)


def surface_terms(
    rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, ...]:
    """``u, v, u^2, u v, v^2`` (float32) of pixels at scan ``rows`` and ``cols`` (equal shapes).

    ``u = (2 col + 1) / W - 1`` and ``v = (2 row + 1) / H - 1``: pixel centres
    mapped to ``[-1, 1]`` over the whole ``H x W`` scan, each rounded once from
    float64 and multiplied in float32, so a pixel's terms do not depend on the
    region it is read in.

    Examples
    --------
    >>> u, v, uu, uv, vv = surface_terms(np.array([0, 1]), np.array([0, 3]), (2, 4))
    >>> u.tolist(), v.tolist(), uv.tolist()
    ([-0.75, 0.75], [-0.5, 0.5], [0.375, 0.375])
    """
    height, width = shape
    u = ((2.0 * np.asarray(cols, np.float64) + 1.0) / width - 1.0).astype(np.float32)
    v = ((2.0 * np.asarray(rows, np.float64) + 1.0) / height - 1.0).astype(np.float32)
    return u, v, u * u, u * v, v * v


def colour_cells(rgb: np.ndarray) -> np.ndarray:
    """The colour-table cell (int64 ``[...]``) of linear ``rgb [3, ...]``.

    Examples
    --------
    >>> colour_cells(np.array([[0.0, 1.0], [0.0, 1.0], [0.5, 1.0]], np.float32)).tolist()
    [6, 1727]
    """
    index = np.clip(np.floor(np.asarray(rgb, np.float64) * TABLE_CELLS), 0, TABLE_CELLS - 1)
    index = index.astype(np.int64)
    return (index[0] * TABLE_CELLS + index[1]) * TABLE_CELLS + index[2]


def gradient_terms(rgb: np.ndarray) -> tuple[np.ndarray, ...]:
    """``dR/dx, dG/dx, dB/dx, dR/dy, dG/dy, dB/dy`` (float32 ``[h, w]``) of linear ``rgb [3, h, w]``.

    Central differences ``(f[k + 1] - f[k - 1]) / 2`` inside the array,
    one-sided differences on its border (0 across a side of one pixel): a
    pixel's terms depend on its 4 neighbours only, so they equal the whole
    scan's wherever the region holds those neighbours.

    Examples
    --------
    >>> ramp = np.broadcast_to(np.arange(4, dtype=np.float32), (3, 2, 4))
    >>> [t[0].tolist() for t in gradient_terms(ramp)[::3]]
    [[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    """
    rgb = np.asarray(rgb, np.float32)
    dx = _differences(rgb)
    dy = np.swapaxes(_differences(np.swapaxes(rgb, 1, 2)), 1, 2)
    return (dx[0], dx[1], dx[2], dy[0], dy[1], dy[2])


def _differences(a: np.ndarray) -> np.ndarray:
    """Central differences along the last axis, one-sided at its ends (float32)."""
    d = np.zeros_like(a)
    if a.shape[-1] > 1:
        d[..., 1:-1] = (a[..., 2:] - a[..., :-2]) * np.float32(0.5)
        d[..., 0] = a[..., 1] - a[..., 0]
        d[..., -1] = a[..., -1] - a[..., -2]
    return d


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


@dataclass(frozen=True)
class Calibration:
    """A fitted model: ``p_i = c_i0 R + c_i1 G + c_i2 B + c_i3`` of linear RGB, per band.

    ``coefficients`` is a tuple of 4-tuples (for ``mode="gain"``, the gain
    times :data:`LINEAR_LUMA` and the offset), of 9-tuples for ``mode="flat"``
    (then ``+ c_i4 u + c_i5 v + c_i6 u^2 + c_i7 u v + c_i8 v^2``, see
    :func:`surface_terms`, over a scan of ``shape``); ``linearised`` says
    whether the visible plane is decoded from sRGB first.

    Examples
    --------
    >>> cal = Calibration("affine", True, ((0.0, 0.0, 0.0, 0.5),))
    >>> cal.predict(np.zeros((3, 1, 2), np.float32))
    array([[[0.5, 0.5]]], dtype=float32)
    >>> Calibration.from_dict(cal.to_dict()) == cal
    True
    """

    mode: str
    linearised: bool
    coefficients: tuple[tuple[float, ...], ...]
    inliers: tuple[int, ...] = field(default=(), compare=False)
    shape: tuple[int, int] | None = None  # the scan's, for the flat model's surface
    table: tuple[tuple[float, ...], ...] | None = None  # [N][TABLE_CELLS ** 3], mode "colour"

    @cached_property
    def _table(self) -> np.ndarray | None:
        return None if self.table is None else np.array(self.table, np.float32)

    @property
    def n_bands(self) -> int:
        return len(self.coefficients)

    @property
    def spatial(self) -> bool:
        """Whether a prediction needs the pixels' places in the scan (flat and colour)."""
        return self.mode in _SURFACE_MODES

    @property
    def context(self) -> int:
        """Pixels around a pixel its prediction reads (1 for the registered model's gradients)."""
        return 1 if self.mode == "registered" else 0

    def predict(
        self, visible: np.ndarray, places: tuple[np.ndarray, np.ndarray] | None = None
    ) -> np.ndarray:
        """The predicted bands ``[N, h, w]`` float32 of a visible ``[3, h, w]`` region.

        ``places`` (the flat model only): the scan row and column of every
        pixel, two integer arrays ``[h, w]``; omitted, the region is the
        whole scan. Pointwise, in a fixed order of
        float32 operations: a pixel's prediction does not depend on the
        region it is read in.
        """
        rgb = srgb_to_linear(visible) if self.linearised else np.asarray(visible, np.float32)
        terms: tuple[np.ndarray, ...] = ()
        if self.spatial:
            if places is None and self.shape == tuple(rgb.shape[1:]):
                places = tuple(np.mgrid[: rgb.shape[1], : rgb.shape[2]])  # type: ignore[assignment]
            if places is None or self.shape is None:
                raise ValueError(
                    "the flat calibration predicts from the pixels' places in the scan"
                )
            terms = surface_terms(*places, self.shape)
            if self.mode == "registered":
                terms = (*terms, *gradient_terms(rgb))
        out = np.empty((self.n_bands, *rgb.shape[1:]), np.float32)
        for i, (r, g, b, c, *surface) in enumerate(self.coefficients):
            p = np.float32(r) * rgb[0]
            p += np.float32(g) * rgb[1]
            p += np.float32(b) * rgb[2]
            p += np.float32(c)
            for q, term in zip(surface, terms, strict=True):
                p += np.float32(q) * term
            out[i] = p
        if self._table is not None:
            cells = colour_cells(rgb)
            for i in range(self.n_bands):
                out[i] += self._table[i][cells]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "linearised": self.linearised,
            "coefficients": [list(c) for c in self.coefficients],
            "inliers": list(self.inliers),
            "refits": REFITS,
            "cutoff": CUTOFF,
            **({"shape": list(self.shape)} if self.shape is not None else {}),
            **({"table": _sparse(self.table)} if self.table is not None else {}),
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Calibration:
        shape = record.get("shape")
        return cls(
            str(record["mode"]),
            bool(record["linearised"]),
            tuple(tuple(float(v) for v in c) for c in record["coefficients"]),
            tuple(int(n) for n in record.get("inliers", ())),
            None if shape is None else (int(shape[0]), int(shape[1])),
            _dense(record["table"]) if record.get("table") else None,
        )


def _sparse(table: tuple[tuple[float, ...], ...]) -> dict[str, Any]:
    """The colour table for ``tilex.json``: each band's nonzero ``[cell, value]`` pairs."""
    return {
        "cells_per_channel": TABLE_CELLS,
        "shrink": TABLE_SHRINK,
        "values": [[[k, v] for k, v in enumerate(band) if v != 0.0] for band in table],
    }


def _dense(record: dict[str, Any]) -> tuple[tuple[float, ...], ...]:
    if int(record["cells_per_channel"]) != TABLE_CELLS:
        raise ValueError(
            f"a colour table of {record['cells_per_channel']} cells per channel; "
            f"this tilex uses {TABLE_CELLS}"
        )
    bands = []
    for pairs in record["values"]:
        band = [0.0] * TABLE_CELLS**3
        for k, v in pairs:
            band[int(k)] = float(v)
        bands.append(tuple(band))
    return tuple(bands)


# --------------------------------------------------------------------------- the fit


@dataclass
class FitSums:
    """Mergeable sums of one fitting pass, kept per sampled square (by its index).

    ``normal[i]`` holds ``X^T X`` ``[N, k, k]`` and ``X^T y`` ``[N, k]`` plus the
    pixel count ``[N]`` of square ``i``; ``hist`` the integer histogram of
    ``|r|`` ``[N, bins]``. :meth:`merge` unites disjoint groups of squares;
    :meth:`totals` adds the squares in index order, so the result is the same
    bits however the squares were grouped.
    """

    normal: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    hist: np.ndarray | None = None

    def merge(self, other: FitSums) -> FitSums:
        if self.normal.keys() & other.normal.keys():
            raise ValueError("fit sums of overlapping groups of squares cannot be merged")
        hist = (
            other.hist
            if self.hist is None
            else self.hist + (other.hist if other.hist is not None else 0)
        )
        return FitSums({**self.normal, **other.normal}, hist)

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


def _accumulate(
    index: int,
    x: np.ndarray,
    y: np.ndarray,
    previous: np.ndarray | None,
    cutoff: np.ndarray | None,
    sums: FitSums,
    histogram: bool,
) -> None:
    """Add one square's contribution to ``sums`` (normal equations, or the ``|r|`` histogram)."""
    n_bands = y.shape[0]
    if histogram:
        counts = _abs_histogram(_residuals(x, y, previous))  # type: ignore[arg-type]
        sums.hist = counts if sums.hist is None else sums.hist + counts
        return
    keep = np.ones(y.shape, bool)
    if previous is not None:
        keep = _residuals(x, y, previous) <= cutoff[:, None]  # type: ignore[index]
    k = x.shape[0]
    xtx = np.empty((n_bands, k, k))
    xty = np.empty((n_bands, k))
    for i in range(n_bands):
        xi = np.ascontiguousarray(x[:, keep[i]])
        yi = y[i, keep[i]]
        # element-wise products summed along one contiguous axis: numpy's pairwise sum,
        # the same bits for the same square whatever else was read (no BLAS blocking)
        xtx[i] = (xi[:, None, :] * xi[None, :, :]).sum(axis=-1)
        xty[i] = (xi * yi[None, :]).sum(axis=-1)
    sums.normal[index] = (xtx, xty, keep.sum(axis=1))


def _abs_histogram(r: np.ndarray) -> np.ndarray:
    """Integer histogram ``[N, bins]`` of ``|r|`` (float32 bit-pattern bins, see the module)."""
    a = np.abs(r).astype(np.float32)
    bins = a.view(np.uint32) >> np.uint32(_SHIFT)
    return np.stack([np.bincount(bins[i], minlength=_NBINS) for i in range(a.shape[0])])


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
) -> Calibration:
    """Fit ``spec``'s model to ``(visible [3, h, w], bands [N, h, w])`` squares, robustly.

    The fit makes 1 + 2 * :data:`REFITS` passes over ``squares``; each square is
    read once while the features fit in :data:`CACHE_BYTES`, otherwise once
    per pass, so ``squares`` must be a sequence (or a re-iterable). The
    result is the same bits either way. ``groups`` splits the squares into
    that many contiguous groups whose sums are merged, as a cluster would;
    the result does not depend on it. The flat model needs each square's
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
    linearise = spec.visible == "srgb"
    if spec.mode in _SURFACE_MODES and origins is None:
        if len(squares) != 1:
            raise ValueError("the flat model needs the squares' origins and the scan's shape")
        origins, shape = [(0, 0)], tuple(squares[0][0].shape[1:])  # type: ignore[assignment]

    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    held = 0

    def features(index: int) -> tuple[np.ndarray, np.ndarray]:
        """``X`` and ``y`` of square ``index``: kept in memory up to CACHE_BYTES, else made again."""
        nonlocal held
        if index in cache:
            x, y = cache[index]
            return x.astype(np.float64), y.astype(np.float64)
        visible, bands = squares[index]
        place = (origins[index], shape) if spec.mode in _SURFACE_MODES else None  # type: ignore[index]
        x = _features(visible, spec.mode, linearise, place)  # type: ignore[arg-type]
        y = np.asarray(bands, np.float32).reshape(bands.shape[0], -1)
        # float32 values kept as float32 (the same numbers, half the memory); the gain
        # model's luminance is a float64 sum
        kept = (x if spec.mode == "gain" else x.astype(np.float32), y)
        size = kept[0].nbytes + kept[1].nbytes
        if held + size <= CACHE_BYTES:
            cache[index] = kept
            held += size
        return x, y.astype(np.float64)

    def one_pass(previous: np.ndarray | None, cutoff: np.ndarray | None, hist: bool) -> FitSums:
        bounds = np.linspace(0, len(squares), max(1, groups) + 1).astype(int)
        merged = FitSums()
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):  # each group on its own
            part = FitSums()
            for index in range(lo, hi):
                _accumulate(index, *features(index), previous, cutoff, part, hist)
            merged = merged.merge(part)
        return merged

    coef, count = _fit_from(one_pass(None, None, False))
    for _ in range(REFITS):
        cutoff = _median_cutoff(one_pass(coef, None, True).hist)  # type: ignore[arg-type]
        refit, kept = _fit_from(one_pass(coef, cutoff, False))
        ok = kept >= 4 * coef.shape[1]  # too few inliers (an exact fit): keep the previous model
        coef = np.where(ok[:, None], refit, coef)
        count = np.where(ok, kept, count)
    table = None
    if spec.mode in _TABLE_MODES:
        # cut the residuals at float32 as predict() adds them: the table sees what a run compares
        coef = coef.astype(np.float32).astype(np.float64)
        table = _fit_table(len(squares), features, coef)
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


def _fit_table(n_squares: int, features: Any, coef: np.ndarray) -> np.ndarray:
    """The colour table ``[N, TABLE_CELLS ** 3]`` (float32) of the model's residuals, robustly.

    Per cell and band the residuals' sum and count over the squares, added in
    the squares' order, give ``sum / (count + TABLE_SHRINK)``; then
    :data:`REFITS` times the same without the residuals farther from their
    cell's mean (``sum / count``, not shrunk: a colour's pixels are not
    outliers of their own colour) than ``CUTOFF`` robust spreads of what the
    means leave.
    """
    n_bands, cells = coef.shape[0], TABLE_CELLS**3

    def residuals(index: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = features(index)
        return colour_cells(x[:3]), y - coef @ x

    def fit_cells(
        means: np.ndarray | None, cutoff: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The shrunk table and the cells' means, of the residuals within ``cutoff`` of ``means``."""
        total, count = np.zeros((n_bands, cells)), np.zeros((n_bands, cells))
        for index in range(n_squares):
            cell, r = residuals(index)
            keep = np.ones(r.shape, bool)
            if means is not None:
                keep = np.abs(r - means[:, cell]) <= cutoff[:, None]  # type: ignore[index]
            for i in range(n_bands):
                total[i] += np.bincount(cell[keep[i]], weights=r[i][keep[i]], minlength=cells)
                count[i] += np.bincount(cell[keep[i]], minlength=cells)
        return total / (count + TABLE_SHRINK), total / np.maximum(count, 1)

    def spread(means: np.ndarray) -> np.ndarray:
        hist = None
        for index in range(n_squares):
            cell, r = residuals(index)
            part = _abs_histogram(r - means[:, cell])
            hist = part if hist is None else hist + part
        return _median_cutoff(hist)  # type: ignore[arg-type]

    table, means = fit_cells(None, None)
    for _ in range(REFITS):
        table, means = fit_cells(means, spread(means))
    return table.astype(np.float32)


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
    regions = regions[:: fit_stride(regions, spec, scan.n_bands)]
    origins = [(y0, x0) for y0, _, x0, _ in regions]
    shape = (int(scan.shape[0]), int(scan.shape[1]))
    return fit(_ScanSquares(scan, regions), spec, groups=groups, origins=origins, shape=shape)
