"""Value ranges: each channel's smallest and largest value of a float source.

A float file's value range is measured when it is opened
(:func:`tilex.readers.open_source`): over every pixel up to
:data:`FINITE_CHECK_AT_OPEN_PX` (the same pass as the NaN check), else over a
fixed lattice of :data:`RANGE_LATTICE` x :data:`RANGE_LATTICE` small regions
(``sampled``), so opening a huge file stays fast.  :mod:`tilex.scan` uses it
to refuse floats that cannot be reflectance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tilex.readers.base import PlaneSource

__all__ = [
    "FINITE_CHECK_AT_OPEN_PX",
    "RANGE_LATTICE",
    "ValueRange",
    "check_finite",
    "measure_range",
]

FINITE_CHECK_AT_OPEN_PX = 64 * 2**20
_CHECK_BLOCK_PX = 16 * 2**20  # elements per block when checking a whole file
RANGE_LATTICE = 8
"""A float file larger than :data:`FINITE_CHECK_AT_OPEN_PX` has its value range
sampled in ``RANGE_LATTICE**2`` regions, one at the centre of each lattice cell."""
_RANGE_REGION = 16  # side of each sampled region, px: one file tile each, or 16 rows of strips


@dataclass(frozen=True)
class ValueRange:
    """The smallest and largest value of each channel of a float source.

    ``sampled`` is true when they come from a lattice of regions rather than
    from every pixel (see :func:`measure_range`).
    """

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    sampled: bool


def measure_range(source: PlaneSource) -> ValueRange:
    """Each channel's smallest and largest value, NaN/infinity refused on the way.

    A source of at most :data:`FINITE_CHECK_AT_OPEN_PX` pixels is read whole;
    a larger one in :data:`RANGE_LATTICE` x :data:`RANGE_LATTICE` regions of
    16 x 16 px, one at the centre of each lattice cell (``sampled``), which
    decodes at most that many file tiles.

    Examples
    --------
    >>> import numpy as np
    >>> from tilex.readers import ArraySource
    >>> measure_range(ArraySource(np.float32([[0.25, 0.5], [0.75, 1.0]])))
    ValueRange(lo=(0.25,), hi=(1.0,), sampled=False)
    """
    height, width = source.shape
    sampled = math.prod(source.shape) > FINITE_CHECK_AT_OPEN_PX
    if sampled:
        regions = []
        for i in range(RANGE_LATTICE):
            for j in range(RANGE_LATTICE):
                cy = (2 * i + 1) * height // (2 * RANGE_LATTICE)
                cx = (2 * j + 1) * width // (2 * RANGE_LATTICE)
                y0, x0 = max(0, cy - _RANGE_REGION // 2), max(0, cx - _RANGE_REGION // 2)
                y1, x1 = min(height, y0 + _RANGE_REGION), min(width, x0 + _RANGE_REGION)
                regions.append((y0, y1, x0, x1))
    else:
        rows = max(1, _CHECK_BLOCK_PX // max(1, width * source.channels))
        regions = [(y, min(height, y + rows), 0, width) for y in range(0, height, rows)]
    lo = np.full(source.channels, np.inf)
    hi = np.full(source.channels, -np.inf)
    for region in regions:
        data = source.read(*region)  # refuses NaN and infinity
        np.minimum(lo, data.min(axis=(1, 2)), out=lo)
        np.maximum(hi, data.max(axis=(1, 2)), out=hi)
    return ValueRange(tuple(map(float, lo)), tuple(map(float, hi)), sampled)


def check_finite(source: PlaneSource) -> None:
    """Read the whole source in row blocks; raise NonFiniteError at NaN/inf.

    Examples
    --------
    >>> from tilex.readers import open_source
    >>> check_finite(open_source("float_band.tif"))  # doctest: +SKIP
    """
    height, width = source.shape
    rows = max(1, _CHECK_BLOCK_PX // max(1, width * source.channels))
    for y in range(0, height, rows):
        source.read(y, min(height, y + rows), 0, width)
