"""tilex.grid: the tile geometry alone (no encoder, no I/O).

Pinned here: the row-major and unit-by-unit (Morton) visiting orders, unit
tiles anchored at the unit's corner and clipped at its edge (also for tiles
that divide nothing), every pixel written by exactly one core for any shape,
tile, halo and unit, the halo arithmetic of :func:`region_with_halo`,
:func:`clamp_tile` and the 2x2 contiguity of :func:`morton_order`.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilex.grid import Tile, TileGrid, clamp_tile, morton_order, region_with_halo, unit_of

shapes = st.tuples(st.integers(1, 120), st.integers(1, 120))
tiles = st.integers(1, 70)
halos = st.integers(0, 12)
units = st.integers(1, 90)


def coverage(shape: tuple[int, int], cores) -> np.ndarray:
    """How many times each pixel is inside a core."""
    count = np.zeros(shape, np.int32)
    for y0, y1, x0, x1 in cores:
        assert 0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1], (y0, y1, x0, x1)
        count[y0:y1, x0:x1] += 1
    return count


def unit_region(index: tuple[int, int], unit: int, shape: tuple[int, int]):
    (r, c), (h, w) = index, shape
    return r * unit, min(r * unit + unit, h), c * unit, min(c * unit + unit, w)


def runs(values) -> list:
    """``values`` with consecutive repeats collapsed; a value seen twice here was split."""
    out: list = []
    for v in values:
        if not out or out[-1] != v:
            out.append(v)
    return out


# --------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (0, 5), "tile": 4, "halo": 0}, "image shape must be positive, got 0x5"),
        ({"shape": (5, -1), "tile": 4, "halo": 0}, "image shape must be positive, got 5x-1"),
        ({"shape": (5, 5), "tile": 0, "halo": 0}, "tile size must be >= 1, got 0"),
        ({"shape": (5, 5), "tile": 4, "halo": -1}, "halo must be >= 0, got -1"),
    ],
)
def test_grid_refuses_bad_geometry(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TileGrid(**kwargs)


def test_grid_is_a_frozen_value():
    grid = TileGrid((10, 20), tile=4, halo=1)
    assert grid == TileGrid((10, 20), 4, 1) and hash(grid) == hash(TileGrid((10, 20), 4, 1))
    with pytest.raises(AttributeError):
        grid.tile = 8  # type: ignore[misc]


# --------------------------------------------------------------------------- row-major


def test_row_major_order_and_edge_tiles():
    grid = TileGrid((10, 7), tile=4, halo=1)
    assert (grid.rows, grid.cols, len(grid)) == (3, 2, 6)
    got = list(grid.tiles())
    assert [(t.row, t.col) for t in got] == [(r, c) for r in range(3) for c in range(2)]
    assert [t.core for t in got] == [
        (0, 4, 0, 4),
        (0, 4, 4, 7),
        (4, 8, 0, 4),
        (4, 8, 4, 7),
        (8, 10, 0, 4),
        (8, 10, 4, 7),
    ]
    # reads grow by the halo and stop at the border
    assert got[0].read == (0, 5, 0, 5)
    assert got[3].read == (3, 9, 3, 7)
    assert got[-1].read == (7, 10, 3, 7)


@settings(max_examples=80, deadline=None)
@given(shapes, tiles, halos)
def test_row_major_tiles_cover_every_pixel_once(shape, tile, halo):
    grid = TileGrid(shape, tile=tile, halo=halo)
    got = list(grid.tiles())
    assert len(got) == len(grid) == grid.rows * grid.cols
    assert [(t.row, t.col) for t in got] == sorted((t.row, t.col) for t in got)
    assert (coverage(shape, [t.core for t in got]) == 1).all()
    assert sum(t.pixels for t in got) == shape[0] * shape[1]
    for t in got:
        assert t == grid.tile_at(t.row, t.col)
        assert t.read == region_with_halo(t.core, halo, shape)


@settings(max_examples=60, deadline=None)
@given(shapes, tiles, halos)
def test_read_pixels_is_the_sum_of_the_reads(shape, tile, halo):
    grid = TileGrid(shape, tile=tile, halo=halo)
    total = 0
    for t in grid.tiles():
        y0, y1, x0, x1 = t.read
        total += (y1 - y0) * (x1 - x0)
    assert grid.read_pixels == total


@settings(max_examples=60, deadline=None)
@given(shapes, tiles, halos, units)
def test_crop_cuts_the_core_out_of_the_read(shape, tile, halo, unit):
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w]
    for t in TileGrid(shape, tile=tile, halo=halo).tiles(unit=unit):
        ry0, ry1, rx0, rx1 = t.read
        y0, y1, x0, x1 = t.core
        cy, cx = t.crop
        np.testing.assert_array_equal(ys[ry0:ry1, rx0:rx1][cy, cx], ys[y0:y1, x0:x1])
        np.testing.assert_array_equal(xs[ry0:ry1, rx0:rx1][cy, cx], xs[y0:y1, x0:x1])


def test_describe_names_the_tile_and_its_pixels():
    grid = TileGrid((100, 100), tile=64, halo=2)
    assert grid.tile_at(1, 0).describe() == "tile (1, 0) rows 64:100, columns 0:64"
    # a region outside any grid (row -1: a sampled square) is named by its pixels alone
    assert Tile(-1, -1, (5, 9, 7, 8), (5, 9, 7, 8)).describe() == "rows 5:9, columns 7:8"


# --------------------------------------------------------------------------- by unit


def test_unit_tiles_clip_at_the_unit_edge_when_the_tile_divides_nothing():
    grid = TileGrid((10, 10), tile=4, halo=1)  # 4 divides neither 6 nor 10
    assert [t.core for t in grid.unit_tiles(6, (0, 0))] == [
        (0, 4, 0, 4),
        (0, 4, 4, 6),
        (4, 6, 0, 4),
        (4, 6, 4, 6),
    ]
    assert [t.core for t in grid.unit_tiles(6, (0, 1))] == [(0, 4, 6, 10), (4, 6, 6, 10)]
    assert [t.core for t in grid.unit_tiles(6, (1, 1))] == [(6, 10, 6, 10)]
    # the cores are clipped, the reads still grow by the halo across the unit's edge
    (corner,) = grid.unit_tiles(6, (1, 1))
    assert corner.read == (5, 10, 5, 10)
    # numbered as cells of ceil(unit / tile) per unit
    assert [(t.row, t.col) for t in grid.unit_tiles(6, (1, 0))] == [(2, 0), (2, 1)]


@settings(max_examples=120, deadline=None)
@given(shapes, tiles, halos, units)
def test_unit_tiles_cover_every_pixel_once_unit_by_unit(shape, tile, halo, unit):
    grid = TileGrid(shape, tile=tile, halo=halo)
    got = list(grid.tiles(unit=unit))
    assert (coverage(shape, [t.core for t in got]) == 1).all()
    owners = [unit_of(t.core, unit) for t in got]
    assert runs(owners) == morton_order(-(-shape[0] // unit), -(-shape[1] // unit))
    for t, index in zip(got, owners, strict=True):
        uy0, uy1, ux0, ux1 = unit_region(index, unit, shape)
        y0, y1, x0, x1 = t.core
        # inside its unit, anchored at the unit's corner, no longer than a tile
        assert uy0 <= y0 < y1 <= uy1 and ux0 <= x0 < x1 <= ux1
        assert (y0 - uy0) % tile == 0 and (x0 - ux0) % tile == 0
        assert y1 - y0 <= tile and x1 - x0 <= tile
        # a core ends short of a whole tile only at its unit's (or the image's) edge
        assert y1 - y0 == tile or y1 == uy1
        assert x1 - x0 == tile or x1 == ux1
        assert t.read == region_with_halo(t.core, halo, shape)


@settings(max_examples=60, deadline=None)
@given(shapes, tiles, halos, st.integers(1, 6))
def test_unit_tiles_are_the_grid_tiles_where_the_tile_divides_the_unit(shape, tile, halo, k):
    grid = TileGrid(shape, tile=tile, halo=halo)
    by_unit = list(grid.tiles(unit=k * tile))
    assert sorted(by_unit, key=lambda t: (t.row, t.col)) == list(grid.tiles())


@settings(max_examples=60, deadline=None)
@given(shapes, tiles, halos, units)
def test_unclipped_units_keep_the_one_grid(shape, tile, halo, unit):
    grid = TileGrid(shape, tile=tile, halo=halo)
    got = list(grid.tiles(unit=unit, clip_to_unit=False))
    # the grid anchored at (0, 0), each tile once, given to the unit its core starts in
    assert sorted(got, key=lambda t: (t.row, t.col)) == list(grid.tiles())
    owners = [unit_of(t.core, unit) for t in got]
    order = runs(owners)
    assert len(order) == len(set(order)), "a unit's tiles must come together"
    full = morton_order(-(-shape[0] // unit), -(-shape[1] // unit))
    assert order == [u for u in full if u in set(order)]


def test_units_complete_in_morton_order():
    grid = TileGrid((1000, 1000), tile=128, halo=6)
    order = runs(unit_of(t.core, 256) for t in grid.tiles(unit=256))
    assert order[:4] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert order == morton_order(4, 4)


def test_unit_of():
    assert unit_of((0, 10, 0, 10), 8) == (0, 0)
    assert unit_of((8, 9, 15, 16), 8) == (1, 1)
    assert unit_of((17, 20, 3, 4), 8) == (2, 0)


# --------------------------------------------------------------------------- halo


def test_region_with_halo_examples():
    assert region_with_halo((10, 20, 30, 40), 5, (100, 100)) == (5, 25, 25, 45)
    assert region_with_halo((0, 10, 20, 30), 6, (100, 28)) == (0, 16, 14, 28)
    assert region_with_halo((2, 3, 2, 3), 0, (5, 5)) == (2, 3, 2, 3)
    assert region_with_halo((0, 5, 0, 5), 100, (5, 5)) == (0, 5, 0, 5)


@settings(max_examples=150, deadline=None)
@given(shapes, st.data(), halos)
def test_region_with_halo_grows_then_clips(shape, data, halo):
    h, w = shape
    y0 = data.draw(st.integers(0, h - 1))
    y1 = data.draw(st.integers(y0 + 1, h))
    x0 = data.draw(st.integers(0, w - 1))
    x1 = data.draw(st.integers(x0 + 1, w))
    ry0, ry1, rx0, rx1 = region_with_halo((y0, y1, x0, x1), halo, shape)
    assert (ry0, ry1, rx0, rx1) == (
        max(y0 - halo, 0),
        min(y1 + halo, h),
        max(x0 - halo, 0),
        min(x1 + halo, w),
    )
    # within the image, around the region, and the full halo wherever the image allows
    assert 0 <= ry0 <= y0 < y1 <= ry1 <= h and 0 <= rx0 <= x0 < x1 <= rx1 <= w
    assert y0 - ry0 == min(halo, y0) and ry1 - y1 == min(halo, h - y1)
    assert x0 - rx0 == min(halo, x0) and rx1 - x1 == min(halo, w - x1)


# --------------------------------------------------------------------------- clamp_tile


def test_clamp_tile_examples():
    assert clamp_tile(256, (300, 200), unit=4096) == 256  # shorter than the image: kept
    assert clamp_tile(300, (300, 200)) == 300  # exactly the longer side: kept
    assert clamp_tile(8192, (300, 200)) == 304  # least multiple of 16 covering 300
    assert clamp_tile(8192, (300, 200), unit=4096) == 304
    assert clamp_tile(8192, (5000, 5000), unit=4096) == 4096  # no longer than the unit
    assert clamp_tile(5000, (5000, 5000)) == 5000
    assert clamp_tile(5001, (5000, 5000)) == 5008


@settings(max_examples=100, deadline=None)
@given(shapes, st.integers(16, 400), st.one_of(st.none(), st.integers(1, 8).map(lambda k: 16 * k)))
def test_clamp_tile_gives_the_same_cores(shape, tile, unit):
    clamped = clamp_tile(tile, shape, unit)
    longest = min(max(shape), unit) if unit else max(shape)
    if tile <= longest:
        assert clamped == tile
        return
    assert clamped % 16 == 0 and longest <= clamped < longest + 16 and clamped < tile + 16
    if unit:
        assert clamped <= unit
    # a needlessly long tile and its clamp cut the scan alike
    one, two = TileGrid(shape, tile, 3), TileGrid(shape, clamped, 3)
    assert [(t.core, t.read) for t in one.tiles(unit=unit)] == [
        (t.core, t.read) for t in two.tiles(unit=unit)
    ]


# --------------------------------------------------------------------------- Morton order


def test_morton_order_examples():
    assert morton_order(1, 1) == [(0, 0)]
    assert morton_order(2, 3) == [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (1, 2)]
    assert morton_order(4, 4)[:8] == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
        (0, 2),
        (0, 3),
        (1, 2),
        (1, 3),
    ]
    assert morton_order(3, 1) == [(0, 0), (1, 0), (2, 0)]


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40))
def test_morton_blocks_are_contiguous_at_every_level(rows, cols):
    order = morton_order(rows, cols)
    assert sorted(order) == [(r, c) for r in range(rows) for c in range(cols)]
    level = 0
    while (1 << level) < 2 * max(rows, cols):
        # the cells of each aligned 2**level block come out one after another,
        # so a parent unit is complete as soon as its last child is
        parents = runs((r >> level, c >> level) for r, c in order)
        assert len(parents) == len(set(parents)), f"a block of level {level} is split"
        level += 1
    # within a block the order is (0, 0), (0, 1), (1, 0), (1, 1)
    position = {cell: i for i, cell in enumerate(order)}
    for r in range(0, rows - 1, 2):
        for c in range(0, cols - 1, 2):
            i = position[(r, c)]
            assert order[i : i + 4] == [(r, c), (r, c + 1), (r + 1, c), (r + 1, c + 1)]
