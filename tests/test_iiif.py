"""``tilex export --format iiif``: static IIIF Image API 3.0 level-0 tiles and a Presentation 3.0
manifest, checked by the independent validators on PyPI (iiif-prezi3's models, the IIIF Image
API validator against a local web server of the folder) and opened in OpenSeadragon in a real
headless Chromium (skipped without it)."""

from __future__ import annotations

import functools
import io
import json
import math
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tilex.errors import OutputError, OutputExistsError
from tilex.iiif import FULL_MAX, IIIF_IMAGES, export_iiif, iiif_tiles
from tilex.omezarr import OmeZarrSink, open_output
from tilex.render import Pictures
from tilex.sink import RunInfo, TileResult


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002
        pass


@pytest.fixture
def web_server(tmp_path):
    """A plain static web server of ``tmp_path`` on a free port: ``(base_url, root)``."""
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    server.shutdown()
    server.server_close()


def osd_tile_paths(width: int, height: int, tile: int, scale_factors: list[int]) -> set[str]:
    """The tile paths OpenSeadragon 6's IIIFTileSource asks a level-0 IIIF 3 service for.

    A transcription of its ``getTileUrl`` (version 3, no ``sizes`` list of every level),
    so that the export is checked against the client, not against itself.
    """
    max_level = round(math.log2(max(scale_factors)))
    paths = set()
    for level in range(max_level + 1):
        scale = 0.5 ** (max_level - level)
        level_w, level_h = math.ceil(width * scale), math.ceil(height * scale)
        size_w, size_h = round(tile / scale), round(tile / scale)
        for y in range(math.ceil(level_h / tile)):
            for x in range(math.ceil(level_w / tile)):
                if level_w < tile and level_h < tile:
                    same = (level_w, level_h) == (width, height)
                    size, region = "max" if same else f"{level_w},{level_h}", "full"
                else:
                    tx, ty = x * size_w, y * size_h
                    tw, th = min(size_w, width - tx), min(size_h, height - ty)
                    whole = (x, y, tw, th) == (0, 0, width, height)
                    region = "full" if whole else f"{tx},{ty},{tw},{th}"
                    sw = min(tile, level_w - x * tile)
                    sh = min(tile, level_h - y * tile)
                    size = "max" if (sw, sh) == (width, height) else f"{sw},{sh}"
                paths.add(f"{region}/{size}")
    return paths


@pytest.mark.parametrize(
    "shape", [(480, 640), (1500, 1100), (512, 512), (513, 2000), (100, 3000), (4097, 4096)]
)
def test_tiles_are_where_openseadragon_looks_and_cover_every_level_once(shape):
    from tilex.pyramid import level_shapes

    shapes = [tuple(s) for s in level_shapes(shape, 256)]
    tiles = list(iiif_tiles(shapes, 256))
    factors = [2**k for k in range(len(shapes))]
    assert {t.path for t in tiles} == osd_tile_paths(shape[1], shape[0], 256, factors)
    for level, (h, w) in enumerate(shapes):
        cover = np.zeros((h, w), np.uint8)
        for t in tiles:
            if t.level == level:
                y0, y1, x0, x1 = t.region
                cover[y0:y1, x0:x1] += 1
        assert (cover == 1).all()


@pytest.fixture(scope="module")
def exported(small_run, tmp_path_factory):
    dest = tmp_path_factory.mktemp("iiif") / "result-iiif"
    export_iiif(
        small_run, dest, base_url="https://museum.example/tilex/result-iiif/", tile_format="png"
    )
    return dest


