"""Tile geometry: which pixels each tile reads and writes, and in what order.

Pure integer arithmetic, free of torch and of I/O, so it can be tested alone.

One grid of square tile *cores* of side ``tile`` is anchored at pixel (0, 0).
Each tile reads its core grown by ``halo`` pixels on every side, clipped at the
scan's border, and writes only its core. With ``halo`` equal to the encoder's
receptive-field radius, every core pixel sees exactly the input it would see in
a whole-image computation: away from the border the halo supplies it, and at
the true border the clipped read lets the encoder's own zero padding act as it
does on the whole image. No invented pixels are ever fed to the encoder.

Tiles are visited *unit by unit*: a sink that writes square units (OME-Zarr
shards of 4096 px) receives all tiles of one unit before the next, units in
Morton (Z) order, so a pyramid level above completes after its 2x2 children
and only one partial unit per level is ever held in memory. Inside a unit the
cores are anchored at the unit's corner and the last row and column of cores
are clipped at the unit's edge, so any tile size works with any unit: where
the tile divides the unit this is exactly the grid anchored at (0, 0).

All halo arithmetic lives here (:func:`region_with_halo`): the engine's tiles,
the statistics pass's sampled squares and the feathered extents all grow a
region the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "DEFAULT_CHUNK",
    "DEFAULT_TILE",
    "DEFAULT_UNIT",
    "Region",
    "Tile",
    "TileGrid",
    "clamp_tile",
    "morton_order",
    "region_with_halo",
    "unit_of",
]

Region = tuple[int, int, int, int]  # y0, y1, x0, x1, half-open

DEFAULT_TILE = {"cpu": 512, "cuda": 2048}
"""Tile core side when none is given: cache friendly on CPU, keeps a GPU busy."""

DEFAULT_UNIT = 4096
"""Write unit (the OME-Zarr shard side), px."""

DEFAULT_CHUNK = 512
"""Chunk side of the OME-Zarr output on every level, px."""


@dataclass(frozen=True)
class Tile:
    """One tile: its place in the grid, the core it writes and the region it reads."""

    row: int
    col: int
    core: Region
    read: Region

    @property
    def crop(self) -> tuple[slice, slice]:
        """Slices that cut the core out of an array covering ``read``."""
        y0, y1, x0, x1 = self.core
        ry0, _, rx0, _ = self.read
        return slice(y0 - ry0, y1 - ry0), slice(x0 - rx0, x1 - rx0)

    @property
    def pixels(self) -> int:
        y0, y1, x0, x1 = self.core
        return (y1 - y0) * (x1 - x0)

    def describe(self) -> str:
        y0, y1, x0, x1 = self.core
        where = f"rows {y0}:{y1}, columns {x0}:{x1}"
        return where if self.row < 0 else f"tile ({self.row}, {self.col}) {where}"


@dataclass(frozen=True)
class TileGrid:
    """A grid of ``tile`` x ``tile`` cores over an image of ``shape``, read with ``halo``.

    Examples
    --------
    >>> grid = TileGrid((1000, 777), tile=256, halo=6)
    >>> grid.rows, grid.cols
    (4, 4)
    >>> grid.tile_at(3, 3).core, grid.tile_at(3, 3).read
    ((768, 1000, 768, 777), (762, 1000, 762, 777))
    """

    shape: tuple[int, int]
    tile: int
    halo: int

    def __post_init__(self) -> None:
        h, w = self.shape
        if h < 1 or w < 1:
            raise ValueError(f"image shape must be positive, got {h}x{w}")
        if self.tile < 1:
            raise ValueError(f"tile size must be >= 1, got {self.tile}")
        if self.halo < 0:
            raise ValueError(f"halo must be >= 0, got {self.halo}")

    @property
    def rows(self) -> int:
        return -(-self.shape[0] // self.tile)

    @property
    def cols(self) -> int:
        return -(-self.shape[1] // self.tile)

    def __len__(self) -> int:
        return self.rows * self.cols

    @property
    def read_pixels(self) -> int:
        """Pixels all tiles read together: the cores plus their halos, clipped at the border.

        A tile's read region is a product of one interval per axis, so the
        total is the product of the per-axis sums.

        Examples
        --------
        >>> TileGrid((1000, 1000), tile=500, halo=10).read_pixels  # 2 x (500 + 10) per axis
        1040400
        """
        return _read_length(self.shape[0], self.tile, self.halo) * _read_length(
            self.shape[1], self.tile, self.halo
        )

    def tile_at(self, row: int, col: int) -> Tile:
        """The tile at ``(row, col)`` of the grid anchored at (0, 0)."""
        h, w = self.shape
        t = self.tile
        core = (row * t, min(row * t + t, h), col * t, min(col * t + t, w))
        return Tile(row, col, core, region_with_halo(core, self.halo, self.shape))

    def tiles(self, unit: int | None = None, *, clip_to_unit: bool = True) -> Iterator[Tile]:
        """Every tile once: row-major, or unit by unit in Morton order.

        With ``unit``, each unit's tiles come together (:meth:`unit_tiles`:
        cores clipped at the unit's edge). ``clip_to_unit=False`` keeps the
        grid anchored at (0, 0) and gives each unit the tiles whose core starts
        in it (the feathered mode's order, whose ramps need one grid).

        Examples
        --------
        >>> [t.core for t in TileGrid((10, 10), tile=4, halo=1).tiles(unit=6)][:3]
        [(0, 4, 0, 4), (0, 4, 4, 6), (4, 6, 0, 4)]
        """
        if unit is None:
            for row in range(self.rows):
                for col in range(self.cols):
                    yield self.tile_at(row, col)
            return
        h, w = self.shape
        for index in morton_order(-(-h // unit), -(-w // unit)):
            if clip_to_unit:
                yield from self.unit_tiles(unit, index)
                continue
            y0, y1, x0, x1 = _unit_region(index, unit, self.shape)
            t = self.tile
            for row in range(-(-y0 // t), -(-y1 // t)):
                for col in range(-(-x0 // t), -(-x1 // t)):
                    yield self.tile_at(row, col)

    def unit_tiles(self, unit: int, index: tuple[int, int]) -> Iterator[Tile]:
        """The tiles of write unit ``index``: cores anchored at its corner, clipped at its edge.

        Where ``tile`` divides ``unit`` these are the grid's own tiles.

        Examples
        --------
        >>> [t.core for t in TileGrid((10, 10), tile=4, halo=1).unit_tiles(6, (1, 1))]
        [(6, 10, 6, 10)]
        """
        y0, y1, x0, x1 = _unit_region(index, unit, self.shape)
        t, per = self.tile, -(-unit // self.tile)
        for i, ty in enumerate(range(y0, y1, t)):
            for j, tx in enumerate(range(x0, x1, t)):
                core = (ty, min(ty + t, y1), tx, min(tx + t, x1))
                yield Tile(
                    index[0] * per + i,
                    index[1] * per + j,
                    core,
                    region_with_halo(core, self.halo, self.shape),
                )


def region_with_halo(region: Region, halo: int, shape: tuple[int, int]) -> Region:
    """``region`` grown by ``halo`` px on every side, clipped at the image border.

    Examples
    --------
    >>> region_with_halo((0, 10, 20, 30), 6, (100, 28))
    (0, 16, 14, 28)
    """
    y0, y1, x0, x1 = region
    h, w = shape
    return max(y0 - halo, 0), min(y1 + halo, h), max(x0 - halo, 0), min(x1 + halo, w)


def _unit_region(index: tuple[int, int], unit: int, shape: tuple[int, int]) -> Region:
    h, w = shape
    return (
        index[0] * unit,
        min((index[0] + 1) * unit, h),
        index[1] * unit,
        min((index[1] + 1) * unit, w),
    )


def _read_length(n: int, tile: int, halo: int) -> int:
    """Summed length of the read intervals of the tiles along one axis of ``n`` px."""
    return sum(min(i + tile + halo, n) - max(i - halo, 0) for i in range(0, n, tile))


def clamp_tile(tile: int, shape: tuple[int, int], unit: int | None = None) -> int:
    """``tile``, or when it is longer than the image (or the write unit), the least tile that covers it.

    Any tile at least as long as the image's longer side (or the unit: cores
    are clipped at the unit's edge) gives the same tiles, so such a tile
    becomes the smallest multiple of 16 that covers the longer side, at most
    ``unit``. It only spares the encoder trials a needlessly large tile.

    Examples
    --------
    >>> clamp_tile(8192, (300, 200), unit=4096), clamp_tile(8192, (300, 200))
    (304, 304)
    >>> clamp_tile(8192, (5000, 5000), unit=4096), clamp_tile(256, (300, 200), unit=4096)
    (4096, 256)
    """
    longest = min(max(shape), unit) if unit else max(shape)
    if tile <= longest:
        return tile
    return -(-longest // 16) * 16


def unit_of(region: Region, unit: int) -> tuple[int, int]:
    """The (row, col) of the write unit holding a region's top-left pixel."""
    return region[0] // unit, region[2] // unit


def morton_order(rows: int, cols: int) -> list[tuple[int, int]]:
    """All (row, col) of a ``rows`` x ``cols`` grid in Morton (Z) order.

    Each aligned 2x2 block of cells comes out contiguously, recursively, so a
    coarser level's cell is complete as soon as its children are.

    Examples
    --------
    >>> morton_order(2, 3)
    [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (1, 2)]
    """
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    return sorted(cells, key=lambda rc: _interleave(rc[0], rc[1]))


def _interleave(row: int, col: int) -> int:
    """Morton key: bits of row and col interleaved (row bits in odd places)."""
    key, bit = 0, 0
    while row or col:
        key |= (col & 1) << (2 * bit) | (row & 1) << (2 * bit + 1)
        row, col, bit = row >> 1, col >> 1, bit + 1
    return key
