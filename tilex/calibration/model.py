"""The calibration's model: its spec, the terms it predicts from, the fitted model.

See :mod:`tilex.calibration` for what each mode predicts; the fit is in
:mod:`tilex.calibration.fitting`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import Any

import numpy as np

from tilex.errors import PlanError
from tilex.kernels._numba import njit

__all__ = [
    "CALIBRATION_MODES",
    "CUTOFF",
    "LINEAR_LUMA",
    "REFITS",
    "SQUARE_CUT",
    "SQUARE_MIN",
    "TABLE_CELLS",
    "TABLE_SHRINK",
    "VISIBLE_ENCODINGS",
    "Calibration",
    "CalibrationSpec",
    "colour_cells",
    "gradient_terms",
    "srgb_to_linear",
    "surface_terms",
]

CALIBRATION_MODES = ("none", "gain", "affine", "flat", "colour", "registered")
_SURFACE_MODES = ("flat", "colour", "registered")  # with the lighting surface (the scan's shape)
_TABLE_MODES = ("colour", "registered")  # with the colour table
VISIBLE_ENCODINGS = ("srgb", "linear")
LINEAR_LUMA: tuple[float, float, float] = (0.2126, 0.7152, 0.0722)
"""Rec. 709 luminance weights of *linear* red, green and blue (the gain model's ``Y``)."""

REFITS = 6
"""Robust refits after the first plain fit."""

CUTOFF = 1.0
"""Pixels with ``|r| > CUTOFF * 1.4826 * median |r|`` are dropped before a refit.

One robust spread keeps about the central two thirds of normal residuals: a
trimmed least-squares fit, which a hidden region covering a fifth of the scan
does not drag towards itself (with 3 spreads and 2 refits it did; see
:mod:`tilex.calibration`)."""

SQUARE_CUT = 2.0
"""A sampled square is left out of a band's refit when its median signed residual lies more
than ``SQUARE_CUT * 1.4826 * MAD`` from the median over the squares (MAD: the squares' median
absolute deviation). Hidden content is spatially coherent and one-signed: a square inside it
sits apart from the others even where each of its pixels is within :data:`CUTOFF`, and it
otherwise pulls the model's lighting surface towards itself (see :mod:`tilex.calibration`)."""

SQUARE_MIN = 16
"""Fewer sampled squares than this: no square is left out (their spread says too little)."""

TABLE_CELLS = 12
"""Cells of the colour table per linear channel (``TABLE_CELLS ** 3`` colours)."""

TABLE_SHRINK = 20.0
"""A cell's value is ``sum(r) / (count + TABLE_SHRINK)``: a colour seen on few pixels adds little."""


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
    x = np.asarray(rgb)
    if x.dtype != np.float32:
        x = x.astype(np.float32) if x.dtype.itemsize <= 4 else x.astype(np.float64)
    out = np.empty(x.shape, np.float32)
    _srgb_eotf(x.ravel(), out.ravel(), _srgb_table())
    return out


@njit
def _srgb_value(v: float) -> float:  # pragma: no cover (compiled)
    if v <= 0.04045:
        return v / 12.92
    return ((v + 0.055) / 1.055) ** 2.4


@njit
def _srgb_eotf(x: np.ndarray, out: np.ndarray, table: np.ndarray) -> None:  # pragma: no cover
    """:func:`srgb_to_linear` of a flat array, element by element in float64.

    A value that is exactly ``k / 65535`` in float32 (every 8- and 16-bit
    pixel scaled as :class:`tilex.scan.Scan` scales it) takes ``table[k]``,
    the same function's value computed once; any other value is computed.
    """
    for i in range(x.size):
        v = np.float64(x[i])
        if 0.0 < v <= 1.0:  # (0 and -0 are computed: -0 keeps its sign)
            k = int(v * 65535.0 + 0.5)
            if np.float32(k) / np.float32(65535.0) == x[i]:
                out[i] = table[k]
                continue
        out[i] = _srgb_value(v)


@cache
def _srgb_table() -> np.ndarray:
    """The sRGB EOTF of the 65,536 float32 values ``k / 65535`` (float32)."""
    levels = np.arange(65536, dtype=np.float32) / np.float32(65535)
    out = np.empty(levels.shape, np.float32)
    _srgb_computed(levels, out)
    return out


@njit
def _srgb_computed(x: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover (compiled)
    for i in range(x.size):
        out[i] = _srgb_value(np.float64(x[i]))


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


@njit
def _predict(
    coef: np.ndarray,
    rgb: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    shape: tuple[int, int],
    surface: bool,
    gradients: bool,
    table: np.ndarray,
    use_table: bool,
    out: np.ndarray,
) -> None:  # pragma: no cover (compiled; tested through predict against the NumPy terms)
    """:meth:`Calibration.predict` of linear ``rgb [3, h, w]`` into ``out [N, h, w]``, a row at a time.

    Each row's terms are those of :func:`surface_terms` (from the pixels'
    scan ``rows`` and ``cols``), :func:`gradient_terms` and
    :func:`colour_cells`, computed with the same operations, without a
    full-size array per term. Band ``i`` is then ``c_i0 R + c_i1 G + c_i2 B +
    c_i3 + c_i4 t_4 + ...`` in float32, the products and sums taken one at a
    time in this order (the tilex Numba preset: no reassociation, no FMA), plus
    its colour-table cell: the same bits as NumPy's ``p = c0 * R; p += c1 * G;
    ...`` and wherever the region lies. Rows are summed term by term, so the
    inner loops are contiguous and vectorised.
    """
    n_bands, k = coef.shape
    h, w = rgb.shape[1], rgb.shape[2]
    height, width = shape
    half = np.float32(0.5)
    terms = np.zeros((k - 1, w), np.float32)  # R, G, B, then the other terms, of one row
    cells = np.zeros(w, np.int64)
    for y in range(h):
        for c in range(3):
            for x in range(w):
                terms[c, x] = rgb[c, y, x]
        if surface:
            for x in range(w):
                u = np.float32((2.0 * np.float64(cols[y, x]) + 1.0) / width - 1.0)
                v = np.float32((2.0 * np.float64(rows[y, x]) + 1.0) / height - 1.0)
                terms[3, x] = u
                terms[4, x] = v
                terms[5, x] = u * u
                terms[6, x] = u * v
                terms[7, x] = v * v
        if gradients:
            for c in range(3):
                dx, dy = terms[8 + c], terms[11 + c]
                if w > 1:
                    dx[0] = rgb[c, y, 1] - rgb[c, y, 0]
                    for x in range(1, w - 1):
                        dx[x] = (rgb[c, y, x + 1] - rgb[c, y, x - 1]) * half
                    dx[w - 1] = rgb[c, y, w - 1] - rgb[c, y, w - 2]
                if h > 1:
                    if y == 0:
                        for x in range(w):
                            dy[x] = rgb[c, 1, x] - rgb[c, 0, x]
                    elif y == h - 1:
                        for x in range(w):
                            dy[x] = rgb[c, h - 1, x] - rgb[c, h - 2, x]
                    else:
                        for x in range(w):
                            dy[x] = (rgb[c, y + 1, x] - rgb[c, y - 1, x]) * half
        if use_table:
            for x in range(w):
                cell = 0
                for c in range(3):
                    i = np.floor(np.float64(rgb[c, y, x]) * TABLE_CELLS)
                    i = min(max(i, 0.0), TABLE_CELLS - 1.0)
                    cell = cell * TABLE_CELLS + np.int64(i)
                cells[x] = cell
        for i in range(n_bands):
            row = out[i, y]
            c0, c1, c2, c3 = coef[i, 0], coef[i, 1], coef[i, 2], coef[i, 3]
            for x in range(w):
                row[x] = c0 * terms[0, x]
            for x in range(w):
                row[x] += c1 * terms[1, x]
            for x in range(w):
                row[x] += c2 * terms[2, x]
            for x in range(w):
                row[x] += c3
            for q in range(4, k):
                cq = coef[i, q]
                for x in range(w):
                    row[x] += cq * terms[q - 1, x]
            if use_table:
                for x in range(w):
                    row[x] += table[i, cells[x]]


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
        h, w = rgb.shape[1:]
        rows = cols = np.zeros((1, 1), np.int64)  # unused without the surface
        if self.spatial:
            if places is None and self.shape == (h, w):
                places = tuple(np.mgrid[:h, :w])  # type: ignore[assignment]
            if places is None or self.shape is None:
                raise ValueError(
                    "the flat calibration predicts from the pixels' places in the scan"
                )
            rows, cols = (np.broadcast_to(np.asarray(p, np.int64), (h, w)) for p in places)
        out = np.empty((self.n_bands, h, w), np.float32)
        table = self._table
        _predict(
            self._coefficients,
            np.ascontiguousarray(rgb, np.float32),
            rows,
            cols,
            self.shape or (1, 1),
            self.spatial,
            self.mode == "registered",
            table if table is not None else np.zeros((1, 1), np.float32),
            table is not None,
            out,
        )
        return out

    @cached_property
    def _coefficients(self) -> np.ndarray:
        """``[N, k]`` float32: the R, G, B gains, the offset, then the other terms' weights."""
        return np.array(self.coefficients, np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "linearised": self.linearised,
            "coefficients": [list(c) for c in self.coefficients],
            "inliers": list(self.inliers),
            "refits": REFITS,
            "cutoff": CUTOFF,
            "square_cut": SQUARE_CUT,
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
