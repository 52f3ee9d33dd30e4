"""Feathered blending: a partition of unity, no seams, and close to exact when it can be."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from tilex.cli.main import main
from torch import nn

from tilex import kernels
from tilex.device import Backend
from tilex.encoder import build_encoder
from tilex.engine import Engine, measure_statistics
from tilex.engine.feather import axis_weights, blend, extent_of, tile_weights
from tilex.errors import NonFiniteError, PlanError
from tilex.grid import TileGrid, morton_order
from tilex.plan import FusionSpec, TilingSpec
from tilex.scan import open_scan
from tilex.sink import MemorySink, RunInfo
from tilex.stats import StatsSpec

CPU = Backend("cpu")


def array_scan(visible: np.ndarray, bands: np.ndarray):
    """A scan of arrays in memory (bands named b0, b1, ...)."""
    return open_scan(
        visible=visible, bands=[(f"b{i}", 400.0 + 100 * i, b) for i, b in enumerate(bands)]
    )


def random_scan(h: int, w: int, n: int, seed: int, *, nan_at: tuple[int, int] | None = None):
    rng = np.random.default_rng(seed)
    bands = rng.random((n, h, w), dtype=np.float32)
    scan = array_scan(rng.random((3, h, w), dtype=np.float32), bands)
    if nan_at:  # once open (opening would refuse it): only the tiles reading it meet it
        bands[0][nan_at] = np.nan
    return scan


# --------------------------------------------------------------------------- weights


def weight_sum(shape: tuple[int, int], tile: int, overlap: int) -> np.ndarray:
    total = np.zeros(shape, np.float64)
    grid = TileGrid(shape, tile, 0)
    for t in grid.tiles():
        y0, y1, x0, x1 = extent_of(t.row, t.col, shape, tile, overlap)
        w = tile_weights(t.row, t.col, shape, tile, overlap)
        assert w.shape == (y1 - y0, x1 - x0) and w.dtype == np.float32
        assert (w > 0).all() and (w <= 1).all()
        total[y0:y1, x0:x1] += w
    return total


@settings(max_examples=80, deadline=None)
@given(h=st.integers(1, 300), w=st.integers(1, 300), tile=st.integers(16, 96), data=st.data())
def test_weights_are_a_partition_of_unity(h, w, tile, data):
    overlap = data.draw(st.integers(1, tile // 2))
    np.testing.assert_allclose(weight_sum((h, w), tile, overlap), 1.0, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "tile", "overlap"),
    [
        ((129, 257), 64, 32),
        ((65, 200), 64, 20),
        ((64, 64), 64, 32),
        ((1000, 777), 128, 1),
        ((70, 131), 17, 8),
    ],
)
def test_partition_of_unity_at_odd_sizes_and_short_last_tiles(shape, tile, overlap):
    # (129, 257): last cores of 1 px, narrower than the overlap; (64, 64): one tile, no ramp
    np.testing.assert_allclose(weight_sum(shape, tile, overlap), 1.0, rtol=0, atol=1e-6)


def test_ramps_are_smooth_and_only_at_interior_boundaries():
    w = axis_weights(1, 300, 100, 10)  # extent 90:210, ramps around 100 and 200
    assert w.shape == (120,)
    rise, fall = w[:20], w[100:]
    assert (np.diff(rise) > 0).all() and (np.diff(fall) < 0).all()
    np.testing.assert_allclose(rise, fall[::-1], atol=1e-6)  # symmetric raised cosine
    assert rise[0] < 0.01 and rise[-1] > 0.99  # flat (zero slope) at both ends
    assert (w[20:100] == 1).all()
    first = axis_weights(0, 300, 100, 10)  # no ramp at the scan border
    assert (first[:90] == 1).all()


def test_blend_options_are_validated_by_the_plan():
    assert TilingSpec().blend == "exact"
    assert TilingSpec(tile=16, blend="feather", overlap=8).overlap == 8
    with pytest.raises(PlanError, match="--blend must be one of exact, feather, got 'soft'"):
        TilingSpec(blend="soft", overlap=8)
    with pytest.raises(PlanError, match="needs --overlap"):
        TilingSpec(blend="feather")
    with pytest.raises(PlanError, match="--overlap must be a whole number of px >= 1, got 0"):
        TilingSpec(blend="feather", overlap=0)
    with pytest.raises(PlanError, match="only used with --blend feather"):
        TilingSpec(overlap=4)
    with pytest.raises(PlanError, match=r"--overlap 33 px is more than half the tile \(64 px\)"):
        TilingSpec(tile=64, blend="feather", overlap=33)
    with pytest.raises(PlanError, match="more than half the tile"):
        TilingSpec(blend="feather", overlap=300).resolve(cuda=False)  # the CPU default: 512 px


def test_docstring_examples_run():
    result = doctest.testmod(
        importlib.import_module("tilex.engine.feather"), optionflags=doctest.ELLIPSIS
    )
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- no seams


class WideEncoder(nn.Module):
    """A receptive field of radius 15: a 31x31 Gaussian-weighted smoothing, then tanh."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 31, padding=15, bias=False)
        taps = torch.exp(-((torch.arange(31) - 15.0) ** 2) / (2 * 7.75**2))
        kernel = torch.outer(taps, taps)
        with torch.no_grad():
            self.conv.weight.copy_((kernel / kernel.sum())[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(3.0 * self.conv(x) - 1.0)


def textured_scan(h: int, w: int, n: int, seed: int):
    """Smooth structure (8 px cells) plus sensor noise: an image with its own variation."""
    rng = np.random.default_rng(seed)

    def field(c: int) -> np.ndarray:
        coarse = torch.from_numpy(rng.random((1, c, h // 8 + 2, w // 8 + 2), dtype=np.float32))
        smooth = nn.functional.interpolate(
            coarse, size=(h, w), mode="bicubic", align_corners=False
        )[0]
        noisy = smooth.numpy() + 0.05 * rng.standard_normal((c, h, w), dtype=np.float32)
        return np.clip(noisy, 0.0, 1.0).astype(np.float32)

    return array_scan(field(3), field(n))


def border_and_interior_steps(
    d: np.ndarray, tile: int, margin: int
) -> tuple[np.ndarray, np.ndarray]:
    """|differences| of adjacent pixels across core borders, and between pixels far from any border.

    "Far" is more than ``margin`` px from every core border, along both axes:
    outside every blending zone, so those steps are the image's own variation.
    """
    _, h, w = d.shape
    sy, sx = np.abs(np.diff(d, axis=1)), np.abs(np.diff(d, axis=2))  # step i: pixels i and i + 1

    def across(length: int) -> np.ndarray:
        steps = np.zeros(length - 1, bool)
        steps[[e - 1 for e in range(tile, length, tile)]] = True
        return steps

    def far(length: int) -> np.ndarray:
        pixels = np.ones(length, bool)
        for e in range(tile, length, tile):
            pixels[max(e - margin, 0) : e + margin] = False
        return pixels

    def far_steps(length: int) -> np.ndarray:
        pixels = far(length)
        return pixels[:-1] & pixels[1:]

    border = np.concatenate([sy[:, across(h), :].ravel(), sx[:, :, across(w)].ravel()])
    interior = np.concatenate(
        [sy[:, far_steps(h)][:, :, far(w)].ravel(), sx[:, far(h)][:, :, far_steps(w)].ravel()]
    )
    return border, interior


def assemble(cores, shape) -> np.ndarray:
    out = None
    for core in cores:
        if out is None:
            out = np.full((core.d.shape[0], *shape), np.nan, np.float32)
        y0, y1, x0, x1 = core.tile.core
        out[:, y0:y1, x0:x1] = core.d
    return out


def test_feathered_tiles_leave_no_seam_where_a_short_halo_does():
    tile, overlap, (h, w) = 64, 8, (200, 232)
    scan = textured_scan(h, w, 3, seed=1)
    # the field reaches 15 px; declaring 2 gives the exact mode a halo that is too small
    short = build_encoder(network=WideEncoder(), radius=2)
    engine = Engine(
        scan, short, CPU, fusion=FusionSpec(norm="pixel"), tiling=TilingSpec(tile=tile, readers=2)
    )

    naive = np.zeros((3, h, w), np.float32)  # what the exact mode fuses with that halo
    for t in engine.grid.tiles():
        visible, bands = scan.read_region(*t.read)
        g, b = short.encode(torch.from_numpy(visible), torch.from_numpy(bands))
        sy, sx = t.crop
        y0, y1, x0, x1 = t.core
        naive[:, y0:y1, x0:x1] = kernels.dissimilarity(g.numpy(), b.numpy())[:, sy, sx]
    feathered = assemble(blend(engine, overlap), (h, w))
    assert not np.isnan(feathered).any()

    # the image's own variation: the largest step of each map away from any tile border
    f_border, f_inside = border_and_interior_steps(feathered, tile, overlap)
    n_border, n_inside = border_and_interior_steps(naive, tile, overlap)
    assert f_border.max() <= f_inside.max(), (f_border.max(), f_inside.max())
    assert n_border.max() > 3 * n_inside.max(), "the test must be able to fail: a short halo seams"
    # on average the borders look like the rest of the image, unlike the naive tiling's
    assert f_border.mean() < 1.2 * f_inside.mean() and n_border.mean() > 2 * n_inside.mean()


def test_the_ramp_not_the_extra_context_removes_the_seam(monkeypatch):
    import tilex.engine.feather as feather

    def hard_cut(index: int, length: int, tile: int, overlap: int) -> np.ndarray:
        """Weight 1 on the core, 0 on the rest of the extent: still a partition of unity."""
        a, b = extent_of(index, 0, (length, 1), tile, overlap)[:2]
        weight = np.zeros(b - a, np.float32)
        weight[index * tile - a : index * tile - a + tile] = 1.0
        return weight

    tile, overlap, (h, w) = 64, 8, (200, 232)
    scan = textured_scan(h, w, 3, seed=1)
    engine = Engine(
        scan,
        build_encoder(network=WideEncoder(), radius=2),
        CPU,
        fusion=FusionSpec(norm="pixel"),
        tiling=TilingSpec(tile=tile, readers=2),
    )
    monkeypatch.setattr(feather, "axis_weights", hard_cut)
    cut = assemble(blend(engine, overlap), (h, w))
    border, inside = border_and_interior_steps(cut, tile, overlap)
    assert border.max() > 2 * inside.max()


# --------------------------------------------------------------------------- the run


def feathered_engine(scan, encoder, *, tile, overlap, norm="band"):
    return Engine(
        scan,
        encoder,
        CPU,
        fusion=FusionSpec(norm=norm, keep_normalised=True),
        tiling=TilingSpec(tile=tile, readers=2, depth=3, blend="feather", overlap=overlap),
    )


def feathered_run(scan, encoder, *, tile, overlap, stats=None, norm="band", unit=None, sink=None):
    engine = feathered_engine(scan, encoder, tile=tile, overlap=overlap, norm=norm)
    if norm == "band" and stats is None:
        stats = measure_statistics(engine, StatsSpec(clip=(0, 100), sample=1.0), halo=overlap)
    sink = sink or MemorySink()
    sink.write_unit = unit
    info = RunInfo(
        scan.shape, scan.band_names, scan.wavelengths, encoder.channels, keep_normalised=True
    )
    engine.run(sink, info, stats)
    assert sink.closed and (sink.written == 1).all(), "every pixel written exactly once"
    return sink, stats, engine


class RecordingSink(MemorySink):
    def __init__(self) -> None:
        super().__init__()
        self.regions: list[tuple[int, int, int, int]] = []

    def write(self, result) -> None:
        self.regions.append(result.region)
        super().write(result)


@pytest.fixture(scope="module")
def small(random_encoder):
    scan = random_scan(150, 170, 3, seed=5)
    return scan, random_encoder(seed=6)


def test_units_arrive_contiguously_in_morton_order_and_match_row_major(small):
    scan, encoder = small
    rows, _, _ = feathered_run(scan, encoder, tile=32, overlap=10, norm="pixel")
    units, _, _ = feathered_run(
        scan, encoder, tile=32, overlap=10, norm="pixel", unit=64, sink=RecordingSink()
    )
    seen = []
    for y0, _, x0, _ in units.regions:
        u = (y0 // 64, x0 // 64)
        if not seen or seen[-1] != u:
            assert u not in seen, "a unit's cores must be contiguous"
            seen.append(u)
    assert seen == morton_order(3, 3)
    # the same sums in another order: equal up to float32 rounding
    np.testing.assert_allclose(units.normalised, rows.normalised, atol=1e-5)
    np.testing.assert_allclose(units.collage, rows.collage, atol=1e-5)


def test_outputs_are_the_fusion_of_the_blended_maps(small):
    scan, encoder = small
    sink, stats, engine = feathered_run(scan, encoder, tile=48, overlap=12)
    h, w = scan.shape
    d = np.zeros((scan.n_bands, h, w), np.float32)
    b = np.zeros((scan.n_bands, encoder.channels, h, w), np.float32)
    for core in blend(engine, 12):
        y0, y1, x0, x1 = core.tile.core
        d[:, y0:y1, x0:x1], b[:, :, y0:y1, x0:x1] = core.d, core.b
    lo, hi = stats.arrays()
    ref = kernels.fuse_reference(
        np.zeros((1, h, w), np.float32), d[:, None], lo, hi, keep_normalised=True
    )
    np.testing.assert_array_equal(sink.winner, ref.winner)
    np.testing.assert_array_equal(sink.score, ref.score)
    np.testing.assert_array_equal(sink.normalised, ref.normalised)
    for i in range(scan.n_bands):  # the collage is the winner's blended band features
        where = sink.winner == i + 1
        np.testing.assert_array_equal(sink.collage[:, where], b[i][:, where])
    assert (sink.collage[:, sink.winner == 0] == 0).all()
    gray = np.tensordot(
        np.float32([0.299, 0.587, 0.114]), scan.read_region(0, h, 0, w)[0], axes=1
    ).astype(np.float32)
    np.testing.assert_array_equal(sink.overlay, kernels.overlay_reference(gray, sink.score))


def test_feather_with_overlap_at_the_radius_is_close_to_exact(random_encoder):
    scan = random_scan(200, 190, 4, seed=1)
    encoder = random_encoder(seed=2)  # ArtExtract architecture, radius 6
    engine = Engine(
        scan,
        encoder,
        CPU,
        fusion=FusionSpec(norm="band", keep_normalised=True),
        tiling=TilingSpec(tile=64, readers=2),
    )
    stats = measure_statistics(engine, StatsSpec(clip=(0, 100), sample=1.0))
    exact = MemorySink()
    info = RunInfo(scan.shape, scan.band_names, scan.wavelengths, 1, keep_normalised=True)
    engine.run(exact, info, stats)
    feathered, feather_stats, _ = feathered_run(scan, encoder, tile=64, overlap=encoder.radius)
    assert (
        feather_stats.lo == stats.lo and feather_stats.hi == stats.hi
    )  # blocks read with 6 px: exact
    np.testing.assert_allclose(feathered.normalised, exact.normalised, atol=5e-3)
    same = feathered.winner == exact.winner
    assert same.mean() >= 0.999
    np.testing.assert_allclose(feathered.score[same], exact.score[same], atol=5e-3)
    # winners may differ only near core borders, where the fading tile is within the radius of its edge
    ys, xs = np.nonzero(~same)
    from_border = np.minimum(np.minimum(ys % 64, 64 - ys % 64), np.minimum(xs % 64, 64 - xs % 64))
    assert (from_border <= 2 * encoder.radius).all(), from_border.max()


def test_band_mode_requires_stats_and_failures_abort(small):
    scan, encoder = small
    engine = feathered_engine(scan, encoder, tile=32, overlap=8)
    info = RunInfo(scan.shape, scan.band_names, scan.wavelengths, 1)
    with pytest.raises(ValueError, match="statistics"):
        engine.run(MemorySink(), info, None)
    failing = random_scan(100, 100, 2, seed=3, nan_at=(70, 70))
    engine = feathered_engine(failing, encoder, tile=32, overlap=8, norm="pixel")
    sink = MemorySink()
    with pytest.raises(
        NonFiniteError, match=r"^fusing tiles: <b0> holds NaN or infinity in rows \d+:\d+, columns"
    ):
        engine.run(sink, RunInfo(failing.shape, failing.band_names, failing.wavelengths, 1), None)
    assert not sink.closed


# --------------------------------------------------------------------------- wiring


@pytest.fixture(scope="module")
def synth_scan(tmp_path_factory):
    from tilex.synthetic import synth

    return synth(tmp_path_factory.mktemp("scan") / "scan", size=(96, 112), bands=3, tile=32)


def test_job_runs_feathered_and_records_it(synth_scan):
    from tilex.job import run

    report = run(synth_scan, None, tile=32, device="cpu", blend="feather", overlap=8, clip=(0, 100))
    assert (report.sink.written == 1).all()
    params = report.sink.info.provenance["parameters"]
    assert params["blend"] == "feather" and params["overlap"] == 8
    with pytest.raises(PlanError, match="more than half the tile"):
        run(synth_scan, None, tile=32, device="cpu", blend="feather", overlap=20)


def test_cli_blend_options(synth_scan, tmp_path):
    runner = CliRunner()
    base = ["run", str(synth_scan), "--tile", "32", "--device", "cpu"]
    result = runner.invoke(main, [*base, "-o", str(tmp_path / "a"), "--blend", "feather"])
    assert result.exit_code == 2 and "needs --overlap" in result.output
    result = runner.invoke(
        main, [*base, "-o", str(tmp_path / "b"), "--blend", "feather", "--overlap", "17"]
    )
    assert result.exit_code == 2 and "more than half the tile" in result.output
    result = runner.invoke(main, [*base, "-o", str(tmp_path / "c"), "--overlap", "8"])
    assert result.exit_code == 2 and "only used with --blend feather" in result.output
    result = runner.invoke(
        main, [*base, "-o", str(tmp_path / "d"), "--blend", "feather", "--overlap", "8"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "tilex.json").exists()
