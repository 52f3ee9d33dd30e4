"""tilex.omezarr.units: unit geometry and in-memory assembly, without zarr or any file.

The property behind the streaming pyramid: a parent unit assembled from its
children's 2x2 reductions equals the reduction of the whole level below,
whatever the shape, the unit and the order the pixels arrive in.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilex.omezarr.format import output_images
from tilex.omezarr.units import UnitBuffer, UnitGrid, place_reduced, reduce
from tilex.sink import RunInfo

INFO = RunInfo((1, 1), ("uv", "ir"), (365.0, None), channels=2, keep_normalised=True)
IMAGES = output_images(INFO)

shapes = st.tuples(st.integers(1, 90), st.integers(1, 90))
units = st.sampled_from([2, 4, 6, 8, 16])


def random_level(shape: tuple[int, int], seed: int) -> dict[str, np.ndarray]:
    """Every image of the output over a whole level, random."""
    rng = np.random.default_rng(seed)
    h, w = shape
    out = {}
    for spec in IMAGES:
        size = spec.buffer_shape(h, w)
        if spec.dtype == np.uint8:
            out[spec.name] = rng.integers(0, 3 if spec.is_label else 256, size, dtype=np.uint8)
        else:
            out[spec.name] = rng.random(size, dtype=np.float32)
    return out


def crop(data: dict[str, np.ndarray], region: tuple[int, int, int, int]) -> dict[str, np.ndarray]:
    y0, y1, x0, x1 = region
    return {k: v[..., y0:y1, x0:x1] for k, v in data.items()}


def test_importing_the_unit_code_needs_no_zarr():
    code = "import sys, tilex.omezarr.units, tilex.omezarr.ngff, tilex.omezarr.journal; print('zarr' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "False"


@settings(max_examples=80, deadline=None)
@given(shape=shapes, unit=units, chunk=st.sampled_from([1, 2, 4]))
def test_units_tile_every_level_exactly_once(shape, unit, chunk):
    grid = UnitGrid.for_shape(shape, unit, chunk)
    for level, (h, w) in enumerate(grid.shapes):
        hits = np.zeros((h, w), np.int32)
        for index in grid.units(level):
            y0, y1, x0, x1 = grid.region(level, index)
            assert y0 < y1 and x0 < x1
            hits[y0:y1, x0:x1] += 1
            assert grid.covering(level, (y0, y1, x0, x1)) == [index]
        assert (hits == 1).all()
        if level:  # every unit below has exactly one parent, which lists it
            below = [c for p in grid.units(level) for c in grid.children(level, p)]
            assert sorted(below) == sorted(grid.units(level - 1))
            assert all(
                grid.parent(c) == p for p in grid.units(level) for c in grid.children(level, p)
            )


@settings(max_examples=60, deadline=None)
@given(
    shape=shapes, unit=units, tile=st.integers(1, 20), seed=st.integers(0, 2**16), data=st.data()
)
def test_tiles_in_any_order_fill_units_exactly(shape, unit, tile, seed, data):
    grid = UnitGrid((shape,), unit)
    level = random_level(shape, seed)
    h, w = shape
    tiles = [
        (y, min(y + tile, h), x, min(x + tile, w))
        for y in range(0, h, tile)
        for x in range(0, w, tile)
    ]
    tiles = data.draw(st.permutations(tiles))
    buffers = {i: UnitBuffer.empty(IMAGES, 0, i, grid.region(0, i)) for i in grid.units(0)}
    for region in tiles:
        touched = grid.covering(0, region)
        newly = sum(buffers[i].place(region, crop(level, region)) for i in touched)
        assert newly == (region[1] - region[0]) * (region[3] - region[2])
        assert all(
            buffers[i].place(region, crop(level, region)) == 0 for i in touched
        )  # repeats count once
    for buf in buffers.values():
        assert buf.complete
        for name, values in crop(level, buf.region).items():
            np.testing.assert_array_equal(buf.data[name], values)


def test_place_outside_the_unit_copies_nothing():
    buf = UnitBuffer.empty(IMAGES, 0, (1, 1), (4, 8, 4, 8))
    assert buf.place((0, 4, 0, 8), random_level((4, 8), 0)) == 0
    assert buf.covered == 0 and not buf.mask.any()


@settings(max_examples=60, deadline=None)
@given(shape=shapes, unit=units, seed=st.integers(0, 2**16))
def test_parents_from_children_reductions_equal_the_reduced_level(shape, unit, seed):
    grid = UnitGrid.for_shape(shape, unit, 1)
    below = random_level(shape, seed)
    for level in range(1, grid.levels):
        whole = reduce(IMAGES, below)
        for index in grid.units(level):
            parent = UnitBuffer.empty(IMAGES, level, index, grid.region(level, index))
            for child in grid.children(level, index):
                region = grid.region(level - 1, child)
                place_reduced(parent, region, reduce(IMAGES, crop(below, region)))
            assert parent.complete
            for name, values in crop(whole, parent.region).items():
                np.testing.assert_array_equal(
                    parent.data[name], values, err_msg=f"{name} {level} {index}"
                )
        below = whole


@pytest.mark.parametrize(("unit", "match"), [(3, "even"), (0, "even")])
def test_bad_units_are_refused(unit, match):
    with pytest.raises(ValueError, match=match):
        UnitGrid(((4, 4),), unit)
