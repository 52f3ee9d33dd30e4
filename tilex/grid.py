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
and only one partial unit per level is ever held in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Region", "Tile", "TileGrid", "clamp_tile", "morton_order", "unit_of"]

Region = tuple[int, int, int, int]  # y0, y1, x0, x1, half-open


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
        return f"tile ({self.row}, {self.col}) rows {y0}:{y1} cols {x0}:{x1}"


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
        return _read_length(self.shape[0], self.tile, self.halo) * _read_length(self.shape[1], self.tile, self.halo)

    def tile_at(self, row: int, col: int) -> Tile:
        h, w = self.shape
        t, r = self.tile, self.halo
        y0, x0 = row * t, col * t
        y1, x1 = min(y0 + t, h), min(x0 + t, w)
        read = (max(y0 - r, 0), min(y1 + r, h), max(x0 - r, 0), min(x1 + r, w))
        return Tile(row, col, (y0, y1, x0, x1), read)

    def tiles(self, unit: int | None = None) -> Iterator[Tile]:
        """Every tile once: row-major, or unit by unit in Morton order.

        ``unit`` must be a multiple of ``tile`` so no tile straddles two units.
        """
        if unit is None:
            for row in range(self.rows):
                for col in range(self.cols):
                    yield self.tile_at(row, col)
            return
        if unit % self.tile:
            raise ValueError(f"write unit {unit} is not a multiple of the tile size {self.tile}")
        per = unit // self.tile
        h, w = self.shape
        for uy, ux in morton_order(-(-h // unit), -(-w // unit)):
            for row in range(uy * per, min((uy + 1) * per, self.rows)):
                for col in range(ux * per, min((ux + 1) * per, self.cols)):
                    yield self.tile_at(row, col)


def _read_length(n: int, tile: int, halo: int) -> int:
    """Summed length of the read intervals of the tiles along one axis of ``n`` px."""
    return sum(min(i + tile + halo, n) - max(i - halo, 0) for i in range(0, n, tile))


def clamp_tile(tile: int, shape: tuple[int, int], unit: int | None = None) -> int:
    """``tile``, or when it is longer than the image, the least tile that still covers it.

    Any tile at least as long as the image's longer side gives the same grid
    of one tile, so such a tile becomes the smallest multiple of 16 that
    covers the longer side and divides ``unit`` (when given: ``unit`` must
    stay a multiple of the tile); with an image longer than ``unit``, ``unit``.

    Examples
    --------
    >>> clamp_tile(8192, (300, 200), unit=4096), clamp_tile(8192, (300, 200))
    (512, 304)
    >>> clamp_tile(8192, (5000, 5000), unit=4096), clamp_tile(256, (300, 200), unit=4096)
    (4096, 256)
    """
    side = max(shape)
    if tile <= side:
        return tile
    covering = -(-side // 16) * 16
    if unit is None:
        return covering
    return next((t for t in range(covering, unit + 1, 16) if unit % t == 0), unit)


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
