"""tilex export (pyramidal OME-TIFF), tilex preview (three panels) and the validate/export/preview
commands, on a small output written through OmeZarrSink (and on conftest's small real run for
the threshold and pixel size); libvips reads the OME-TIFFs when it is installed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from tilex.colour import display_bytes
from tilex.errors import OutputError, OutputExistsError
from tilex.export import export_ome_tiff
from tilex.omezarr import OmeZarrSink, open_output
from tilex.preview import render_preview, visible_from_overlay, write_preview
from tilex.render import Pictures
from tilex.sink import RunInfo, TileResult

SHAPE = (1500, 1100)
BANDS = ("uv", "ir")
RGB = ("overlay", "visible")  # the uint8 RGB images, exported as interleaved RGB


def _overlay(gray: np.ndarray, score: np.ndarray) -> np.ndarray:
    from tilex.kernels.reference import overlay_reference

    return overlay_reference(gray, score)


@pytest.fixture(scope="module")
def result():
    """A structured result: a hidden disc won by band 2, a stripe by band 1, on a visible image
    in colour (red across, green down, blue in waves)."""
    from tilex.colour import luminance

    h, w = SHAPE
    yy, xx = np.mgrid[0:h, 0:w]
    visible = np.stack(
        [0.2 + 0.6 * xx / w, 0.2 + 0.6 * yy / h, 0.5 + 0.3 * np.sin(xx / 40.0)]
    ).astype(np.float32)
    gray = luminance(visible)
    score = np.zeros(SHAPE, np.float32)
    winner = np.zeros(SHAPE, np.uint8)
    disc = (yy - 700) ** 2 + (xx - 500) ** 2 < 300**2
    stripe = (yy > 100) & (yy < 250)
    winner[stripe], score[stripe] = 1, 0.7
    winner[disc], score[disc] = 2, 0.9
    collage = np.stack([score * (1 + np.sin(xx / 50.0)), score]).astype(np.float32)
    return {
        "visible": visible,
        "gray": gray,
        "winner": winner,
        "score": score,
        "collage": collage,
        "overlay": _overlay(gray, score),
    }


@pytest.fixture(scope="module", params=["0.5", "0.4"])
def out(request, result, tmp_path_factory):
    path = tmp_path_factory.mktemp(f"out{request.param}") / "OUT"
    sink = OmeZarrSink(path, version=request.param, unit=1024, chunk=256)
    sink.open(
        RunInfo(
            shape=SHAPE,
            band_names=BANDS,
            wavelengths=(365.0, 1050.0),
            channels=2,
            keep_visible=True,
        )
    )
    # one tile for the whole image: the sink splits it across its units
    sink.write(
        TileResult(
            (0, SHAPE[0], 0, SHAPE[1]),
            result["winner"],
            result["score"],
            result["collage"],
            result["overlay"],
            visible=display_bytes(result["visible"]),
        )
    )
    sink.close()
    return path


@pytest.mark.parametrize("image", ["overlay", "visible", "collage", "score"])
def test_export_every_level_matches_the_zarr_levels(out, tmp_path, image):
    import tifffile

    dest = export_ome_tiff(out, tmp_path / f"{image}.ome.tif", image=image)
    zarr_levels = open_output(out)[image].levels
    with tifffile.TiffFile(dest) as tif:
        assert tif.is_ome
        series = tif.series[0]
        assert len(series.levels) == len(zarr_levels) > 1
        for level, array in zip(series.levels, zarr_levels, strict=True):
            assert level.keyframe.tilewidth == level.keyframe.tilelength == 512
            want = np.asarray(array[...])
            if image in RGB:  # interleaved RGB: y, x, sample
                want = np.moveaxis(want, 0, -1)
            np.testing.assert_array_equal(level.asarray().reshape(want.shape), want)
        if image in RGB:
            assert series.keyframe.photometric == tifffile.PHOTOMETRIC.RGB
            assert series.keyframe.planarconfig == tifffile.PLANARCONFIG.CONTIG
            assert series.axes == "YXS"


def test_export_refuses_to_overwrite_and_unknown_images(out, tmp_path):
    dest = tmp_path / "x.ome.tif"
    dest.write_bytes(b"")
    with pytest.raises(OutputExistsError, match="exists"):
        export_ome_tiff(out, dest)
    with pytest.raises(OutputError, match="cannot export image 'winner'"):
        export_ome_tiff(out, tmp_path / "y.ome.tif", image="winner")
    with pytest.raises(OutputError, match="no image 'dissimilarity'"):
        export_ome_tiff(out, tmp_path / "y.ome.tif", image="dissimilarity")
    old = OmeZarrSink(tmp_path / "old", unit=256, chunk=128)  # before tilex kept the colour image
    old.open(RunInfo(shape=(64, 64), band_names=("ir",), wavelengths=(None,), channels=1))
    zeros = np.zeros((64, 64), np.float32)
    gray = np.full((3, 64, 64), 128, np.uint8)
    old.write(TileResult((0, 64, 0, 64), zeros.astype(np.uint8), zeros, zeros[None], gray))
    old.close()
    with pytest.raises(OutputError, match="has no colour visible image .* export the overlay"):
        export_ome_tiff(tmp_path / "old", tmp_path / "y.ome.tif", image="visible")


def test_visible_is_recovered_from_the_overlay(result):
    gray = visible_from_overlay(result["overlay"], result["score"])
    want = np.floor(result["gray"] * 255 + 0.5)
    assert np.abs(gray.astype(int) - want).max() <= 2  # uint8 rounding, amplified by 1/(1-a)


def test_preview_has_three_panels_and_a_legend(out, tmp_path):
    from PIL import Image

    dest = write_preview(out, tmp_path / "p.png", max_side=800)
    image = np.asarray(Image.open(dest).convert("RGB"))
    level = open_output(out)["overlay"].level_for(800)
    h, w = open_output(out)["overlay"].shapes[level][-2:]
    assert max(h, w) <= 800
    assert image.shape[1] > 3 * w and image.shape[0] > h
    # the disc (band 2, orange) shows in the collage panel, blue in the overlay panel
    rgb = np.asarray(render_preview(out, max_side=800))
    top = (rgb.shape[0] - h) // 2
    assert (np.abs(rgb.astype(int) - (255, 127, 14)).sum(axis=-1) < 120).sum() > 100
    assert ((rgb[..., 2].astype(int) - rgb[..., 0]) > 100).sum() > 100
    assert top > 0


def test_default_preview_is_small(out, tmp_path):
    from PIL import Image

    from tilex.preview import MAX_SIDE

    # a 1500x1100 output: three panels from its 750x550 level, not its full-size one
    with Image.open(write_preview(out, tmp_path / "p.png")) as image:
        width, height = image.size
    assert MAX_SIDE <= 1024
    assert 3 * 550 < width < 3 * 550 + 100 and 750 < height < 750 + 200


def test_preview_uses_a_small_level():
    from tilex.omezarr import OutputImage

    shapes = [
        (3, 40000, 30000),
        (3, 20000, 15000),
        (3, 10000, 7500),
        (3, 5000, 3750),
        (3, 2500, 1875),
        (3, 1250, 938),
    ]

    class _A:
        def __init__(self, shape):
            self.shape = shape

    img = OutputImage("overlay", None, tuple(_A(s) for s in shapes), {})  # type: ignore[arg-type]
    assert img.level_for(2048) == 5
    assert img.level_for(2500) == 4
    assert img.level_for(10) == 5  # the smallest when none is small enough


def test_cli_validate_export_preview(out, tmp_path):
    from tilex.cli.main import main

    runner = CliRunner()
    res = runner.invoke(main, ["validate", str(out)])
    assert res.exit_code == 0, res.output
    assert "ome-zarr-models:" in res.output and "valid" in res.output
    for image in ("score", "visible"):
        dest = tmp_path / f"{image}.tif"
        res = runner.invoke(main, ["export", str(out), "--image", image, "-o", str(dest)])
        assert res.exit_code == 0, res.output
        assert dest.is_file()
    res = runner.invoke(main, ["preview", str(out), "-o", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.png").is_file()


def test_cli_validate_fails_with_one_line(out, tmp_path):
    import shutil

    from tilex.cli.main import main

    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    manifest = json.loads((broken / "tilex.json").read_text())
    manifest["output"]["chunk"] = 128  # the arrays disagree with the promised layout
    (broken / "tilex.json").write_text(json.dumps(manifest))
    res = CliRunner().invoke(main, ["validate", str(broken)])
    assert res.exit_code == 2
    assert "tilex-layout: FAILED" in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("tilex: error:")]
    assert len(errors) == 1 and "failed validation by tilex-layout" in errors[0]


def test_cli_refuses_an_incomplete_output(tmp_path):
    from tilex.cli.main import main

    sink = OmeZarrSink(tmp_path / "OUT", unit=1024, chunk=256)
    sink.open(RunInfo(shape=(100, 100), band_names=("a",), wavelengths=(None,), channels=1))
    sink.abort()
    for command in (["validate"], ["preview"], ["export"]):
        res = CliRunner().invoke(main, [*command, str(tmp_path / "OUT")])
        assert res.exit_code == 2
        assert "incomplete" in res.output


def _vips(*command: str) -> str:
    import subprocess

    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(
    shutil.which("vips") is None, reason="no libvips (Debian: apt-get install libvips-tools)"
)
@pytest.mark.parametrize(
    ("image", "compression"),
    [
        ("overlay", "zlib"),
        ("overlay", "jpeg"),
        ("visible", "zlib"),
        ("visible", "jpeg"),
        ("score", "zlib"),
        ("collage", "zstd"),
    ],
)
def test_libvips_crops_every_level_and_agrees_with_tifffile_and_the_ome_xml(
    out, tmp_path, image, compression
):
    """libvips (an independent reader) decodes a region of every level: the interleaved RGB
    overlay and visible image in deflate or JPEG tiles, float images one plane per page."""
    from xml.etree import ElementTree

    import tifffile

    dest = export_ome_tiff(out, tmp_path / "x.ome.tif", image=image, compression=compression)
    levels = open_output(out)[image].levels
    c, h, w = levels[0].shape
    rgb = image in RGB
    with tifffile.TiffFile(dest) as tif:
        series = tif.series[0]
        pixels = ElementTree.fromstring(tif.ome_metadata).find(".//{*}Pixels")
        decoded = [level.asarray() for level in series.levels]
    if not rgb:  # tifffile drops a single channel's axis
        decoded = [a.reshape(-1, *a.shape[-2:]) for a in decoded]
    shapes = [a.shape for a in decoded]
    assert (pixels.get("SizeX"), pixels.get("SizeY"), pixels.get("SizeC")) == tuple(
        str(n) for n in (w, h, c)
    )
    assert pixels.get("Interleaved", "false") == ("true" if rgb else "false")
    assert len(shapes) == len(levels) > 1
    for k, level in enumerate(levels):
        source = f"{dest}[subifd={k - 1}]"  # -1: the main page (level 0)
        lc, lh, lw = level.shape
        header = [int(_vips("vipsheader", "-f", f, source)) for f in ("width", "height", "bands")]
        assert header == [lw, lh, 3 if rgb else 1]
        assert int(_vips("vipsheader", "-f", "n-pages", source)) == (1 if rgb else lc)
        assert shapes[k] == ((lh, lw, 3) if rgb else (lc, lh, lw))
        x, y = lw // 3, lh // 4
        cw, ch = min(300, lw - x), min(200, lh - y)
        crop = tmp_path / f"crop{k}.tif"
        _vips("vips", "crop", source, str(crop), str(x), str(y), str(cw), str(ch))
        got = tifffile.imread(crop)
        want = np.asarray(level[..., y : y + ch, x : x + cw])
        want = np.moveaxis(want, 0, -1) if rgb else want[0]
        mine = decoded[k][y : y + ch, x : x + cw] if rgb else decoded[k][0, y : y + ch, x : x + cw]
        if compression == "jpeg":  # lossy: libvips and tifffile decode the same JPEG tiles
            assert np.abs(got.astype(int) - want).mean() < 3
            assert np.abs(got.astype(int) - mine).max() <= 2
        else:
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(mine, want)


@pytest.mark.skipif(shutil.which("vips") is None, reason="no libvips")
def test_ome_tiff_pixel_size_agrees_in_every_reader(small_run, tmp_path):
    from xml.etree import ElementTree

    import tifffile

    um = open_output(small_run).manifest["output"]["pixel_size_um"]
    dest = export_ome_tiff(small_run, tmp_path / "o.ome.tif")
    with tifffile.TiffFile(dest) as tif:
        pixels = ElementTree.fromstring(tif.ome_metadata).find(".//{*}Pixels")
        x_resolution = tif.pages[0].tags["XResolution"].value
    assert float(pixels.get("PhysicalSizeX")) == pytest.approx(um)
    assert x_resolution[1] / x_resolution[0] * 1e4 == pytest.approx(um, rel=1e-6)  # per cm
    per_mm = float(_vips("vipsheader", "-f", "xres", str(dest)))
    assert 1000 / per_mm == pytest.approx(um, rel=1e-5)


def test_export_at_another_threshold_needs_no_new_run(small_run, tmp_path):
    """``--threshold T`` draws the score, overlay and collage from the stored evidence: the
    score a run at T stores (evidence where above T), on every level."""
    import tifffile
    from tilex.kernels.reference import overlay_reference

    output = open_output(small_run)

    def levels(image: str, **options) -> list[np.ndarray]:
        dest = export_ome_tiff(
            small_run, tmp_path / f"{image}.tif", image=image, overwrite=True, **options
        )
        with tifffile.TiffFile(dest) as tif:
            found = [level.asarray() for level in tif.series[0].levels]
        return found if image == "overlay" else [a.reshape(-1, *a.shape[-2:]) for a in found]

    # at the run's threshold, the stored arrays
    for image in ("score", "overlay", "collage"):
        for got, stored in zip(levels(image, threshold=0.5), output[image].levels, strict=True):
            want = np.asarray(stored[...])
            np.testing.assert_array_equal(
                got, np.moveaxis(want, 0, -1) if image == "overlay" else want
            )
    t = np.float32(0.7)
    scores = levels("score", threshold=0.7)
    for k, got in enumerate(scores):
        evidence = np.asarray(output["evidence"].levels[k][0])
        np.testing.assert_array_equal(got[0], np.where(evidence > t, evidence, 0))
    evidence = np.asarray(output["evidence"].levels[0][0])
    flagged = evidence > t
    assert 0 < flagged.sum() < (evidence > 0.5).sum()
    overlay = levels("overlay", threshold=0.7)[0].astype(int)
    stored = np.moveaxis(np.asarray(output["overlay"].levels[0][...]), 0, -1).astype(int)
    assert np.abs(overlay - stored)[flagged].max() <= 2  # same score: the stored overlay
    grey = overlay[~flagged]
    assert (grey.max(axis=-1) == grey.min(axis=-1)).all()  # no longer tinted
    gray = Pictures(output).grey(0, (0, 480, 0, 640)).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(
        np.moveaxis(overlay_reference(gray, scores[0][0]), 0, -1), overlay
    )
    collage = levels("collage", threshold=0.7)[0]
    stored_collage = np.asarray(output["collage"].levels[0][...])
    np.testing.assert_array_equal(collage[:, flagged], stored_collage[:, flagged])
    assert (collage[:, ~flagged] == 0).all()
    # below the run's threshold: score and overlay yes, the collage (which needs the winner) no
    low = levels("score", threshold=0.3)[0][0]
    np.testing.assert_array_equal(low, np.where(evidence > np.float32(0.3), evidence, 0))
    with pytest.raises(OutputError, match="the collage needs the winning band"):
        export_ome_tiff(small_run, tmp_path / "c.tif", image="collage", threshold=0.3)
    with pytest.raises(OutputError, match="JPEG compression needs a uint8 RGB image"):
        export_ome_tiff(small_run, tmp_path / "s.tif", image="score", compression="jpeg")