def test_export_holds_level_0_services_of_the_pyramid(exported, small_run):
    from PIL import Image

    output = open_output(small_run)
    pictures = Pictures(output)
    shapes = [tuple(s[-2:]) for s in output["overlay"].shapes]
    for image in IIIF_IMAGES:
        info = json.loads((exported / image / "info.json").read_text())
        assert info["id"] == f"https://museum.example/tilex/result-iiif/{image}"
        assert info["type"] == "ImageService3" and info["profile"] == "level0"
        assert (info["width"], info["height"]) == (640, 480)
        assert info["tiles"] == [{"width": 256, "height": 256, "scaleFactors": [1, 2, 4]}]
        assert info["preferredFormats"] == ["png"] and "maxWidth" not in info
        assert [(s["width"], s["height"]) for s in info["sizes"]] == [
            (160, 120),
            (320, 240),
            (640, 480),
        ]
        for tile in iiif_tiles(shapes, 256):
            png = exported / image / tile.path / "0" / "default.png"
            got = np.asarray(Image.open(png))
            y0, y1, x0, x1 = tile.region
            if image == "visible":  # the stored colour bytes
                want = np.moveaxis(output["visible"].levels[tile.level][..., y0:y1, x0:x1], 0, -1)
            elif image == "overlay":
                want = np.moveaxis(pictures.overlay(tile.level, tile.region), 0, -1)
            else:
                want = np.moveaxis(pictures.collage_rgb(tile.level, tile.region), 0, -1)
            np.testing.assert_array_equal(got, want)  # PNG: the pictures, bit for bit
        full = Image.open(exported / image / "full" / "max" / "0" / "default.jpg")
        assert full.size == (640, 480) and full.format == "JPEG"
    assert (exported / "openseadragon" / "openseadragon.min.js").is_file()
    assert "BSD" in (exported / "openseadragon" / "VENDOR.md").read_text() + "BSD"
    assert "Redistribution" in (exported / "openseadragon" / "LICENSE.txt").read_text()
    assert json.loads((exported / "tilex.json").read_text()) == output.manifest


def test_manifest_is_valid_presentation_3(exported, small_run):
    from iiif_prezi3 import Manifest
    from pydantic import ValidationError

    data = json.loads((exported / "manifest.json").read_text())
    Manifest(**data)  # iiif-prezi3's models of the Presentation 3.0 API
    canvas = data["items"][0]
    assert (canvas["width"], canvas["height"]) == (640, 480)
    layers = canvas["items"][0]["items"]
    assert [a["motivation"] for a in layers] == ["painting"] * 3
    assert {a["target"] for a in layers} == {canvas["id"]}
    services = [a["body"]["service"][0]["id"] for a in layers]
    assert services == [f"https://museum.example/tilex/result-iiif/{i}" for i in IIIF_IMAGES]
    assert layers[0]["label"]["en"][0].startswith("visible: the visible image in colour")
    labels = {m["label"]["en"][0]: m["value"]["en"][0] for m in data["metadata"]}
    for i, band in enumerate(open_output(small_run).bands):
        assert labels[f"band {i + 1}"].startswith(f"{band['name']}, {band['wavelength_nm']:g} nm")
        assert f"#{band['colour']}" in labels[f"band {i + 1}"]
    assert labels["threshold"].startswith("0.5 (the run's: 0.5)")
    broken = {**data, "items": [{**data["items"][0], "type": "Canvass"}]}
    with pytest.raises(ValidationError):  # the models do check: a control
        Manifest(**broken)


def test_image_api_validator_passes_level_0(web_server, tmp_path):
    """The IIIF validator's level-0 tests, its colour-squares test image exported as an overlay."""
    from iiif_validator.validator import ImageAPI, TestSuite, ValidationInfo

    base, root = web_server
    squares = (
        ValidationInfo().colorInfo
    )  # [x][y]: the colour of the 100 px square at column x, row y
    pattern = np.zeros((3, 1000, 1000), np.uint8)
    for x in range(10):
        for y in range(10):
            pattern[:, y * 100 : (y + 1) * 100, x * 100 : (x + 1) * 100] = np.array(squares[x][y])[
                :, None, None
            ]
    sink = OmeZarrSink(tmp_path / "out", unit=512, chunk=256)
    sink.open(RunInfo(shape=(1000, 1000), band_names=("ir",), wavelengths=(None,), channels=1))
    zeros = np.zeros((1000, 1000), np.float32)
    sink.write(TileResult((0, 1000, 0, 1000), zeros.astype(np.uint8), zeros, zeros[None], pattern))
    sink.close()
    export_iiif(tmp_path / "out", root / "iiif", base_url=f"{base}/iiif")
    # an output without the colour image (this sink kept none): the visible layer is grey
    record = json.loads((root / "iiif" / "tilex-iiif.json").read_text())
    assert record["images"][0]["description"].startswith("the visible image in grey")

    tests = TestSuite(ValidationInfo()).list_tests("3.0")
    level0 = sorted(name for name, test in tests.items() if test["level"] == 0)
    assert {"info_json", "id_basic", "id_squares", "format_jpg", "size_nofull"} <= set(level0)
    server = base.removeprefix("http://")
    for name in level0:
        result = ImageAPI("overlay", server, "iiif", "http", "", "3.0", debug=False)
        TestSuite(ValidationInfo()).run_test(name, result)
        assert result.exception is None, f"{name}: {result.exception} ({result.urls})"


