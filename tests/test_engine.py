"""The tiled engine equals the whole-image computation, whatever the tiling.

What "equals" means here, measured: on a 1000 x 777 scan with a random
ArtExtract network, every tiling gives the one-tile run's winners exactly and
its scores, collage and per-band maps within 2e-6 (at most 1.2e-6 seen: the
convolutions of a different input shape round differently in float32). The
statistics are bit-identical whatever the tile size.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tilex.device import Backend, tile_workers
from tilex.engine import Engine, measure_statistics
from tilex.errors import NonFiniteError, PlanError
from tilex.grid import TileGrid
from tilex.plan import FusionSpec, TilingSpec
from tilex.scan import open_scan
from tilex.sink import MemorySink, RunInfo
from tilex.stats import StatsSpec

CPU = Backend("cpu")


def random_scan(h: int, w: int, n: int, seed: int, *, nan_at: tuple[int, int] | None = None):
    """A scan of random arrays in memory; ``nan_at`` puts a NaN in band 0 there once it is open
    (opening would refuse it), so that only the tile reading it meets it."""
    rng = np.random.default_rng(seed)
    bands = rng.random((n, h, w), dtype=np.float32)
    scan = open_scan(
        visible=rng.random((3, h, w), dtype=np.float32),
        bands=[(f"b{i}", 400.0 + 100 * i, band) for i, band in enumerate(bands)],
    )
    if nan_at:
        bands[0][nan_at] = np.nan
    return scan


def fused(scan, encoder, *, tile, norm="band", unit=None, readers=2, depth=3, stats=None):
    engine = Engine(
        scan,
        encoder,
        CPU,
        fusion=FusionSpec(norm=norm, keep_normalised=True),
        tiling=TilingSpec(tile=tile, readers=readers, depth=depth),
    )
    if norm == "band" and stats is None:
        stats = measure_statistics(engine, StatsSpec(clip=(0, 100), sample=1.0))
    sink = MemorySink()
    sink.write_unit = unit
    info = RunInfo(
        scan.shape, scan.band_names, scan.wavelengths, encoder.channels, keep_normalised=True
    )
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
    """Identical winners; maps within float32 rounding (see the module docstring)."""
    np.testing.assert_array_equal(a.winner, b.winner)
    np.testing.assert_allclose(a.score, b.score, rtol=0, atol=2e-6)
    np.testing.assert_allclose(a.collage, b.collage, rtol=0, atol=2e-6)
    np.testing.assert_allclose(a.normalised, b.normalised, rtol=0, atol=2e-6)


@pytest.mark.parametrize(
    ("tile", "unit"), [(128, None), (256, None), (384, None), (100, 256), (333, 512)]
)
def test_tiled_equals_whole_image(case, tile, unit):
    """Also with tiles that divide neither the scan nor the write unit (clipped at the unit's edge)."""
    scan, encoder, whole, stats = case
    tiled, tiled_stats = fused(scan, encoder, tile=tile, unit=unit)
    assert tiled_stats == stats
    assert_same(tiled, whole)


def test_pixel_mode_tiled_equals_whole_image(case):
    scan, encoder, _, _ = case
    assert_same(
        fused(scan, encoder, tile=160, norm="pixel")[0],
        fused(scan, encoder, tile=1024, norm="pixel")[0],
    )


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


def test_cpu_tiles_encoded_at_once_give_the_same_bits_and_leave_torch_as_it_was(case):
    """Torch's thread count becomes the number of tiles encoded at once, one torch thread
    each (tilex.device.tile_workers); the result is the same bits as one tile at a time."""
    scan, encoder, _, stats = case
    threads = torch.get_num_threads()
    runs = {}
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            runs[n], _ = fused(scan, encoder, tile=128, unit=256, readers=1, stats=stats)
            assert torch.get_num_threads() == n, "the engine gives torch its thread count back"
    finally:
        torch.set_num_threads(threads)
    for name in ("winner", "score", "collage", "normalised"):
        np.testing.assert_array_equal(getattr(runs[3], name), getattr(runs[1], name))


def test_tile_workers_runs_torch_on_one_thread_inside_and_counts_nested_users():
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        with tile_workers(CPU) as outer:
            assert (outer, torch.get_num_threads()) == (3, 1)
            with tile_workers(CPU) as inner:  # a second engine in the same process
                assert inner == 3
            assert torch.get_num_threads() == 1, "still inside the first"
        assert torch.get_num_threads() == 3
        torch.set_num_threads(1)
        with tile_workers(CPU) as single:
            assert single == 1  # one tile at a time, on the calling thread
    finally:
        torch.set_num_threads(threads)


def test_stats_independent_of_tile_size(case):
    scan, encoder, _, stats = case
    for tile in (100, 333):
        engine = Engine(scan, encoder, CPU, tiling=TilingSpec(tile=tile, readers=2))
        again = measure_statistics(engine, StatsSpec(clip=(0, 100), sample=1.0))
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
    engine = Engine(
        scan,
        random_encoder(4),
        CPU,
        fusion=FusionSpec(norm="pixel"),
        tiling=TilingSpec(tile=128, readers=2),
    )
    sink = MemorySink()
    info = RunInfo(scan.shape, scan.band_names, scan.wavelengths, 1)
    with pytest.raises(
        NonFiniteError,
        match=r"^fusing tiles: <b0> holds NaN or infinity in rows 122:262, "
        r"columns 122:262",
    ):
        engine.run(sink, info, None)
    assert not sink.closed


def test_library_refuses_a_nan_threshold():
    with pytest.raises(PlanError, match=r"--threshold must be a number in \[0, 1\], got nan"):
        FusionSpec(threshold=float("nan"))


def test_band_mode_requires_stats(random_encoder):
    scan = random_scan(64, 64, 2, seed=3)
    engine = Engine(scan, random_encoder(4), CPU, tiling=TilingSpec(tile=64, readers=2))
    with pytest.raises(ValueError, match="statistics"):
        engine.run(MemorySink(), RunInfo(scan.shape, scan.band_names, scan.wavelengths, 1), None)


def test_sampled_stats_close_to_full(case):
    scan, encoder, _, _ = case
    engine = Engine(scan, encoder, CPU, tiling=TilingSpec(tile=256, readers=2))
    full = measure_statistics(engine, StatsSpec(clip=(1, 99), sample=1.0))
    part = measure_statistics(engine, StatsSpec(clip=(1, 99), sample=0.5))
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


@pytest.mark.parametrize("norm", ["band", "pixel"])
@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.37, 0.5, 0.9, 1.0])
def test_evidence_gives_the_fusion_at_any_threshold(norm, threshold):
    """One kernel call at threshold 0, cleared where evidence <= t, is the fusion at t, bit for bit."""
    from tilex import kernels
    from tilex.engine.fuse import fuse_with_evidence

    rng = np.random.default_rng(7)
    g = rng.random((3, 24, 20), dtype=np.float32)
    b = rng.random((4, 3, 24, 20), dtype=np.float32)
    b[2] = g  # a band equal to the visible image: dissimilarity 0
    b[1, 0, :3] = np.nan  # a band that never wins there
    b[:, 2, 5, 5] = np.nan  # a pixel where no band has a value
    lo, hi = (
        np.array([0.2, 0.4, 0.0, 0.1], np.float32),
        np.array([2.0, 1.5, 1.0, 3.0], np.float32),
    )
    if norm == "pixel":
        lo = hi = None
    spec = FusionSpec(norm=norm, threshold=threshold, keep_normalised=True)
    fused, evidence = fuse_with_evidence(g, b, lo, hi, spec)
    direct = kernels.fuse(
        g, b, lo, hi, norm=norm, threshold=threshold, keep_normalised=True
    )  # fmt: skip
    for name in ("winner", "score", "collage", "normalised"):
        np.testing.assert_array_equal(getattr(fused, name), getattr(direct, name), err_msg=name)
    assert evidence[5, 5] == 0.0
    np.testing.assert_array_equal(fused.winner > 0, evidence > np.float32(threshold))
    np.testing.assert_array_equal(fused.score, np.where(evidence > threshold, evidence, 0))
