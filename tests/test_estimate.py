"""The work estimate before a run, the small-tile warning and the tile clamp: arithmetic only.

Timings are injected (a fake clock, a fake encoder), so nothing here depends
on how fast this machine is.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest

from tilex.device import resolve_device
from tilex.estimate import GPU_HINT_S, estimate_work, log_work_ahead, tile_advice, time_trial
from tilex.grid import TileGrid, clamp_tile

CPU = resolve_device("cpu")


class NullEncoder:
    """An encoder that costs nothing and records the shapes it was given."""

    radius = 6

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def encode(self, visible, bands):
        self.shapes.append(tuple(bands.shape))
        return visible[:1], bands[:, None]

    def encode_bands(self, bands):
        self.shapes.append(("bands only", *bands.shape))
        return bands[:, None]


def ticking(*steps: float):
    """A clock whose successive calls return the running sums of ``steps`` (start, stop pairs)."""
    times = itertools.accumulate(itertools.chain.from_iterable((0.0, s) for s in steps))
    return lambda: next(times)


def test_time_trial_encodes_one_full_tile_and_keeps_the_fastest():
    encoder = NullEncoder()
    seconds, shape = time_trial(encoder, CPU, 512, 8, clock=ticking(4.5, 2.0))
    assert (seconds, shape) == (2.0, (524, 524))  # the first paid the setup
    assert encoder.shapes == [(8, 524, 524)] * 2  # no third: two took more than the 1 s budget
    encoder = NullEncoder()
    seconds, shape = time_trial(encoder, CPU, 16, 3, (300, 20), clock=ticking(0.5, 0.125, 0.25))
    assert (seconds, shape) == (
        0.125,
        (28, 20),
    )  # quick: three tries, the fastest; clipped to the scan
    assert len(encoder.shapes) == 3
    encoder = NullEncoder()  # a calibrated run encodes each band and its prediction, no visible
    time_trial(encoder, CPU, 16, 3, calibrated=True, clock=ticking(2.0, 2.0))
    assert encoder.shapes == [("bands only", 6, 28, 28)] * 2


def test_estimate_extrapolates_the_trial_to_both_passes():
    grid = TileGrid((200_000, 200_000), tile=512, halo=6)
    work = estimate_work(
        grid, stats_fraction=0.05, stats_block=64, trial=(2.0, (524, 524)), device="cpu"
    )
    per_pixel = 2.0 / 524**2
    assert work.tiles == 391**2
    assert work.main_read == grid.read_pixels
    # every tile reads its halo on every side except at the scan's border
    assert work.main_read == (200_000 + 2 * 6 * 391 - 2 * 6) ** 2
    assert work.main_s == pytest.approx(work.main_read * per_pixel)
    assert work.stats_s == pytest.approx(0.05 * 200_000**2 * (76 / 64) ** 2 * per_pixel)
    assert work.total_s == pytest.approx(work.main_s + work.stats_s)
    text = "\n".join(work.lines())
    assert "200000x200000 scan (40000.0 Mpx)" in text and "statistics pass over 5% of it" in text
    assert "152,881 tiles of 512 px" in text and "+4.7% pixels" in text
    assert "days" in text


def test_no_statistics_pass_and_a_resumed_run():
    grid = TileGrid((1000, 1000), tile=256, halo=6)
    work = estimate_work(
        grid, stats_fraction=None, stats_block=64, trial=(1.0, (268, 268)), device="cpu"
    )
    assert work.stats_s == 0 and "statistics" not in "\n".join(work.lines())
    half = estimate_work(
        grid,
        stats_fraction=None,
        stats_block=64,
        trial=(1.0, (268, 268)),
        device="cpu",
        skip=lambda tile: tile.row < 2,
    )
    # rows 2 and 3 read 268 and 238 px (the last core is 232 px); the columns 262 + 268 + 268 + 238
    assert half.tiles == 8 and half.main_read == (268 + 238) * 1036 and grid.read_pixels == 1036**2


@pytest.mark.parametrize(
    ("trial_s", "device", "hint"),
    [
        (60.0, "cpu", True),  # about 23 h on a CPU
        (0.001, "cpu", False),  # about 1.4 min on a CPU
        (60.0, "cuda:0", False),  # long, but already on the GPU
    ],
)
def test_the_gpu_hint_appears_above_an_hour_on_cpu_only(trial_s, device, hint):
    grid = TileGrid((20_000, 20_000), tile=512, halo=6)
    work = estimate_work(
        grid, stats_fraction=0.05, stats_block=64, trial=(trial_s, (524, 524)), device=device
    )
    assert (work.total_s > GPU_HINT_S) == (trial_s > 1)
    assert work.gpu_hint is hint
    assert any("--device cuda" in line for line in work.lines()) is hint


def test_log_work_ahead_times_only_when_info_is_shown(caplog):
    class FakeEngine:
        encoder = NullEncoder()
        backend = CPU
        tiling = type("T", (), {"tile": 64})()
        scan = type("S", (), {"n_bands": 2, "shape": (100, 80)})()
        grid = TileGrid((100, 80), tile=64, halo=6)
        calibration = None

    engine = FakeEngine()
    with caplog.at_level(logging.WARNING, logger="tilex"):
        assert log_work_ahead(engine, 0.5) is None
    assert engine.encoder.shapes == []  # -q: no trial at all
    with caplog.at_level(logging.INFO, logger="tilex"):
        work = log_work_ahead(engine, 0.5)
    assert work is not None and engine.encoder.shapes
    assert "work ahead: 100x80 scan" in caplog.text and "trial tile" in caplog.text


def test_tile_advice_warns_when_the_halo_dominates():
    advice = tile_advice(TileGrid((2048, 2048), tile=16, halo=6), 512)
    assert advice is not None
    assert "tile 16 px reads 3.0x" in advice and "67% of the encoding is wasted" in advice
    assert "--tile 512" in advice
    assert tile_advice(TileGrid((2048, 2048), tile=32, halo=6), 512) is None  # 1.8x: not yet
    assert tile_advice(TileGrid((2048, 2048), tile=512, halo=6), 512) is None


@pytest.mark.parametrize(
    ("tile", "shape", "unit", "want"),
    [
        (8192, (300, 200), 4096, 304),  # the longer side, rounded up to 16
        (1536, (300, 200), 4096, 304),
        (400, (300, 200), 4096, 304),  # one tile either way: the tiles are unchanged
        (8192, (300, 200), None, 304),
        (8192, (5000, 3000), 4096, 4096),  # scan longer than the unit: the unit
        (256, (300, 200), 4096, 256),  # not longer than the scan: kept
        (512, (512, 100), 4096, 512),
    ],
)
def test_clamp_tile(tile, shape, unit, want):
    got = clamp_tile(tile, shape, unit)
    assert got == want
    assert got % 16 == 0 and (unit is None or got <= unit)
    if tile > max(shape) and want >= max(shape):
        assert len(TileGrid(shape, got, 6)) == 1


def test_read_pixels_counts_every_tile_read():
    for shape, tile, halo in [((1000, 777), 256, 6), ((100, 80), 64, 6), ((50, 50), 16, 20)]:
        grid = TileGrid(shape, tile, halo)
        counted = sum((t.read[1] - t.read[0]) * (t.read[3] - t.read[2]) for t in grid.tiles())
        assert grid.read_pixels == counted
    assert np.isclose(
        TileGrid((4096, 4096), 512, 6).read_pixels / 4096**2, (1 + 12 * 8 / 4096 - 12 / 4096) ** 2
    )
