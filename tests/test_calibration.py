"""Whole-scan calibration (tilex/calibration/) and the calibrated comparison in a run."""

from __future__ import annotations

import json
import zlib

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


def _srgb_reference(x: np.ndarray) -> np.ndarray:
    """The EOTF in NumPy float64, rounded once: what the compiled decode must equal bit for bit."""
    x = np.asarray(x, np.float64)
    high = ((np.maximum(x, 0.04045) + 0.055) / 1.055) ** 2.4
    return np.where(x <= 0.04045, x / 12.92, high).astype(np.float32)


def test_srgb_decode_equals_its_formula_bit_for_bit_with_and_without_the_table():
    rng = np.random.default_rng(5)
    samples = [
        np.arange(256, dtype=np.float32) / np.float32(255),  # 8-bit pixels: the table
        np.arange(65536, dtype=np.float32) / np.float32(65535),  # 16-bit pixels: the table
        np.arange(4096, dtype=np.float32) / np.float32(4095),  # 12-bit: computed
        rng.random(200_000, dtype=np.float32),  # float32 reflectance: computed
        np.float32(
            [-0.0, 0.0, -0.25, 1.5, 1.0, 0.04045, np.nextafter(0.04045, 1, dtype=np.float32)]
        ),
    ]
    for x in samples:
        got, want = srgb_to_linear(x), _srgb_reference(x)
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    image = rng.integers(0, 256, (3, 40, 50)).astype(np.float32) / np.float32(255)
    assert np.array_equal(srgb_to_linear(image[:, ::2, 1:]), _srgb_reference(image[:, ::2, 1:]))


def numpy_prediction(coefficients, rgb, terms, table=None) -> list[np.ndarray]:
    """Each band's prediction summed in NumPy float32, term by term, in the model's order."""
    bands = []
    for i, (r, g, b, c, *rest) in enumerate(coefficients):
        want = np.float32(r) * rgb[0]
        want += np.float32(g) * rgb[1]
        want += np.float32(b) * rgb[2]
        want += np.float32(c)
        for q, term in zip(rest, terms, strict=True):
            want += np.float32(q) * term
        if table is not None:
            want += np.float32(table[i])[calibration.colour_cells(rgb)]
        bands.append(want)
    return bands


