"""The default fusion: calibrated comparisons scored over each band's noise floor.

Its outputs are the same bytes however they are made (tile size, a killed and
resumed run, a cluster, reused statistics), and the score has an absolute
meaning: a band equal to what it is compared with flags nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tilex
from tilex import kernels
from tilex.calibration import srgb_to_linear
from tilex.colour import luminance
from tilex.errors import PlanError
from tilex.scan import open_scan
from tilex.stats import ABS_FLOOR, NOISE_K, noise_floor

SHAPE = (320, 288)
LAYOUT = {"tile": 128, "unit": 128, "chunk": 64}


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    return tilex.synth(tmp_path_factory.mktemp("default") / "scan", size=SHAPE, bands=3, seed=11)


@pytest.fixture(scope="module")
def reference(scan, tmp_path_factory, chunk_hashes) -> tuple[Path, dict[str, str]]:
    out = tmp_path_factory.mktemp("reference") / "OUT"
    tilex.run(scan, out, device="cpu", **LAYOUT)
    return out, chunk_hashes(out)


def _manifest(out: Path) -> dict:
    return json.loads((out / "tilex.json").read_text())


def test_the_default_is_calibrated_and_scored_over_the_noise_floor(reference):
    out, _ = reference
    manifest = _manifest(out)
    assert manifest["parameters"]["calibrate"] == "registered"
    assert manifest["parameters"]["halo"] == 7  # the encoder's 6 px and the gradients' 1
    assert manifest["parameters"]["norm"] == "noise"
    stats = manifest["stats"]
    for median, spread, floor in zip(stats["median"], stats["spread"], stats["floor"], strict=True):
        assert floor == pytest.approx(max(median + NOISE_K * spread, ABS_FLOOR))
    assert len(manifest["calibration"]["coefficients"]) == 3


def test_another_tile_size_gives_the_same_statistics_and_model(scan, reference, tmp_path):
    out, _ = reference
    other = tmp_path / "OUT"
    tilex.run(scan, other, device="cpu", tile=96, unit=128, chunk=64)
    a, b = _manifest(out), _manifest(other)
    assert a["stats"] == b["stats"]  # exact: integer histograms
    assert a["calibration"] == b["calibration"]  # exact: float64 sums added in a fixed order


def test_a_killed_and_resumed_calibrated_run_keeps_its_bytes(
    scan, reference, tmp_path, chunk_hashes, killed_then_resumed
):
    out = tmp_path / "OUT"
    killed_then_resumed(
        scan, out, ["--device", "cpu", "--tile", "128", "--unit", "128", "--chunk", "64"]
    )
    assert chunk_hashes(out) == reference[1]


def test_resuming_reads_the_saved_model_instead_of_fitting_again(scan, reference, tmp_path):
    import shutil

    import tilex.calibration

    out = tmp_path / "OUT"
    shutil.copytree(reference[0], out)
    saved = _manifest(out)["calibration"]

    def refuse(*args, **kwargs):
        raise AssertionError("a resumed run fitted its calibration again")

    original = tilex.calibration.fit_scan
    tilex.calibration.fit_scan = refuse
    try:
        report = tilex.run(scan, out, device="cpu", resume=True, **LAYOUT)
    finally:
        tilex.calibration.fit_scan = original
    assert report.already_complete and _manifest(out)["calibration"] == saved


def test_a_two_worker_calibrated_run_keeps_its_bytes(scan, reference, tmp_path, chunk_hashes):
    pytest.importorskip("distributed")
    out = tmp_path / "OUT"
    tilex.run(scan, out, device="cpu", workers=2, **LAYOUT)
    assert chunk_hashes(out) == reference[1]
    assert _manifest(out)["calibration"] == _manifest(reference[0])["calibration"]


def test_stats_from_reuses_the_statistics_and_the_calibration(
    scan, reference, tmp_path, chunk_hashes
):
    out = tmp_path / "OUT"
    tilex.run(scan, out, device="cpu", stats_from=reference[0], **LAYOUT)
    assert chunk_hashes(out) == reference[1]
    assert _manifest(out)["calibration"] == _manifest(reference[0])["calibration"]
    with pytest.raises(PlanError, match="was measured with --calibrate registered"):
        tilex.run(scan, tmp_path / "B", device="cpu", stats_from=reference[0], calibrate="none")


def test_a_feathered_calibrated_run_is_close_to_the_exact_one(scan, reference, tmp_path):
    out = tmp_path / "OUT"
    tilex.run(scan, out, device="cpu", blend="feather", overlap=16, tile=128)
    exact = np.asarray(tilex.open_output(reference[0])["winner"].levels[0][...])
    feathered = np.asarray(tilex.open_output(out)["winner"].levels[0][...])
    assert (exact == feathered).mean() > 0.99


def _equal_band_scan(seed: int = 0):
    rng = np.random.default_rng(seed)
    visible = rng.random((3, 96, 80), dtype=np.float32)
    gray = luminance(visible)
    bands = [("same", 600.0, gray.copy()), ("again", 700.0, gray.copy())]
    return open_scan(visible=visible, bands=bands)


def test_a_band_equal_to_the_visible_image_flags_nothing():
    scan = _equal_band_scan()
    report = tilex.run(scan, None, device="cpu", calibrate="none", tile=48, stats_sample=1)
    assert report.found().flagged_fraction == 0.0
    # ArtExtract's stretch has no floor: the same band flags pixels
    stretched = tilex.run(
        scan, None, device="cpu", calibrate="none", norm="band", tile=48, stats_sample=1
    )
    assert stretched.found().flagged_fraction > 0.0 or stretched.stats.hi == stretched.stats.lo


def test_bands_the_visible_image_explains_flag_nothing_once_calibrated():
    rng = np.random.default_rng(3)
    visible = rng.random((3, 160, 144), dtype=np.float32)
    lin = srgb_to_linear(visible)
    bands = [  # every band an exact affine map of linear RGB
        (f"b{i}", 500.0 + 100 * i, (r * lin[0] + g * lin[1] + b * lin[2] + c).astype(np.float32))
        for i, (r, g, b, c) in enumerate([(0.2, 0.5, 0.1, 0.05), (0.6, 0.1, 0.2, 0.0)])
    ]
    scan = open_scan(visible=visible, bands=bands)
    report = tilex.run(scan, None, device="cpu", tile=64, stats_sample=1)
    assert report.found().flagged_fraction < 0.001


def test_noise_floor_of_gaussian_noise_flags_what_its_constant_promises():
    rng = np.random.default_rng(0)
    d = np.abs(rng.standard_normal((1, 1, 1, 400_000)).astype(np.float32))
    h = kernels.histogram_reference(np.zeros((1, 1, 400_000), np.float32), -d)
    median, spread, floor = noise_floor(h)
    assert median[0] == pytest.approx(0.6745, rel=0.01)
    assert spread[0] == pytest.approx(0.591, rel=0.02)
    # 11 robust spreads: about 1e-12 of half-normal noise (6 spreads flag ~10 of these pixels)
    assert (d > floor[0]).mean() < 1e-5


def test_the_output_keeps_the_visible_image_in_colour_for_people(scan, reference):
    from PIL import Image

    from tilex.colour import display_bytes
    from tilex.preview import write_preview

    out, _ = reference
    visible, _ = open_scan(scan).read_region(0, SHAPE[0], 0, SHAPE[1])
    stored = tilex.open_output(out)["visible"]
    np.testing.assert_array_equal(np.asarray(stored.levels[0][...]), display_bytes(visible))
    assert [s[-2:] for s in stored.shapes][:2] == [SHAPE, (SHAPE[0] // 2, SHAPE[1] // 2)]
    # the preview's middle panel is that colour image, not a grey
    png = np.asarray(Image.open(write_preview(out, out.parent / "p.png")).convert("RGB"))
    panel = stored.levels[stored.level_for(1024)][...]
    h, w = panel.shape[1:]
    gap = max(8, max(12, min(w, 2048) // 40) // 2)
    title = 2 * max(12, min(w, 2048) // 40)
    middle = png[title : title + h, 2 * gap + w : 2 * gap + 2 * w]
    np.testing.assert_array_equal(middle, np.moveaxis(np.asarray(panel), 0, -1))
    assert np.abs(middle[..., 0].astype(int) - middle[..., 2]).max() > 30  # colour, not grey
