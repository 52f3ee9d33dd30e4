"""Write units: the geometry of every pyramid level in units, and assembling one in memory.

An output is written in *write units*: ``unit x unit`` regions of each level,
aligned to the shards (0.5) or whole chunks (0.4) of that level's arrays, so
one unit is one aligned assignment per image and each shard or chunk is
written whole, once, by one writer, and never read back (in a fresh run).
:class:`UnitGrid` is that geometry; :class:`UnitBuffer` is one unit being
filled in memory, from tiles (level 0) or from its children's 2x2
reductions (level ``k > 0``: unit ``(i, j)`` of level ``k`` takes units
``(2i + dy, 2j + dx)`` of level ``k - 1``, each reduced into one quarter,
because a unit's side is even).

Pure NumPy, no zarr and no I/O: the streaming sink, the layout and the
cluster workers all assemble units with these, and the tests check them alone.

Examples
--------
>>> grid = UnitGrid(((300, 200), (150, 100), (75, 50)), unit=128)
>>> grid.grid(0), grid.region(0, (2, 1)), grid.children(1, (0, 0))
((3, 2), (256, 300, 128, 200), [(0, 0), (0, 1), (1, 0), (1, 1)])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tilex.grid import Region
from tilex.omezarr.format import ImageSpec
from tilex.pyramid import level_shapes

__all__ = ["Index", "UnitBuffer", "UnitGrid", "place_reduced", "reduce"]

Index = tuple[int, int]  # (row, column) of a unit on its level


@dataclass(frozen=True)
class UnitGrid:
    """The write units of every level of a pyramid: ``shapes[k]`` cut in ``unit x unit`` squares.

    Parameters
    ----------
    shapes : tuple of (h, w)
        Every level's shape, level 0 first (:func:`tilex.pyramid.level_shapes`).
    unit : int
        Side of a unit, even (a parent takes its children's halves whole).
    """

    shapes: tuple[tuple[int, int], ...]
    unit: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", tuple((int(h), int(w)) for h, w in self.shapes))
        if self.unit < 2 or self.unit % 2:
            raise ValueError(f"a write unit must be even and at least 2, got {self.unit}")
        if not self.shapes:
            raise ValueError("a unit grid needs at least one level")

    @classmethod
    def for_shape(cls, shape: tuple[int, int], unit: int, chunk: int) -> UnitGrid:
        """The grid of a pyramid over ``shape`` that stops once a level fits one ``chunk``.

        Examples
        --------
        >>> UnitGrid.for_shape((300, 200), unit=128, chunk=64).shapes
        ((300, 200), (150, 100), (75, 50), (38, 25))
        """
        return cls(tuple(level_shapes(shape, chunk)), unit)

    @property
    def levels(self) -> int:
        return len(self.shapes)

    def grid(self, level: int) -> tuple[int, int]:
        """Rows and columns of units on ``level``."""
        h, w = self.shapes[level]
        u = self.unit
        return -(-h // u), -(-w // u)

    def units(self, level: int) -> list[Index]:
        """Every unit of ``level``, row by row."""
        rows, cols = self.grid(level)
        return [(r, c) for r in range(rows) for c in range(cols)]

    def region(self, level: int, index: Index) -> Region:
        """The pixels of unit ``index`` on ``level`` (clipped at the level's edge)."""
        h, w = self.shapes[level]
        u = self.unit
        return (index[0] * u, min(h, (index[0] + 1) * u), index[1] * u, min(w, (index[1] + 1) * u))

    def children(self, level: int, index: Index) -> list[Index]:
        """The units of ``level - 1`` that reduce into unit ``index`` of ``level``."""
        rows, cols = self.grid(level - 1)
        return [
            (2 * index[0] + dy, 2 * index[1] + dx)
            for dy in (0, 1)
            for dx in (0, 1)
            if 2 * index[0] + dy < rows and 2 * index[1] + dx < cols
        ]

    @staticmethod
    def parent(index: Index) -> Index:
        """The unit of the next level up that unit ``index`` reduces into."""
        return index[0] // 2, index[1] // 2

    def covering(self, level: int, region: Region) -> list[Index]:
        """The units of ``level`` that ``region`` (non-empty, inside the level) touches.

        Examples
        --------
        >>> UnitGrid(((300, 200),), unit=128).covering(0, (100, 140, 0, 10))
        [(0, 0), (1, 0)]
        """
        y0, y1, x0, x1 = region
        u = self.unit
        return [
            (uy, ux)
            for uy in range(y0 // u, (y1 - 1) // u + 1)
            for ux in range(x0 // u, (x1 - 1) // u + 1)
        ]

    def contains(self, level: int, region: Region) -> bool:
        """Whether ``region`` is a non-empty region inside ``level``."""
        h, w = self.shapes[level]
        y0, y1, x0, x1 = region
        return 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w


@dataclass(eq=False)
class UnitBuffer:
    """One unit of one level being assembled in memory: an array per image and a coverage mask.

    Made empty with :meth:`empty`, filled with :meth:`place`; ``complete``
    once every pixel of ``region`` has arrived.

    Examples
    --------
    >>> from tilex.omezarr.format import output_images
    >>> from tilex.sink import RunInfo
    >>> score = output_images(RunInfo((4, 4), ("ir",), (None,), 1))[2:3]
    >>> buf = UnitBuffer.empty(score, 0, (0, 0), (0, 4, 0, 4))
    >>> buf.place((0, 2, 0, 4), {"score": np.ones((1, 2, 4), np.float32)})
    8
    >>> buf.place((1, 4, 0, 4), {"score": np.ones((1, 3, 4), np.float32)}), buf.complete
    (8, True)
    """

    level: int
    index: Index
    region: Region  # y0, y1, x0, x1 in this level's pixels
    data: dict[str, np.ndarray]
    mask: np.ndarray  # which pixels have arrived
    covered: int = 0

    @classmethod
    def empty(
        cls, images: Sequence[ImageSpec], level: int, index: Index, region: Region
    ) -> UnitBuffer:
        """A zeroed buffer for ``region`` of every image in ``images``."""
        y0, y1, x0, x1 = region
        h, w = y1 - y0, x1 - x0
        data = {s.name: np.zeros(s.buffer_shape(h, w), s.dtype) for s in images}
        return cls(level, index, region, data, np.zeros((h, w), bool))

    @property
    def area(self) -> int:
        y0, y1, x0, x1 = self.region
        return (y1 - y0) * (x1 - x0)

    @property
    def complete(self) -> bool:
        return self.covered == self.area

    def place(self, region: Region, fields: Mapping[str, np.ndarray]) -> int:
        """Copy the part of ``fields`` (arrays ``[..., h, w]`` over ``region``) inside this unit.

        ``region`` is in this level's pixels and may reach outside the unit
        (a tile straddling units): only the overlap is copied. Returns the
        pixels newly covered (a pixel delivered twice counts once).
        """
        y0, y1, x0, x1 = region
        uy0, uy1, ux0, ux1 = self.region
        ty0, ty1, tx0, tx1 = max(y0, uy0), min(y1, uy1), max(x0, ux0), min(x1, ux1)
        if ty0 >= ty1 or tx0 >= tx1:
            return 0
        dst = (slice(ty0 - uy0, ty1 - uy0), slice(tx0 - ux0, tx1 - ux0))
        src = (slice(ty0 - y0, ty1 - y0), slice(tx0 - x0, tx1 - x0))
        for name, values in fields.items():
            self.data[name][(..., *dst)] = values[(..., *src)]
        newly = (ty1 - ty0) * (tx1 - tx0) - int(np.count_nonzero(self.mask[dst]))
        self.mask[dst] = True
        self.covered += newly
        return newly


def reduce(images: Sequence[ImageSpec], data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A finished unit's images reduced 2x with each image's reduction (what its parent takes)."""
    return {spec.name: spec.reduce(data[spec.name]) for spec in images}


def place_reduced(
    parent: UnitBuffer, child_region: Region, reduced: Mapping[str, np.ndarray]
) -> int:
    """Copy a child's :func:`reduce`-d images into their quarter of ``parent``; the pixels filled.

    ``child_region`` is the child's region on the level below; its corner is
    even (units are), so its reduction covers ``ceil`` of each half exactly.
    """
    y0, y1, x0, x1 = child_region
    return parent.place((y0 // 2, -(-y1 // 2), x0 // 2, -(-x1 // 2)), reduced)