def test_predict_equals_the_numpy_sum_term_by_term():
    rng = np.random.default_rng(6)
    rgb_u8 = rng.integers(0, 256, (3, 30, 40)).astype(np.float32) / np.float32(255)
    coefficients = tuple(tuple(rng.normal(size=15).tolist()) for _ in range(3))
    table = tuple(tuple(rng.normal(size=calibration.TABLE_CELLS**3).tolist()) for _ in range(3))
    cal = Calibration("registered", True, coefficients, shape=(100, 120), table=table)
    places = tuple(np.mgrid[20:50, 70:110])
    rgb = srgb_to_linear(rgb_u8)
    terms = (
        *calibration.surface_terms(*places, (100, 120)),
        *calibration.gradient_terms(rgb),
    )
    got = cal.predict(rgb_u8, places)
    for i, want in enumerate(numpy_prediction(coefficients, rgb, terms, table)):
        assert np.array_equal(got[i].view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("mode", ["gain", "affine", "flat", "colour", "registered"])
@pytest.mark.parametrize("hw", [(1, 1), (1, 5), (2, 1), (2, 2), (7, 3)])
def test_every_model_predicts_its_numpy_terms_bit_for_bit_on_any_region_shape(mode, hw):
    """The compiled prediction builds each row's terms itself; on regions one or two pixels
    wide (one-sided gradients) and for every model it must give NumPy's sum's bits."""
    h, w = hw
    rng = np.random.default_rng(zlib.crc32(f"{mode} {h} {w}".encode()))
    visible = rng.random((3, h, w), dtype=np.float32) * np.float32(1.2)  # a few out of range
    k = {"gain": 4, "affine": 4, "flat": 9, "colour": 9, "registered": 15}[mode]
    coefficients = tuple(tuple(rng.normal(size=k).tolist()) for _ in range(2))
    spatial = mode in ("flat", "colour", "registered")
    table = None
    if mode in ("colour", "registered"):
        table = tuple(tuple(rng.normal(size=calibration.TABLE_CELLS**3).tolist()) for _ in range(2))
    shape = (40, 30) if spatial else None
    cal = Calibration(mode, False, coefficients, shape=shape, table=table)
    places = tuple(np.mgrid[11 : 11 + h, 5 : 5 + w]) if spatial else None
    rgb = visible
    terms: tuple = ()
    if spatial:
        terms = calibration.surface_terms(*places, shape)
    if mode == "registered":
        terms = (*terms, *calibration.gradient_terms(rgb))
    got = cal.predict(visible, places)
    for i, want in enumerate(numpy_prediction(coefficients, rgb, terms, table)):
        assert np.array_equal(got[i].view(np.uint32), want.view(np.uint32))


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
    monkeypatch.setattr(calibration.fitting, "REFITS", 0)  # where the fit reads it
    plain = np.array(fit(squares, spec).coefficients)
    err_robust = np.abs(robust - COEFS).max()
    err_plain = np.abs(plain - COEFS).max()
    assert err_robust < 0.01
    assert err_robust < err_plain / 5


def test_the_trimmed_fit_is_not_pulled_by_a_fifth_of_the_scan_hidden(monkeypatch):
    """Faint, one-signed hidden bars over 21 % of the scan: what the calibration's trim is for."""
    rng = np.random.default_rng(5)
    vis = rng.random((3, 96, 96), dtype=np.float32)
    lin = srgb_to_linear(vis)
    truth = np.stack([r * lin[0] + g * lin[1] + b * lin[2] + c for r, g, b, c in COEFS])
    hidden = np.zeros((96, 96), bool)
    for x0 in range(8, 96, 24):
        hidden[:, x0 : x0 + 5] = True
    y = truth + rng.normal(0, 0.01, truth.shape)
    y[:, hidden] -= 0.03  # three noise sigmas darker than the visible image says
    square = [(vis, y.astype(np.float32))]

    def pull() -> float:
        """How far the prediction moved towards the hidden content, where it lies."""
        predicted = fit(square, CalibrationSpec("flat")).predict(vis)
        return float(np.abs(predicted - truth)[:, hidden].mean())

    trimmed = pull()
    monkeypatch.setattr(calibration.fitting, "REFITS", 2)  # the fit before the trim
    monkeypatch.setattr(calibration.fitting, "CUTOFF", 3.0)
    loose = pull()
    assert trimmed < 0.002  # a fifteenth of the hidden signal
    assert loose > 3 * trimmed


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
    squares = [scan.read_region(*r) for r in regions]
    origins = [(y0, x0) for y0, _, x0, _ in regions]
    for threads in (1, 3):  # the threads computing each square's sums change no bit
        again = fit(squares, spec, origins=origins, shape=tuple(scan.shape), threads=threads)
        assert again == one
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
    assert (default["calibrate"], default["visible_encoding"]) == ("registered", "srgb")
    off = RunPlan.from_options(calibrate="none").parameters(halo=6, device="cpu", stats_sample=0)
    assert "calibrate" not in off and "visible_encoding" not in off  # as outputs before it
    with pytest.raises(
        PlanError, match="--calibrate must be one of none, gain, affine, flat, colour"
    ):
        RunPlan.from_options(calibrate="rainbow")
    with pytest.raises(PlanError, match="--visible-encoding must be one of srgb, linear"):
        RunPlan.from_options(visible_encoding="rec2020")
    # calibration goes with every mode now: feathered, reused statistics, a cluster
    RunPlan.from_options(calibrate="affine", blend="feather", overlap=4)
    RunPlan.from_options(calibrate="affine", stats_from="a/out")
    RunPlan.from_options(calibrate="affine", workers=2)


def test_the_fit_reads_each_square_once_and_gives_the_same_bits_without_its_cache(monkeypatch):
    import tilex.calibration.fitting as calibration

    scan = affine_scan(200, 180, seed=7)
    regions = sample_regions(tuple(scan.shape), 1.0)
    reads = []
    read_region = scan.read_region
    monkeypatch.setattr(scan, "read_region", lambda *r: reads.append(r) or read_region(*r))
    cached = fit_scan(scan, CalibrationSpec("affine"), regions)
    assert sorted(reads) == sorted(regions)  # 5 passes, one read per square
    reads.clear()
    monkeypatch.setattr(calibration, "CACHE_BYTES", 0)
    uncached = calibration.fit_squares(scan, CalibrationSpec("affine"), regions)
    assert len(reads) == (1 + 2 * calibration.REFITS) * len(regions)
    assert uncached.coefficients == cached.coefficients and uncached.inliers == cached.inliers


def test_a_large_sample_is_thinned_to_what_the_cache_holds_and_read_once(monkeypatch):
    import tilex.calibration.fitting as calibration

    scan, _, _ = pigment_scan()
    regions = sample_regions(tuple(scan.shape), 1.0)
    spec = CalibrationSpec("colour")
    per_square = 64 * 64 * (4 * 9 + 4 * scan.n_bands)
    monkeypatch.setattr(calibration, "CACHE_BYTES", per_square * len(regions) // 3)
    stride = calibration.fit_stride(regions, spec, scan.n_bands)
    assert stride >= 3  # about a third of the squares' features fit
    reads = []
    read_region = scan.read_region
    monkeypatch.setattr(scan, "read_region", lambda *r: reads.append(r) or read_region(*r))
    thinned = fit_scan(scan, spec, regions)
    assert reads == regions[::stride]  # each kept square read once, in order, for all 10 passes
    whole = calibration.fit_squares(scan, spec, regions[::stride])
    assert thinned == whole and thinned.table == whole.table


SURFACE = [
    (0.02, -0.01, -0.03, 0.0, -0.02),
    (0.0, 0.03, 0.0, 0.01, -0.04),
    (-0.02, 0.0, -0.01, 0.0, 0.0),
]


def flat_scan(h: int = 176, w: int = 150, seed: int = 4):
    """Affine bands under each band's own quadratic illumination surface: nothing hidden."""
    vis = patches(h, w, seed)
    lin = srgb_to_linear(vis)
    rows, cols = np.mgrid[0:h, 0:w]
    terms = calibration.surface_terms(rows, cols, (h, w))
    bands = []
    for i, ((r, g, b, c), q) in enumerate(zip(COEFS, SURFACE, strict=True)):
        plane = (
            r * lin[0]
            + g * lin[1]
            + b * lin[2]
            + c
            + sum(k * t for k, t in zip(q, terms, strict=True))
        )
        bands.append((f"b{i}", 500.0 + 100 * i, plane.astype(np.float32)))
    return open_scan(visible=vis, bands=bands)


def test_flat_model_recovers_each_band_surface_from_sampled_squares():
    scan = flat_scan()
    regions = sample_regions(tuple(scan.shape), 0.3)
    cal = fit_scan(scan, CalibrationSpec("flat"), regions)
    assert cal.shape == tuple(scan.shape) and cal.spatial
    want = np.array([(*c, *q) for c, q in zip(COEFS, SURFACE, strict=True)])
    np.testing.assert_allclose(np.array(cal.coefficients), want, atol=2e-4)
    # the affine model cannot explain the surface; the flat one leaves only rounding
    visible, bands = scan.read_region(0, scan.shape[0], 0, scan.shape[1])
    affine = fit_scan(scan, CalibrationSpec("affine"), regions)
    assert np.abs(bands - cal.predict(visible)).max() < 1e-4
    assert np.abs(bands - affine.predict(visible)).max() > 0.01
    assert Calibration.from_dict(cal.to_dict()) == cal


def test_flat_prediction_of_a_region_equals_the_whole_scan_prediction():
    scan = flat_scan(97, 131)
    cal = fit_scan(scan, CalibrationSpec("flat"), sample_regions(tuple(scan.shape), 1.0))
    visible, _ = scan.read_region(0, 97, 0, 131)
    whole = cal.predict(visible)
    y0, y1, x0, x1 = 13, 71, 40, 129
    rows, cols = np.mgrid[y0:y1, x0:x1]
    part = cal.predict(visible[:, y0:y1, x0:x1], (rows, cols))
    np.testing.assert_array_equal(part, whole[:, y0:y1, x0:x1])  # bit for bit
    with pytest.raises(ValueError, match="places in the scan"):
        cal.predict(visible[:, y0:y1, x0:x1])


def test_flat_runs_are_bit_identical_across_tilings_and_flag_little_on_a_lit_scene():
    scan = flat_scan()
    runs = {
        tile: tilex.run(scan, None, device="cpu", calibrate="flat", tile=tile, stats_sample=1)
        for tile in (48, 128)
    }
    a, b = (r.sink for r in runs.values())
    assert a.info.provenance["calibration"] == b.info.provenance["calibration"]
    np.testing.assert_array_equal(a.evidence, b.evidence)
    np.testing.assert_array_equal(a.winner, b.winner)
    assert runs[48].found().flagged_fraction < 0.02
    # the lighting the affine model leaves rises above its floor at a lower threshold
    # (0.3: 1.5 % flagged; the default 0.5 at 11 spreads flags none of it), the flat one's not
    shares = [
        tilex.run(scan, None, device="cpu", calibrate=mode, tile=48, stats_sample=1, threshold=0.3)
        .found()
        .flagged_fraction
        for mode in ("flat", "affine")
    ]
    assert shares[0] < 0.002 and shares[1] > 0.005


def pigment_scan(h: int = 160, w: int = 176, seed: int = 6, hidden: bool = False):
    """Flat-lit affine bands (with a little camera noise) where one visible colour is darker in
    band 1 than its colour says.

    With ``hidden``, a bar of band 1 darkens under part of that colour and of the rest:
    what differs from the other pixels of the same visible colour.
    """
    vis = patches(h, w, seed)
    yy, xx = np.mgrid[0:h, 0:w]
    odd = (yy - h // 4) ** 2 + (xx - 3 * w // 4) ** 2 < 22**2  # a pigment seen only here
    texture = np.random.default_rng(seed).random((3, h, w), dtype=np.float32)
    vis[:, odd] = np.array([0.85, 0.35, 0.2], np.float32)[:, None] + 0.03 * texture[:, odd]
    lin = srgb_to_linear(vis)
    planes = [r * lin[0] + g * lin[1] + b * lin[2] + c for r, g, b, c in COEFS]
    planes[1] = planes[1] - 0.2 * odd
    mask = np.zeros((h, w), bool)
    if hidden:
        mask[h // 2 - 4 : h // 2 + 4, :] = True
        planes[1] = planes[1] - 0.15 * mask
    noise = np.random.default_rng(seed + 1).normal(0.0, 0.005, (len(planes), h, w))
    bands = [
        (f"b{i}", 500.0 + 100 * i, (p + n).astype(np.float32))
        for i, (p, n) in enumerate(zip(planes, noise, strict=True))
    ]
    return open_scan(visible=vis, bands=bands), odd, mask


def test_colour_table_explains_a_pigment_and_keeps_what_differs_within_its_colour():
    scan, odd, _ = pigment_scan()
    assert 0.03 < odd.mean() < 0.1  # a whole region of the scan
    shares = {
        mode: tilex.run(scan, None, device="cpu", calibrate=mode, tile=64, stats_sample=1)
        .found()
        .flagged_fraction
        for mode in ("flat", "colour")
    }
    # measured: 6.5 % flagged by the flat model (all of the pigment), 0.13 % with the table
    assert shares["colour"] < 0.01 and shares["flat"] > odd.mean()
    scan, _, mask = pigment_scan(hidden=True)
    report = tilex.run(scan, None, device="cpu", calibrate="colour", tile=64, stats_sample=1)
    flagged = report.sink.winner > 0
    near = np.zeros_like(mask)  # the bar and the encoder's 6 px reach around it
    near[mask.any(axis=1).nonzero()[0].min() - 6 : mask.any(axis=1).nonzero()[0].max() + 7] = True
    assert flagged[mask].mean() > 0.9 and flagged[~near].mean() < 0.01


def test_colour_table_is_the_same_bits_for_any_grouping_and_round_trips():
    scan, _, _ = pigment_scan(hidden=True)
    regions = sample_regions(tuple(scan.shape), 0.5)
    spec = CalibrationSpec("colour")
    one, three = fit_scan(scan, spec, regions), fit_scan(scan, spec, regions, groups=3)
    assert one == three and one.table is not None
    squares = [scan.read_region(*r) for r in regions]
    origins = [(y0, x0) for y0, _, x0, _ in regions]
    for threads in (1, 3):  # the table's sums too are added in the squares' order
        again = fit(squares, spec, origins=origins, shape=tuple(scan.shape), threads=threads)
        assert again == one
    again = Calibration.from_dict(json.loads(json.dumps(one.to_dict())))
    assert again == one
    visible, _ = scan.read_region(0, scan.shape[0], 0, scan.shape[1])
    np.testing.assert_array_equal(again.predict(visible), one.predict(visible))
    runs = [
        tilex.run(scan, None, device="cpu", calibrate="colour", tile=tile, stats_sample=0.5).sink
        for tile in (48, 100)
    ]
    assert runs[0].info.provenance["calibration"] == runs[1].info.provenance["calibration"]
    np.testing.assert_array_equal(runs[0].evidence, runs[1].evidence)


def test_registered_model_explains_a_band_half_a_pixel_off():
    """A band shifted by half a pixel differs along every edge; its gradient terms explain it."""
    kernel = np.array([1, 4, 6, 4, 1], np.float32) / 16  # a lens's blur: edges a few px wide
    vis = patches(160, 176, 8)
    for axis in (1, 2, 1, 2):  # twice: sigma about 1.4 px
        vis = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, vis)
    vis = vis.astype(np.float32)
    lin = srgb_to_linear(vis)
    rng = np.random.default_rng(9)
    bands = []
    for i, (r, g, b, c) in enumerate(COEFS):
        plane = r * lin[0] + g * lin[1] + b * lin[2] + c
        if i == 1:  # band 1 registered half a pixel to the left
            plane[:, :-1] = 0.5 * (plane[:, :-1] + plane[:, 1:])
        noise = rng.normal(0.0, 0.003, plane.shape)
        bands.append((f"b{i}", 500.0 + 100 * i, (plane + noise).astype(np.float32)))
    scan = open_scan(visible=vis, bands=bands)
    shares = {
        mode: tilex.run(scan, None, device="cpu", calibrate=mode, tile=64, stats_sample=1)
        .found()
        .flagged_fraction
        for mode in ("colour", "registered")
    }
    # measured: 9.2 % flagged by the colour model, 1.6 % by the registered one
    assert shares["registered"] < 0.02 and shares["registered"] < shares["colour"] / 4


def hidden_block_scan(shift: float = 0.012, seed: int = 8):
    """Lit affine bands over 25 squares of 64 px; band 0 a little darker over a block of 4
    of them (16 % of the scan): large, one-signed hidden content, each pixel within the noise's
    reach (sigma 0.006), that a lighting surface could bend towards."""
    h = w = 320
    vis = patches(h, w, seed)
    lin = srgb_to_linear(vis)
    terms = calibration.surface_terms(*np.mgrid[0:h, 0:w], (h, w))
    rng = np.random.default_rng(seed)
    truth = np.stack(
        [
            r * lin[0]
            + g * lin[1]
            + b * lin[2]
            + c
            + sum(k * t for k, t in zip(q, terms, strict=True))
            for (r, g, b, c), q in zip(COEFS, SURFACE, strict=True)
        ]
    )
    hidden = np.zeros((h, w), bool)
    hidden[64:192, 192:320] = True
    bands = truth + rng.normal(0, 0.006, truth.shape)
    bands[0, hidden] -= shift
    scan = open_scan(
        visible=vis,
        bands=[(f"b{i}", 500.0 + 100 * i, p.astype(np.float32)) for i, p in enumerate(bands)],
    )
    return scan, truth, hidden


def test_the_square_cut_keeps_a_hidden_block_from_bending_the_lighting_surface(monkeypatch):
    scan, truth, hidden = hidden_block_scan()
    regions = sample_regions(tuple(scan.shape), 1.0)
    assert len(regions) == 25 >= calibration.SQUARE_MIN
    visible = scan.read_region(0, 320, 0, 320)[0]

    def pull(band: int) -> float:
        """How far band ``band``'s prediction moved from the truth where the content is hidden."""
        predicted = fit_scan(scan, CalibrationSpec("flat"), regions).predict(visible)
        return float(np.abs(predicted[band] - truth[band])[hidden].mean())

    cut = pull(0)
    monkeypatch.setattr(calibration.fitting, "SQUARE_MIN", 10**9)  # the pixel cut alone
    loose = pull(0)
    assert cut < 0.001  # a twelfth of the hidden signal (0.0005 measured)
    assert loose > 5 * cut  # the pixel cut alone: 0.0054, nearly half of it


def test_the_square_cut_is_per_band_and_the_same_bits_for_any_grouping():
    scan, truth, hidden = hidden_block_scan()
    regions = sample_regions(tuple(scan.shape), 1.0)
    spec = CalibrationSpec("registered")
    one = fit_scan(scan, spec, regions)
    # a band with nothing hidden still finds its own colour terms and lighting surface
    np.testing.assert_allclose(
        np.array(one.coefficients)[1, :9], (*COEFS[1], *SURFACE[1]), atol=2e-3
    )
    for groups in (2, 5):
        assert fit_scan(scan, spec, regions, groups=groups) == one
    squares = [scan.read_region(*r) for r in regions]
    origins = [(y0, x0) for y0, _, x0, _ in regions]
    again = fit(squares, spec, origins=origins, shape=(320, 320), threads=3)
    assert again == one and again.table == one.table
    records = [
        tilex.run(
            scan, None, device="cpu", calibrate="registered", tile=tile, norm="pixel"
        ).sink.info.provenance["calibration"]
        for tile in (96, 160)
    ]
    assert records[0] == records[1] == one.to_dict()
    assert records[0]["square_cut"] == calibration.SQUARE_CUT


def test_fit_image_fits_the_squares_a_run_samples():
    scan, _, _ = hidden_block_scan()
    visible, bands = scan.read_region(0, 320, 0, 320)
    run = tilex.run(scan, None, device="cpu", tile=160, norm="pixel")
    assert (
        calibration.fit_image(visible, bands, CalibrationSpec()).to_dict()
        == (run.sink.info.provenance["calibration"])
    )


def test_squares_that_agree_to_rounding_are_never_cut():
    rng = np.random.default_rng(2)
    medians = {i: rng.normal(0, 1e-9, 3) for i in range(30)}  # an exact fit's rounding
    medians[4] = np.array([0.02, 0.0, 0.0])  # a real outlier in band 0
    kept = calibration.fitting._squares_kept(medians, 30)
    assert kept[:, 1:].all() and kept[:, 0].sum() == 29 and not kept[4, 0]
    assert calibration.fitting._squares_kept(dict(list(medians.items())[:15]), 15) is None
