"""Feathered blending: seamless (approximate) tiling for encoders too wide for a halo.

The exact mode (:mod:`tilex.engine.fuse`) reads every tile with a halo equal to the
encoder's receptive-field radius, so the tiled result is the whole-image
result (up to float32 rounding). An encoder whose field is hundreds of pixels wide makes that halo too
costly; cutting it short leaves visible steps at the tile borders, where each
tile's zero padding shades its edge. The feathered mode trades exactness for
continuity: tiles overlap, and their per-band dissimilarities are cross-faded
with a smooth partition of unity *before* the fusion.

Geometry
--------
The cores are the engine's grid (side ``T``, anchored at (0, 0)). Tile
``(r, c)`` is encoded over its *extent*: its core grown by ``overlap`` px on
every side (``o``), clipped at the scan border -- the encoder radius plays no
part. Along each axis a tile's weight is 1, except across ``[e - o, e + o)``
around each *interior* core boundary ``e``, where it ramps with a raised
cosine (zero slope at both ends)::

    rise(y) = 0.5 - 0.5 cos(pi t),   t = (y + 0.5 - (e - o)) / (2 o)

The tile after ``e`` rises, the tile before falls by ``1 - rise``, so along an
axis the weights of the (at most two) tiles over a pixel sum to 1; there is no
ramp at the scan border. ``1 <= o <= T / 2`` keeps neighbouring ramps apart.
The 2-D weight is ``w_t(y, x) = wy(y) wx(x)``: a product of two partitions of
unity is one, so ``sum_t w_t = 1`` at every pixel (tested to 1e-6).

Blending and fusion
-------------------
Per tile ``d_t = dissimilarity(g_t, b_t)`` over the extent; the blended maps
are ``d = sum_t w_t d_t`` and ``b = sum_t w_t b_t`` (the band features, so
the collage is continuous too). A core is finished once the (up to nine)
tiles whose extents reach it have been added. The fusion of a finished core
is :func:`tilex.kernels.fuse` on ``g = 0``, ``b = d`` (then ``|0 - d_i| =
d_i``, as ``d >= 0``), giving the winner, score and normalised maps under the
usual contract; the collage is the blended ``b`` of the winner (0 where
none), and the overlay uses the luminance of the visible core.

Why this is approximate
-----------------------
Each ``d_t`` still differs from the whole-image ``d`` within the encoder's
radius ``R`` of its extent's edge (except at the scan border, where the
extent is clipped as the whole image is); the weights only make that error
fade in and out smoothly instead of jumping at a border. Outside the blending
zones only a core's own tile counts, at least ``2 overlap`` px inside its
extent, so there the result is exact once ``overlap >= R / 2``. Inside a zone
the tile fading out is within ``R`` of its extent's edge over the last ``R``
px of its ramp, where its weight is small but not zero: close, never equal,
and winners near core borders may differ from a whole-image run. Use the
exact mode whenever the halo is affordable.

For ``norm="band"`` the whole-scan ranges come from :func:`tilex.engine.statistics.measure`:
the statistics pass (:mod:`tilex.engine.statistics`) with each sample block read
with ``overlap`` px of context instead of the encoder radius -- approximate, like the mode
(they are measured on unblended ``d``).

Choosing the overlap
--------------------
Measured on a 31 x 31 smoothing encoder (radius ``R = 15``) on a textured
test image (``tests/test_feather.py``): with ``overlap = 8`` (about ``R / 2``) the
largest step across a core border stays below the image's own largest step
away from the borders, and the mean step there matches the rest of the image;
with ``overlap = 4`` (``R / 4``) a seam shows (mean border step 1.6-1.7x the
image's, largest 1.5x). Cutting the same tiles hard at the core border (the
same 8 px of context, no ramp) leaves a seam 2.7x the image's largest step.
So take ``overlap`` of at least about half the receptive-field radius; the
result approaches the whole-image one only as ``overlap`` grows past ``R``.

Order and memory
----------------
Cores are emitted in the engine's order (:meth:`tilex.grid.TileGrid.tiles`):
with a sink's ``write_unit`` the cores of one unit contiguously, units in
Morton order, so :class:`tilex.omezarr.OmeZarrSink` streams as in the exact
mode. Tiles are encoded once each, in the order the emitted cores need them
(each unit's cores plus the ring of tiles around them). The price is memory:
a core waits for all its neighbours, so each started core holds weighted sums
of ``N (C + 1) + 1`` float32 planes (``d``, ``b`` and the grey) once its own
tile has arrived, and only the strips its neighbours gave before that. The
frontier of the processed area is simulated at about ``1 + 2 overlap / T``
rows of cores for row-major order (``write_unit=None``) and 1.5 to 2.6 rows
for Morton units (50k x 50k px, ``T`` 512 or 2048, 4096 px units): e.g. about
4 GiB for a 50k px wide scan with ``T = 512``, 8 bands and ``C = 1`` in
Morton order. The exact mode keeps memory flat instead. Results of different
orders agree to float32 rounding (the sums are added in another order).

The blending and the fusion run on the host (NumPy / Numba) whatever the
backend: with a CUDA backend the encoder and each tile's ``d_t`` run on the
GPU and ``d_t``, ``b_t`` and the grey are downloaded once per tile (not yet
run on a GPU). Resuming (``skip``) is not supported.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tilex import kernels
from tilex.colour import display_bytes, luminance
from tilex.engine.fuse import compared, fuse_with_evidence, winner_features
from tilex.errors import TileError
from tilex.grid import Region, Tile, TileGrid, unit_of
from tilex.plan import FusionSpec
from tilex.sink import TileResult
from tilex.stats import BandStats

__all__ = [
    "BlendedCore",
    "FeatherMerger",
    "axis_weights",
    "blend",
    "extent_of",
    "feather_order",
    "tile_weights",
]


# --------------------------------------------------------------------------- weights (pure)


def _rise(overlap: int) -> np.ndarray:
    """Raised cosine from 0 to 1 at the ``2 * overlap`` pixel centres of a ramp (float64)."""
    t = (np.arange(2 * overlap, dtype=np.float64) + 0.5) / (2 * overlap)
    return 0.5 - 0.5 * np.cos(np.pi * t)


def _span(index: int, length: int, tile: int, overlap: int) -> tuple[int, int]:
    """Extent ``[a, b)`` along one axis of the tile at ``index``."""
    return max(index * tile - overlap, 0), min((index + 1) * tile + overlap, length)


def axis_weights(index: int, length: int, tile: int, overlap: int) -> np.ndarray:
    """1-D weight over the extent of the tile at ``index`` along an axis of ``length`` px.

    Raised-cosine ramps across ``[e - overlap, e + overlap)`` around each
    interior core boundary ``e``; 1 elsewhere, including at the scan border.
    Neighbouring tiles' weights sum to 1 at every pixel (float32).

    Examples
    --------
    >>> np.round(axis_weights(0, 8, 4, 2), 3)
    array([1.   , 1.   , 0.962, 0.691, 0.309, 0.038], dtype=float32)
    >>> np.round(axis_weights(1, 8, 4, 2), 3)
    array([0.038, 0.309, 0.691, 0.962, 1.   , 1.   ], dtype=float32)
    """
    a, b = _span(index, length, tile, overlap)
    weight = np.ones(b - a, dtype=np.float64)
    rise = _rise(overlap)
    last = -(-length // tile) - 1
    if index > 0:  # rising ramp around the core's start e = index * tile
        start = index * tile - overlap - a  # == 0: the extent starts with the ramp
        n = min(2 * overlap, b - a - start)
        weight[start : start + n] = rise[:n]
    if index < last:  # falling ramp around the core's end
        start = (index + 1) * tile - overlap - a
        n = min(2 * overlap, b - a - start)  # clipped where the scan ends inside the ramp
        weight[start : start + n] = 1.0 - rise[:n]
    return weight.astype(np.float32)


def extent_of(row: int, col: int, shape: tuple[int, int], tile: int, overlap: int) -> Region:
    """The region tile ``(row, col)`` is encoded over: its core grown by ``overlap``, clipped.

    The grid's own halo arithmetic, with the overlap as the halo.
    """
    return TileGrid(shape, tile, overlap).tile_at(row, col).read


def tile_weights(row: int, col: int, shape: tuple[int, int], tile: int, overlap: int) -> np.ndarray:
    """The 2-D weight ``wy(y) wx(x)`` over the extent of tile ``(row, col)`` (float32)."""
    wy = axis_weights(row, shape[0], tile, overlap)
    wx = axis_weights(col, shape[1], tile, overlap)
    return np.outer(wy, wx)


class _Core:
    """Weighted sums over one core while the tiles reaching it arrive.

    Until the core's own tile arrives its neighbours' contributions (strips
    ``overlap`` px wide) are kept as they are; the full-size accumulators are
    the own tile's weighted maps, so a core that has only seen neighbours holds
    strips, not planes.
    """

    def __init__(self, tile: Tile, expected: int) -> None:
        self.tile = tile
        self.expected = expected
        self.added = 0
        self.d: np.ndarray | None = None  # [N, h, w] once the own tile arrived
        self.b: np.ndarray | None = None  # [N, C, h, w]
        self.gray: np.ndarray | None = None  # [h, w]
        self.visible: np.ndarray | None = None  # [3, h, w]
        self.pending: list[tuple[tuple[slice, slice], np.ndarray, np.ndarray]] = []

    @property
    def finished(self) -> bool:
        return self.added == self.expected

    def add(
        self,
        ext: Tile,
        d_t: np.ndarray,
        b_t: np.ndarray,
        gray_t: np.ndarray,
        visible_t: np.ndarray,
        wy: np.ndarray,
        wx: np.ndarray,
    ) -> None:
        """Add ``w_t d_t`` and ``w_t b_t`` over the part of ``ext`` inside this core."""
        cy0, cy1, cx0, cx1 = self.tile.core
        ey0, ey1, ex0, ex1 = ext.core
        y0, y1, x0, x1 = max(cy0, ey0), min(cy1, ey1), max(cx0, ex0), min(cx1, ex1)
        es = (slice(y0 - ey0, y1 - ey0), slice(x0 - ex0, x1 - ex0))
        cs = (slice(y0 - cy0, y1 - cy0), slice(x0 - cx0, x1 - cx0))
        w = np.outer(wy[es[0]], wx[es[1]])
        wd = w * d_t[(slice(None), *es)]  # fresh float32 arrays
        wb = w * b_t[(slice(None), slice(None), *es)]
        if (ext.row, ext.col) == (self.tile.row, self.tile.col):  # its extent covers the core
            self.d, self.b, self.gray = wd, wb, gray_t[es].copy()
            self.visible = visible_t[(slice(None), *es)].copy()
            for part, pd, pb in self.pending:
                self.d[(slice(None), *part)] += pd
                self.b[(slice(None), slice(None), *part)] += pb
            self.pending = []
        elif self.d is None:
            self.pending.append((cs, wd, wb))
        else:
            self.d[(slice(None), *cs)] += wd
            self.b[(slice(None), slice(None), *cs)] += wb
        self.added += 1


def _neighbours(row: int, col: int, rows: int, cols: int) -> list[tuple[int, int]]:
    return [
        (r, c)
        for r in range(row - 1, row + 2)
        for c in range(col - 1, col + 2)
        if 0 <= r < rows and 0 <= c < cols
    ]


def feather_order(
    grid: TileGrid, overlap: int, unit: int | None
) -> tuple[list[list[Tile]], list[Tile]]:
    """Groups of cores in emission order, and the extents to encode, in the order they are needed.

    Cores come unit by unit (``unit`` from the sink) or row-major; each
    group's cores need the tiles around them, each encoded once, just in time.
    """
    groups: list[list[Tile]] = []
    key = None
    for core in grid.tiles(unit, clip_to_unit=False):
        k = unit_of(core.core, unit) if unit else (core.row, core.col)
        if k != key:
            groups.append([])
            key = k
        groups[-1].append(core)
    done: set[tuple[int, int]] = set()
    extents: list[Tile] = []
    for group in groups:
        need = sorted(
            {rc for t in group for rc in _neighbours(t.row, t.col, grid.rows, grid.cols)} - done
        )
        done.update(need)
        for r, c in need:
            region = extent_of(r, c, grid.shape, grid.tile, overlap)
            extents.append(Tile(r, c, region, region))  # read = written = the extent, no halo
    return groups, extents


@dataclass
class BlendedCore:
    """One finished core before the fusion: blended ``d [N, h, w]``, ``b [N, C, h, w]``, grey ``[h, w]``."""

    tile: Tile
    d: np.ndarray
    b: np.ndarray
    gray: np.ndarray


class FeatherMerger:
    """Cross-fades encoded extents into finished cores and fuses them (see the module docstring).

    Feed it the extents of :func:`feather_order` in that order; it yields each
    group of cores once all their neighbours have arrived.
    """

    def __init__(
        self,
        grid: TileGrid,
        overlap: int,
        groups: list[list[Tile]],
        fusion: FusionSpec,
        stats: BandStats | None,
        download,
    ) -> None:
        if fusion.needs_statistics and stats is None:
            raise ValueError(
                "norm='band' needs whole-scan statistics (tilex.engine.measure_statistics)"
            )
        self.grid, self.overlap, self.groups, self.fusion = grid, overlap, groups, fusion
        self.lo_hi = (
            stats.arrays(fusion.norm) if stats is not None and fusion.needs_statistics else None
        )
        self.download = download  # the blending and the fusion run on the host
        self.open_cores: dict[tuple[int, int], _Core] = {}
        self.next_group = 0
        self.done = 0

    def add(self, ext: Tile, g, b, visible: np.ndarray) -> Iterator[TileResult]:
        get = self.download
        try:
            d_t = get(kernels.dissimilarity(*compared(g, b)))
        except Exception as err:
            raise TileError(f"{ext.describe()}: dissimilarity failed: {err}", tile=ext) from err
        b_t, gray_t = get(b), luminance(visible)
        shape, tile, overlap = self.grid.shape, self.grid.tile, self.overlap
        rows, cols = self.grid.rows, self.grid.cols
        wy = axis_weights(ext.row, shape[0], tile, overlap)
        wx = axis_weights(ext.col, shape[1], tile, overlap)
        for rc in _neighbours(ext.row, ext.col, rows, cols):
            core = self.open_cores.get(rc)
            if core is None:
                core = self.open_cores[rc] = _Core(
                    self.grid.tile_at(*rc), len(_neighbours(*rc, rows, cols))
                )
            core.add(ext, d_t, b_t, gray_t, visible, wy, wx)
        while self.next_group < len(self.groups) and self._ready(self.groups[self.next_group]):
            for t in self.groups[self.next_group]:
                core = self.open_cores.pop((t.row, t.col))
                self.done += t.pixels
                yield self.emit(core)
            self.next_group += 1

    def finish(self) -> Iterator[TileResult]:
        if (
            self.next_group != len(self.groups) or self.open_cores
        ):  # a planning bug, never a user error
            raise RuntimeError(
                f"feathered blend left {len(self.groups) - self.next_group} unit(s) unfinished"
            )
        return iter(())

    def _ready(self, group: list[Tile]) -> bool:
        """Whether every core of ``group`` has received all its tiles."""
        cores = self.open_cores
        return all((t.row, t.col) in cores and cores[t.row, t.col].finished for t in group)

    def emit(self, core: _Core) -> TileResult:
        """Fuse one blended core: ``fuse`` on ``g = 0``, ``b = d`` (``|0 - d_i| = d_i``)."""
        lo, hi = self.lo_hi if self.lo_hi else (None, None)
        assert core.d is not None and core.b is not None and core.gray is not None
        h, w = core.d.shape[1:]
        spec = self.fusion
        try:
            fused, evidence = fuse_with_evidence(
                np.zeros((1, h, w), np.float32), core.d[:, None], lo, hi, spec
            )
            over = kernels.overlay(np.ascontiguousarray(core.gray), fused.score)
        except Exception as err:
            raise TileError(
                f"{core.tile.describe()}: fusion failed: {err}", tile=core.tile
            ) from err
        return TileResult(
            region=core.tile.core,
            winner=fused.winner,
            score=fused.score,
            evidence=evidence,
            visible=display_bytes(core.visible),
            collage=winner_features(core.b, fused.winner),  # the winner's blended band features
            overlay=over,
            normalised=fused.normalised,
        )


class _Blended(FeatherMerger):
    """Emits the blended cores themselves, unfused (see :func:`blend`)."""

    def emit(self, core: _Core) -> BlendedCore:  # type: ignore[override]
        assert core.d is not None and core.b is not None and core.gray is not None
        return BlendedCore(core.tile, core.d, core.b, core.gray)


class _Collect:
    """A sink that keeps what it receives, in order."""

    write_unit: int | None = None

    def __init__(self) -> None:
        self.items: list = []

    def write(self, item) -> None:
        self.items.append(item)


def blend(engine, overlap: int, *, unit: int | None = None) -> list[BlendedCore]:
    """Every core's blended maps, in the engine's order for ``unit``, through the pipeline loop.

    For inspecting the blending itself (the seams of ``d``), without the fusion.
    """
    groups, extents = feather_order(engine.grid, overlap, unit)
    merger = _Blended(
        engine.grid, overlap, groups, FusionSpec(norm="pixel"), None, engine.backend.download
    )
    collect = _Collect()
    engine.process(extents, merger, collect)  # type: ignore[arg-type]
    return collect.items
