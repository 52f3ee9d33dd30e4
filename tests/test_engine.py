"""The tiled engine equals the whole-image computation, whatever the tiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tilex.device import Backend
from tilex.engine import Engine, FusionSpec, PipelineSpec
from tilex.errors import NonFiniteError
from tilex.grid import TileGrid
from tilex.scan import open_scan
from tilex.sink import MemorySink, RunInfo
from tilex.stats import StatsSpec

CPU = Backend("cpu")


def random_scan(h: int, w: int, n: int, seed: int, *, nan_at: tuple[int, int] | None = None):
    """A scan of random arrays in memory; ``nan_at`` puts a NaN in band 0 there once it is open
    (opening would refuse it), so that only the tile reading it meets it."""
    rng = np.random.default_rng(seed)
    bands = rng.random((n, h, w), dtype=np.float32)
    scan = open_scan(visible=rng.random((3, h, w), dtype=np.float32),
                     bands=[(f"b{i}", 400.0 + 100 * i, band) for i, band in enumerate(bands)])
    if nan_at:
        bands[0][nan_at] = np.nan
    return scan


def fused(scan, encoder, *, tile, norm="band", unit=None, readers=2, depth=3, stats=None):
    engine = Engine(scan, encoder, CPU, fusion=FusionSpec(norm=norm, keep_normalised=True),
                    pipeline=PipelineSpec(tile=tile, readers=readers, depth=depth))
    if norm == "band" and stats is None:
        stats = engine.measure_stats(StatsSpec(clip=(0, 100), sample=1.0))
    sink = MemorySink()
    sink.write_unit = unit
    info = RunInfo(scan.shape, scan.band_names, scan.wavelengths, encoder.channels, keep_normalised=True)
    engine.run(sink, info, stats)
    assert (sink.written == 1).all(), "every pixel written exactly once"
    return sink, stats


@pytest.fixture(scope="module")
def case(random_encoder):
    scan = random_scan(1000, 777, 3, seed=1)
    encoder = random_encoder(seed=2)
    whole, stats = fused(scan, encoder, tile=1024)
    return scan, encoder, whole, stats


def assert_same(a: MemorySink, b: MemorySink) -> None:
    agree = (a.winner == b.winner).mean()
    assert agree >= 0.9999, f"winners agree on only {agree:.6%} of pixels"
    differ = a.winner != b.winner
    if differ.any():  # a flip is only allowed between two bands within float noise
        na, nb = a.normalised[:, differ], b.normalised[:, differ]
        assert np.abs(na - nb).max() < 1e-5
    np.testing.assert_allclose(a.score[~differ], b.score[~differ], atol=1e-5)
    np.testing.assert_allclose(a.collage[:, ~differ], b.collage[:, ~differ], atol=1e-5)
    np.testing.assert_allclose(a.normalised, b.normalised, atol=1e-5)


@pytest.mark.parametrize("tile", [128, 256, 384])
def test_tiled_equals_whole_image(case, tile):
    scan, encoder, whole, stats = case
    tiled, tiled_stats = fused(scan, encoder, tile=tile)
    np.testing.assert_allclose(tiled_stats.lo, stats.lo, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tiled_stats.hi, stats.hi, rtol=1e-5, atol=1e-6)
    assert_same(tiled, whole)


def test_pixel_mode_tiled_equals_whole_image(case):
    scan, encoder, _, _ = case
    assert_same(fused(scan, encoder, tile=160, norm="pixel")[0], fused(scan, encoder, tile=1024, norm="pixel")[0])


def test_independent_of_order_and_threads(case):
    scan, encoder, _, stats = case
    row_major, _ = fused(scan, encoder, tile=128, stats=stats)
    by_units, _ = fused(scan, encoder, tile=128, unit=256, readers=1, depth=1, stats=stats)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one_thread, _ = fused(scan, encoder, tile=128, unit=512, readers=4, stats=stats)
    finally:
        torch.set_num_threads(threads)
    for other in (by_units, one_thread):
        assert_same(other, row_major)


def test_stats_independent_of_tile_size(case):
    scan, encoder, _, stats = case
    for tile in (100, 333):
        engine = Engine(scan, encoder, CPU, pipeline=PipelineSpec(tile=tile))
        again = engine.measure_stats(StatsSpec(clip=(0, 100), sample=1.0))
        assert again.lo == stats.lo and again.hi == stats.hi


def test_units_complete_in_morton_order():
    grid = TileGrid((1000, 1000), tile=128, halo=6)
    units = []
    for t in grid.tiles(unit=256):
        u = (t.core[0] // 256, t.core[2] // 256)
        if not units or units[-1] != u:
            assert u not in units, "a unit's tiles must be contiguous"
            units.append(u)
    assert units[:4] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert len(units) == 16


def test_failing_tile_names_tile_and_aborts(random_encoder):
    scan = random_scan(300, 300, 2, seed=3, nan_at=(200, 250))
    engine = Engine(scan, random_encoder(4), CPU, fusion=FusionSpec(norm="pixel"), pipeline=PipelineSpec(tile=128))
    sink = MemorySink()
    info = RunInfo(scan.shape, scan.band_names, scan.wavelengths, 1)
    with pytest.raises(NonFiniteError, match=r"^fusing tiles: <b0> holds NaN or infinity in rows 122:262, "
                       r"columns 122:262"):
        engine.run(sink, info, None)
    assert not sink.closed


def test_library_refuses_a_nan_threshold():
    with pytest.raises(ValueError, match=r"threshold must be a finite number in \[0, 1\], got nan"):
        FusionSpec(threshold=float("nan"))


def test_band_mode_requires_stats(random_encoder):
    scan = random_scan(64, 64, 2, seed=3)
    engine = Engine(scan, random_encoder(4), CPU, pipeline=PipelineSpec(tile=64))
    with pytest.raises(ValueError, match="statistics"):
        engine.run(MemorySink(), RunInfo(scan.shape, scan.band_names, scan.wavelengths, 1), None)


def test_sampled_stats_close_to_full(case):
    scan, encoder, _, _ = case
    engine = Engine(scan, encoder, CPU, pipeline=PipelineSpec(tile=256))
    full = engine.measure_stats(StatsSpec(clip=(1, 99), sample=1.0))
    part = engine.measure_stats(StatsSpec(clip=(1, 99), sample=0.5))
    assert part.pixels < full.pixels
    np.testing.assert_allclose(part.hi, full.hi, rtol=0.05)


def test_fit_tile_halves_on_out_of_memory(caplog):
    from tilex.engine import fit_tile

    class SmallDevice:
        radius = 6

        def encode(self, visible, bands):
            if visible.shape[-1] > 600:
                raise RuntimeError("CUDA out of memory. Tried to allocate 9.00 GiB")
            return visible[:1], bands[:, None]

    assert fit_tile(SmallDevice(), CPU, 2048, 8) == 512
    assert "does not fit" in caplog.text
    with pytest.raises(RuntimeError, match="out of memory"):
        fit_tile(SmallDevice(), CPU, 2048, 8, minimum=1024)
