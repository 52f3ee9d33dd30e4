"""Whole-scan calibration (tilex/calibration.py) and the calibrated comparison in a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tilex
from tilex import calibration
from tilex.calibration import Calibration, CalibrationSpec, fit, fit_scan, srgb_to_linear
from tilex.encoder import build_encoder
from tilex.errors import PlanError
from tilex.plan import RunPlan
from tilex.scan import open_scan
from tilex.stats import sample_regions

COEFS = [(0.6, 0.2, 0.1, 0.05), (0.1, 0.3, 0.5, 0.02), (0.05, 0.7, 0.1, 0.1)]


def patches(h: int, w: int, seed: int) -> np.ndarray:
    """A visible image of flat colour discs with a little texture: every region coloured."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    vis = np.zeros((3, h, w), np.float32)
    for _ in range(12):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(20, 60)
        vis[:, (yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.random(3)[:, None]
    return np.clip(vis + 0.05 * rng.random((3, h, w)), 0, 1).astype(np.float32)


def affine_scan(h: int = 160, w: int = 144, seed: int = 3):
    """Bands that are exact affine functions of the linear visible image: nothing hidden."""
    vis = patches(h, w, seed)
    lin = srgb_to_linear(vis)
    bands = [
        (f"b{i}", 500.0 + 100 * i, (r * lin[0] + g * lin[1] + b * lin[2] + c).astype(np.float32))
        for i, (r, g, b, c) in enumerate(COEFS)
    ]
    return open_scan(visible=vis, bands=bands)


def test_srgb_decode_known_values():
    x = np.array([0.0, 0.02, 0.04045, 0.2, 0.5, 0.735357, 1.0], np.float32)
    expected = [0.0, 0.02 / 12.92, 0.04045 / 12.92, 0.0331048, 0.2140411, 0.5, 1.0]
    got = srgb_to_linear(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-7)
    assert np.all(np.diff(srgb_to_linear(np.linspace(0, 1, 1001, dtype=np.float32))) > 0)


def test_robust_refits_beat_a_plain_fit_with_outliers(monkeypatch):
    rng = np.random.default_rng(0)
    squares = []
    for _ in range(8):
        vis = rng.random((3, 32, 32), dtype=np.float32)
        lin = srgb_to_linear(vis)
        y = np.stack([r * lin[0] + g * lin[1] + b * lin[2] + c for r, g, b, c in COEFS])
        y = y + rng.normal(0, 0.002, y.shape)
        hidden = rng.random(y.shape[1:]) < 0.10  # 10 % of pixels: content the visible lacks
        y[:, hidden] += rng.uniform(0.3, 0.8, (len(COEFS), int(hidden.sum())))
        squares.append((vis, y.astype(np.float32)))
    spec = CalibrationSpec("affine")
    robust = np.array(fit(squares, spec).coefficients)
    monkeypatch.setattr(calibration, "REFITS", 0)
    plain = np.array(fit(squares, spec).coefficients)
    err_robust = np.abs(robust - COEFS).max()
    err_plain = np.abs(plain - COEFS).max()
    assert err_robust < 0.01
    assert err_robust < err_plain / 5


def test_gain_mode_fits_a_luminance_gain():
    rng = np.random.default_rng(1)
    vis = rng.random((3, 48, 48), dtype=np.float32)
    lin = srgb_to_linear(vis)
    y = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    cal = fit([(vis, (2.0 * y + 0.1)[None].astype(np.float32))], CalibrationSpec("gain"))
    np.testing.assert_allclose(cal.coefficients[0], [0.4252, 1.4304, 0.1444, 0.1], atol=1e-5)
    assert Calibration.from_dict(cal.to_dict()) == cal


def test_fit_is_bit_identical_for_tile_sizes_and_task_groupings():
    scan = affine_scan(200, 180, seed=5)
    spec = CalibrationSpec("affine")
    regions = sample_regions(tuple(scan.shape), 1.0)
    one, three = fit_scan(scan, spec, regions), fit_scan(scan, spec, regions, groups=3)
    assert one.coefficients == three.coefficients  # exact: the squares are added in order
    records = [
        tilex.run(
            scan, None, device="cpu", calibrate="affine", tile=tile, norm="pixel"
        ).sink.info.provenance["calibration"]
        for tile in (64, 100)
    ]
    assert records[0] == records[1]
    assert records[0]["coefficients"] == one.to_dict()["coefficients"]  # every square: the same fit


def test_calibrated_run_flags_far_less_on_an_affine_scene():
    scan = affine_scan()
    flagged = {
        mode: tilex.run(
            scan, None, device="cpu", calibrate=mode, norm="band", tile=64, stats_sample=1
        )
        .found()
        .flagged_fraction
        for mode in ("none", "affine")
    }
    # measured: about 0.78 without calibration, 0.09 with it
    assert flagged["affine"] < 0.25 < 0.5 < flagged["none"]
    assert flagged["affine"] < flagged["none"] / 4


def test_encode_bands_is_the_band_path_of_encode():
    enc = build_encoder(device="cpu")
    vis, bands = torch.rand(3, 40, 36), torch.rand(5, 40, 36)
    _, b = enc.encode(vis, bands)
    assert torch.equal(enc.encode_bands(bands), b)


def test_plan_options_and_parameters():
    plan = RunPlan.from_options(calibrate="gain", visible_encoding="linear")
    assert plan.calibration == CalibrationSpec("gain", "linear")
    params = plan.parameters(halo=6, device="cpu", stats_sample=0.05)
    assert params["calibrate"] == "gain" and params["visible_encoding"] == "linear"
    default = RunPlan().parameters(halo=6, device="cpu", stats_sample=0.05)
    assert (default["calibrate"], default["visible_encoding"]) == ("affine", "srgb")
    off = RunPlan.from_options(calibrate="none").parameters(halo=6, device="cpu", stats_sample=0)
    assert "calibrate" not in off and "visible_encoding" not in off  # as outputs before it
    with pytest.raises(PlanError, match="--calibrate must be one of none, gain, affine"):
        RunPlan.from_options(calibrate="colour")
    with pytest.raises(PlanError, match="--visible-encoding must be one of srgb, linear"):
        RunPlan.from_options(visible_encoding="rec2020")
    # calibration goes with every mode now: feathered, reused statistics, a cluster
    RunPlan.from_options(calibrate="affine", blend="feather", overlap=4)
    RunPlan.from_options(calibrate="affine", stats_from="a/out")
    RunPlan.from_options(calibrate="affine", workers=2)


def test_the_fit_reads_each_square_once_and_gives_the_same_bits_without_its_cache(monkeypatch):
    import tilex.calibration as calibration

    scan = affine_scan(200, 180, seed=7)
    regions = sample_regions(tuple(scan.shape), 1.0)
    reads = []
    read_region = scan.read_region
    monkeypatch.setattr(scan, "read_region", lambda *r: reads.append(r) or read_region(*r))
    cached = fit_scan(scan, CalibrationSpec("affine"), regions)
    assert sorted(reads) == sorted(regions)  # 5 passes, one read per square
    reads.clear()
    monkeypatch.setattr(calibration, "CACHE_BYTES", 0)
    uncached = fit_scan(scan, CalibrationSpec("affine"), regions)
    assert len(reads) == (1 + 2 * calibration.REFITS) * len(regions)
    assert uncached.coefficients == cached.coefficients and uncached.inliers == cached.inliers