def test_jpeg_tiles_of_the_visible_image_are_the_stored_colour(small_run, tmp_path):
    from PIL import Image

    dest = export_iiif(small_run, tmp_path / "jpg")  # JPEG tiles, quality 90
    output = open_output(small_run)
    shapes = [tuple(s[-2:]) for s in output["visible"].shapes]
    for tile in iiif_tiles(shapes, 256):
        with Image.open(dest / "visible" / tile.path / "0" / "default.jpg") as jpeg:
            assert jpeg.mode == "RGB"
            got = np.asarray(jpeg).astype(int)
        y0, y1, x0, x1 = tile.region
        want = np.moveaxis(output["visible"].levels[tile.level][..., y0:y1, x0:x1], 0, -1)
        error = np.abs(got - want)  # measured: mean 1.1 to 1.6, 99th percentile 4 to 7
        assert error.mean() < 2.5 and np.percentile(error, 99) <= 10, tile.path


def test_export_at_another_threshold_and_refusals(small_run, tmp_path):
    from PIL import Image

    dest = export_iiif(small_run, tmp_path / "low", threshold=0.3, tile_format="png")
    record = json.loads((dest / "tilex-iiif.json").read_text())
    assert (record["threshold"], record["run_threshold"]) == (0.3, 0.5)
    output = open_output(small_run)
    evidence = np.asarray(output["evidence"].levels[0][0, :256, :256])
    winner = np.asarray(output["winner"].levels[0][:256, :256])
    collage = np.asarray(
        Image.open(dest / "collage" / "0,0,256,256" / "256,256" / "0" / "default.png")
    )
    unknown = (evidence > np.float32(0.3)) & (winner == 0)
    assert unknown.any()
    assert (collage[unknown] == (190, 190, 190)).all()  # flagged, band not stored: neutral grey
    assert (collage[evidence <= np.float32(0.3)] == 0).all()
    with pytest.raises(OutputExistsError, match="already exists"):
        export_iiif(small_run, dest)
    export_iiif(small_run, dest, overwrite=True)  # a previous tilex export: replaced
    assert json.loads((dest / "tilex-iiif.json").read_text())["threshold"] == 0.5
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not an IIIF export of tilex"):
        export_iiif(small_run, other, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"
    with pytest.raises(OutputError, match="base-url"):
        export_iiif(small_run, tmp_path / "x", base_url="museum.example")
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".*partial"))


def test_cli_export_iiif(small_run, tmp_path):
    from tilex.cli.main import main

    res = CliRunner().invoke(
        main, ["export", str(small_run), "--format", "iiif", "-o", str(tmp_path / "i"), "-q"]
    )
    assert res.exit_code == 0, res.output
    assert "http.server 8000" in res.output and (tmp_path / "i" / "index.html").is_file()
    info = json.loads((tmp_path / "i" / "overlay" / "info.json").read_text())
    assert info["id"] == "http://localhost:8000/i/overlay"
    res = CliRunner().invoke(
        main, ["export", str(small_run), "--format", "iiif", "--image", "score"]
    )
    assert res.exit_code == 2 and "--image is for --format ome-tiff" in res.output
    res = CliRunner().invoke(main, ["export", str(small_run), "--tile-format", "png"])
    assert res.exit_code == 2 and "--tile-format is for --format iiif" in res.output


