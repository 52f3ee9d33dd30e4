"""Synthetic scans: determinism, tile independence, file format, command line."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from tilex.cli.main import main

from tilex.errors import OutputExistsError
from tilex.synthetic import (
    MASK_FILE,
    MAX_BANDS,
    band_names,
    parse_size,
    render,
    synth,
    wavelengths,
)

SIZE = (200, 280)


@pytest.fixture(scope="module")
def scan_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "scan"
    synth(out, size=SIZE, bands=3, seed=5, tile=128)
    return out


# --------------------------------------------------------------------------
# parameters


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("768x1024", (768, 1024)),
        ("512", (512, 512)),
        (" 3 X 4 ", (3, 4)),
        ((5, 6), (5, 6)),
        (7, (7, 7)),
    ],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "x", "3x", "0x5", "-3x4", "1.5x2", "2x3x4", "abc"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_wavelengths_and_names():
    assert wavelengths(1) == [1000]
    assert wavelengths(2) == [365, 1700]
    for n in (1, 8, 100, MAX_BANDS):
        nms, names = wavelengths(n), band_names(n)
        assert len(set(nms)) == len(set(names)) == n
        assert nms == sorted(nms) and 365 <= nms[0] and nms[-1] <= 1700
    assert band_names(8)[0] == "uv365" and band_names(8)[-1] == "ir1700"
    for bad in (0, MAX_BANDS + 1, 2.5):
        with pytest.raises(ValueError, match="bands must be"):
            wavelengths(bad)


# --------------------------------------------------------------------------
# determinism and tile independence


def test_same_seed_same_pixels_other_seed_other_pixels():
    a, b, c = (render((96, 128), bands=2, seed=s) for s in (1, 1, 2))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.visible, c.visible)
    assert not np.array_equal(a.bands, c.bands)
    assert not np.array_equal(a.mask, c.mask)  # the figure moves with the seed


@pytest.mark.parametrize(
    "region",
    [
        (0, 64, 0, 64),
        (37, 38, 5, 600),
        (100, 333, 417, 700),
        (512, 600, 640, 700),
        (0, 600, 699, 700),
    ],
)
def test_a_region_alone_equals_the_whole_image(region):
    size, bands, seed = (600, 700), 3, 11
    whole = render(size, bands, seed)
    part = render(size, bands, seed, region=region)
    y0, y1, x0, x1 = region
    np.testing.assert_array_equal(part.visible, whole.visible[y0:y1, x0:x1])
    np.testing.assert_array_equal(part.bands, whole.bands[:, y0:y1, x0:x1])
    np.testing.assert_array_equal(part.mask, whole.mask[y0:y1, x0:x1])


def test_render_content_is_plausible():
    scan = render((256, 256), bands=8, seed=0)
    assert scan.visible.dtype == np.uint8 and scan.bands.dtype == np.uint16
    assert set(np.unique(scan.mask)) == {0, 1}
    assert 0.03 < scan.mask.mean() < 0.2
    gray = scan.visible.astype(np.float64).mean(axis=2) / 255
    assert 0.45 < np.percentile(gray, 5) and np.percentile(gray, 95) < 0.95  # mid-to-light
    # infrared sees the carbon drawing, ultraviolet barely: contrast grows with wavelength
    bands = scan.bands.astype(np.float64) / 65535
    m = scan.mask.astype(bool)
    contrast = [b[~m].mean() - b[m].mean() for b in bands]
    assert contrast[0] < 0.05 < 0.3 < contrast[-1]
    assert all(np.diff(contrast[3:]) > -0.02)


def test_render_refuses_a_region_outside():
    with pytest.raises(ValueError, match="not inside"):
        render((64, 64), region=(0, 65, 0, 10))


# --------------------------------------------------------------------------
# files


def test_files_are_tiled_bigtiffs_matching_render(scan_dir):
    manifest = json.loads((scan_dir / "scan.json").read_text())
    assert set(manifest) == {"visible", "bands", "pixel_size_um"}
    assert [b["name"] for b in manifest["bands"]] == band_names(3)
    assert [b["wavelength_nm"] for b in manifest["bands"]] == wavelengths(3)
    assert all(set(b) == {"name", "file", "wavelength_nm"} for b in manifest["bands"])
    expected = render(SIZE, bands=3, seed=5)
    files = [
        (manifest["visible"], np.uint8, expected.visible, 2),
        *(
            (b["file"], np.uint16, plane, 1)
            for b, plane in zip(manifest["bands"], expected.bands, strict=True)
        ),
        (MASK_FILE, np.uint8, expected.mask, 1),
    ]
    for name, dtype, pixels, photometric in files:
        with tifffile.TiffFile(scan_dir / name) as tif:
            page = tif.pages[0]
            assert (
                tif.is_bigtiff and page.is_tiled and (page.tilelength, page.tilewidth) == (128, 128)
            )
            assert page.dtype == dtype and page.photometric == photometric
            assert page.compression == tifffile.COMPRESSION.ZSTD
            np.testing.assert_array_equal(page.asarray(), pixels)
    params = json.loads((scan_dir / "synth.json").read_text())
    assert (params["seed"], params["bands"], params["size"], params["mask"]) == (
        5,
        3,
        list(SIZE),
        MASK_FILE,
    )


def test_same_seed_writes_the_same_bytes(tmp_path, scan_dir):
    again = synth(tmp_path / "again", size=SIZE, bands=3, seed=5, tile=128).parent
    other = synth(tmp_path / "other", size=SIZE, bands=3, seed=6, tile=128).parent
    for path in scan_dir.iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name
    assert (other / "visible.tif").read_bytes() != (scan_dir / "visible.tif").read_bytes()


def test_refuses_a_non_empty_folder_without_overwrite(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="busy"):
        synth(out, size=(32, 32), bands=1)
    synth(out, size=(32, 32), bands=1, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me" and (out / "scan.json").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile": 100}, "multiple of 16"),
        ({"compression": "lzw"}, "compression"),
        ({"bands": 0}, "bands"),
        ({"seed": -1}, "seed"),
        ({"size": "0x4"}, "size"),
    ],
)
def test_synth_validates(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        synth(tmp_path / "x", **{"size": (32, 32), **kwargs})


def test_streams_with_bounded_memory(tmp_path):
    """1024x4096 with 8 bands is 84 MB of output pixels; tiles keep the peak far below."""
    tracemalloc.start()
    try:
        synth(tmp_path / "big", size=(1024, 4096), bands=8, tile=256, workers=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 30e6, f"peak {peak / 1e6:.1f} MB"


def test_progress_reports_every_pixel(tmp_path):
    seen = []
    synth(tmp_path / "p", size=(100, 300), bands=1, tile=64, progress=lambda *a: seen.append(a))
    assert seen[-1] == ("synth", 30000, 30000)
    assert [d for _, d, _ in seen] == sorted(d for _, d, _ in seen)


# --------------------------------------------------------------------------
# command line


def test_cli_writes_a_scan(tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        main, ["synth", str(out), "--size", "64x96", "--bands", "2", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {
        "scan.json",
        "synth.json",
        "visible.tif",
        "uv365.tif",
        "ir1700.tif",
        MASK_FILE,
    }
    assert "hidden_mask.tif" in result.output and "scan.json" in result.output
    np.testing.assert_array_equal(
        tifffile.imread(out / "ir1700.tif"), render((64, 96), 2, 3).bands[1]
    )


@pytest.mark.parametrize(
    "args",
    [["--size", "12x"], ["--size", "0"], ["--bands", "255"], ["--tile", "100"], ["--seed", "-2"]],
)
def test_cli_bad_options_exit_2(tmp_path, args):
    result = CliRunner().invoke(main, ["synth", str(tmp_path / "bad"), *args])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "bad").exists()


def test_cli_refuses_non_empty_folder(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    result = CliRunner().invoke(main, ["synth", str(tmp_path), "--size", "32"])
    assert result.exit_code == 2
    assert "--overwrite" in result.output
    result = CliRunner().invoke(main, ["synth", str(tmp_path), "--size", "32", "--overwrite"])
    assert result.exit_code == 0, result.output


def test_open_scan_reads_what_synth_wrote(scan_dir):
    scan_module = pytest.importorskip("tilex.scan")
    scan = scan_module.open_scan(scan_dir)
    assert tuple(scan.shape) == SIZE and list(scan.band_names) == band_names(3)
    visible, bands = scan.read_region(10, 90, 20, 150)
    expected = render(SIZE, bands=3, seed=5, region=(10, 90, 20, 150))
    np.testing.assert_allclose(visible, expected.visible.transpose(2, 0, 1) / 255.0, atol=1e-6)
    np.testing.assert_allclose(bands, expected.bands / 65535.0, atol=1e-6)


def test_a_failing_tile_is_raised_not_hung(tmp_path, monkeypatch):
    from tilex.synthetic import scene

    real = scene._Model.render

    def flaky(self, y0, y1, x0, x1):
        if (y0, x0) == (64, 128):
            raise RuntimeError("tile (64, 128) failed")
        return real(self, y0, y1, x0, x1)

    monkeypatch.setattr(scene._Model, "render", flaky)
    with pytest.raises(RuntimeError, match=r"tile \(64, 128\) failed"):
        synth(tmp_path / "f", size=(256, 256), bands=2, tile=64, workers=2)