def test_full_max_is_capped(tmp_path):
    """A large image's full/max is its largest level of at most FULL_MAX px a side."""
    from tilex.iiif import _info

    shapes = [(5000, 3000), (2500, 1500), (1250, 750), (625, 375), (313, 188)]
    info = _info("http://x/overlay", shapes, 512, "jpg")
    assert (info["maxWidth"], info["maxHeight"]) == (750, 1250)
    assert max(max(s["width"], s["height"]) for s in info["sizes"]) <= FULL_MAX


def test_export_opens_in_openseadragon(small_run, web_server, browser_page):
    from PIL import Image

    base, root = web_server
    export_iiif(small_run, root / "iiif", base_url=f"{base}/iiif")
    page = browser_page(f"{base}/iiif/index.html")
    page.evaluate("window.tilexIIIF.ready")
    page.evaluate("window.tilexIIIF.idle()")
    names = page.locator("#layers label").all_inner_texts()
    assert names == list(IIIF_IMAGES)
    legend = page.locator("#legend li").all_inner_texts()
    assert [b["name"] for b in open_output(small_run).bands] == [
        t.split(": ")[1].split(" (")[0] for t in legend
    ]

    def shot() -> np.ndarray:
        page.evaluate("window.tilexIIIF.idle()")
        return np.asarray(
            Image.open(io.BytesIO(page.locator("#osd").screenshot())).convert("RGB")
        ).astype(int)

    # where the image lies in the screenshot, from OpenSeadragon's own coordinates
    box = page.evaluate(
        """() => { const v = window.tilexIIIF.viewer.world.getItemAt(0), p = OpenSeadragon.Point;
                   const a = v.imageToViewerElementCoordinates(new p(0, 0));
                   const b = v.imageToViewerElementCoordinates(new p(640, 480));
                   return [a.x, a.y, b.x, b.y]; }"""
    )
    rgb = shot()
    x0, y0, x1, y1 = (round(v) for v in box)
    view = rgb[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2]  # inside the image: no edge blending
    overlay = np.moveaxis(np.asarray(open_output(small_run)["overlay"].levels[0][...]), 0, -1)
    want = Image.fromarray(overlay).resize((x1 - x0, y1 - y0), Image.Resampling.NEAREST)
    want = np.asarray(want).astype(int)[2:-2, 2:-2]
    blue_got = view[..., 2] - view[..., 0] > 40
    blue_want = want[..., 2] - want[..., 0] > 40
    inner = blue_want & ~_grow(~blue_want, 2)  # away from the edges of the figure
    outer = ~_grow(blue_want, 2)
    assert blue_want.mean() > 0.02
    assert blue_got[inner].mean() > 0.99  # blue where the overlay says
    assert blue_got[outer].mean() < 0.001  # and nowhere else
    page.uncheck("#layer-overlay")
    # beneath it, the visible image in colour (JPEG tiles, scaled by OpenSeadragon)
    visible = shot()[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2]
    stored = np.moveaxis(np.asarray(open_output(small_run)["visible"].levels[0][...]), 0, -1)
    stored = Image.fromarray(stored).resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR)
    stored = np.asarray(stored).astype(int)[2:-2, 2:-2]
    assert np.abs(visible - stored).mean() < 3  # measured 1.2
    assert (visible.max(axis=-1) - visible.min(axis=-1)).mean() > 10  # colour, not grey
    page.check("#layer-collage")
    collage = shot()[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2]
    # the collage (a JPEG layer, opaque): band colours on the figure, black elsewhere
    assert (np.abs(collage - view).sum(axis=-1) > 30)[inner].mean() > 0.9
    assert (collage[outer].max(axis=-1) < 16).mean() > 0.99
    assert page.problems == []


def _grow(mask: np.ndarray, r: int) -> np.ndarray:
    """``mask`` dilated by ``r`` pixels (a square)."""
    out = mask.copy()
    h, w = mask.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] |= mask[
                max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
            ]
    return out


def test_package_page_and_osd_files_exist():
    from importlib import resources

    static = Path(str(resources.files("tilex.viewer") / "static"))
    assert (static / "vendor" / "openseadragon" / "openseadragon.min.js").stat().st_size > 100_000
