"""``tilex view``: the read-only server (routes, refusals, chunk-wise reads) and its page in a
real headless Chromium (blue where the overlay says, the threshold slider, layers, legend).

The browser tests share one small real run (``small_run`` in conftest.py) and skip cleanly
without Debian's ``chromium`` or the ``playwright`` package.
"""

from __future__ import annotations

import io
import json
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from tilex.errors import OutputError
from tilex.omezarr import OmeZarrSink, open_output
from tilex.render import Pictures
from tilex.sink import RunInfo, TileResult
from tilex.viewer import ViewServer
from tilex.viewer.store import ContainedStore
from tilex.viewer.tiles import MAGIC

BLUE = 40  # b - r of a pixel tinted blue: 0.65 * score * 255 >= 50 for every threshold >= 0.3


@pytest.fixture(scope="module")
def served(small_run):
    """``tilex view`` of the small run, on a free port, for the module."""
    server = ViewServer(small_run)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def get(url: str, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def unpack(body: bytes) -> dict[str, np.ndarray]:
    """The browser's reading of a tile body (tilex.viewer.tiles.pack), in Python."""
    assert body[:4] == MAGIC
    length = int.from_bytes(body[4:8], "little")
    header = json.loads(body[8 : 8 + length])
    base = 8 + length
    assert base % 8 == 0
    arrays = {}
    for name, f in header["fields"].items():
        count = int(np.prod(f["shape"]))
        arrays[name] = np.frombuffer(body, f["dtype"], count, base + f["offset"]).reshape(
            f["shape"]
        )
    return arrays


# ---------------------------------------------------------------------- the server


def test_tiles_are_the_stored_chunks_of_every_level(served, small_run):
    output = open_output(small_run)
    pictures = Pictures(output)
    for level, shape in enumerate(output["overlay"].shapes):
        h, w = shape[-2:]
        ty, tx = (h - 1) // 256, (w - 1) // 256  # the last tile: clipped at both edges
        status, body = get(
            f"{served.url}api/tile/{level}/{ty}/{tx}"
            "?fields=evidence,winner,overlay,visible,grey,band:2"
        )
        assert status == 200
        arrays = unpack(body)
        region = (ty * 256, h, tx * 256, w)
        y0, y1, x0, x1 = region
        np.testing.assert_array_equal(
            arrays["evidence"], pictures.read("evidence", level, region)[0]
        )
        np.testing.assert_array_equal(arrays["winner"], pictures.read("winner", level, region))
        np.testing.assert_array_equal(arrays["overlay"], pictures.read("overlay", level, region))
        np.testing.assert_array_equal(arrays["visible"], pictures.read("visible", level, region))
        np.testing.assert_array_equal(arrays["grey"], pictures.grey(level, region))
        want = output["dissimilarity"].levels[level][2, y0:y1, x0:x1]
        np.testing.assert_array_equal(arrays["band:2"], want)
    for bad in (
        "9/0/0?fields=grey",
        "0/7/0?fields=grey",
        "0/0/0?fields=nope",
        "0/0/0?fields=band:3",
    ):
        assert get(f"{served.url}api/tile/{bad}")[0] == 404, bad


@pytest.mark.parametrize(
    ("field", "image"),
    [("evidence", "evidence"), ("visible", "visible"), ("grey", "visible")],
)
def test_a_tile_reads_one_chunk_per_field_never_a_level(served, monkeypatch, field, image):
    read: list[tuple[str, str, object]] = []
    original = ContainedStore.get

    async def counting(self, key, prototype=None, byte_range=None):
        read.append((self.root.name, key, byte_range))
        return await original(self, key, prototype, byte_range)

    monkeypatch.setattr(ContainedStore, "get", counting)
    assert get(f"{served.url}api/tile/0/1/1?fields={field}")[0] == 200
    # a shard's index and one chunk of it (per channel): byte ranges, never a whole shard file
    assert read and all(r is not None for *_, r in read), read
    # of one image's level 0: the grey comes from the colour image alone, not overlay and score
    assert {(name, k.rsplit("/c/", 1)[0]) for name, k, _ in read} == {(f"{image}.ome.zarr", "0")}


def test_pixel_read_out_is_level_0(served, small_run):
    output = open_output(small_run)
    evidence = np.asarray(output["evidence"].levels[0][0])
    y, x = np.unravel_index(np.argmax(evidence), evidence.shape)
    status, body = get(f"{served.url}api/pixel?x={x}&y={y}")
    found = json.loads(body)
    assert status == 200 and found["x"] == x and found["y"] == y
    assert found["evidence"] == pytest.approx(float(evidence[y, x]))
    assert found["winner"] == int(output["winner"].levels[0][y, x])
    assert len(found["bands"]) == 3
    assert get(f"{served.url}api/pixel?x=640&y=0")[0] == 404


def test_info_describes_the_output(served, small_run):
    info = json.loads(get(f"{served.url}api/info")[1])
    assert info["shape"] == [480, 640] and info["levels"] == [[480, 640], [240, 320], [120, 160]]
    assert info["tile"] == 256 and info["band_maps"] is True and info["visible"] == "colour"
    assert [b["name"] for b in info["bands"]] == [b["name"] for b in open_output(small_run).bands]
    assert info["threshold"] == {
        "run": 0.5,
        "threshold": 0.5,
        "lowest": 0.0,
        "source": "evidence",
        "unknown_band": [190, 190, 190],
    }


def test_paths_outside_out_are_404(small_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(small_run, out)
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (out / "leak.txt").symlink_to(secret)
    (out / "inside.json").symlink_to(out / "tilex.json")
    server = ViewServer(out)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = server.url.rstrip("/")
    try:
        assert get(f"{base}/files/tilex.json")[0] == 200
        assert get(f"{base}/files/inside.json")[0] == 200  # a symlink that stays inside
        for path in (
            "/files/leak.txt",  # a symlink out
            "/files/../secret.txt",
            "/files/%2e%2e/secret.txt",
            "/files/..%2fsecret.txt",
            f"/files/{secret}",  # absolute
            f"/files/%2F{str(secret).lstrip('/')}",
            "/files/score.ome.zarr",  # a folder
            "/files/",
            "/static/../server.py",
            "/static/%2e%2e/server.py",
            "/nothing",
        ):
            status, body = get(base + path)
            assert status == 404 and b"outside" not in body, path
        status, _ = get(f"{base}/api/info", Host="attacker.example:80")
        assert status == 403  # a DNS name pointed at 127.0.0.1 by another page
        request = urllib.request.Request(f"{base}/files/tilex.json", method="PUT", data=b"{}")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 405
        status, part = get(f"{base}/files/tilex.json", Range="bytes=2-9")
        assert status == 206 and part == (out / "tilex.json").read_bytes()[2:10]
    finally:
        server.shutdown()
        server.server_close()


def test_images_and_chunks_that_lead_outside_are_refused(small_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(small_run, out)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(out / "score.ome.zarr", elsewhere)
    (out / "score.ome.zarr").symlink_to(elsewhere)
    with pytest.raises(OutputError, match=r"image 'score' \(score.ome.zarr\) leads outside"):
        ViewServer(out)
    (out / "score.ome.zarr").unlink()
    shutil.move(elsewhere, out / "score.ome.zarr")
    shard = out / "evidence.ome.zarr" / "0" / "c" / "0" / "0" / "1"  # level 0, x >= 512
    outside = tmp_path / "shard"
    shutil.move(shard, outside)
    shard.symlink_to(outside)
    server = ViewServer(out)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert get(f"{server.url}api/tile/0/0/0?fields=evidence")[0] == 200
        assert get(f"{server.url}api/tile/0/0/2?fields=evidence")[0] == 404  # in the shard out
    finally:
        server.shutdown()
        server.server_close()


def test_the_server_never_writes(served, small_run):
    def snapshot() -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(small_run)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(small_run.rglob("*"))
        }

    before = snapshot()
    for path in ("", "api/info", "api/tile/0/0/0?fields=grey,collage", "api/pixel?x=1&y=1"):
        assert get(served.url + path)[0] == 200
    assert get(served.url + "files/tilex.json")[0] == 200
    assert snapshot() == before


def test_an_output_without_evidence_can_only_raise_the_threshold(tmp_path):
    sink = OmeZarrSink(tmp_path / "old", unit=512, chunk=256)
    sink.open(RunInfo(shape=(300, 200), band_names=("ir",), wavelengths=(1000.0,), channels=1))
    score = np.zeros((300, 200), np.float32)
    score[100:200, 50:150] = 0.8
    winner = (score > 0).astype(np.uint8)
    overlay = np.full((3, 300, 200), 128, np.uint8)
    sink.write(TileResult((0, 300, 0, 200), winner, score, score[None].copy(), overlay))
    sink.close()
    server = ViewServer(tmp_path / "old")
    server.server_close()
    info = json.loads(server.info)
    assert info["threshold"]["source"] == "score" and info["threshold"]["lowest"] == 0.0
    pictures = server.pictures
    assert not pictures.has_evidence
    # nor the colour image: the visible layer is the grey recovered from the overlay
    assert info["visible"] == "grey" and not pictures.has_colour
    grey = pictures.grey(0, (0, 300, 0, 200))
    assert (grey[score == 0] == 128).all()  # where nothing is flagged, the overlay's own grey
    np.testing.assert_array_equal(pictures.visible(0, (0, 300, 0, 200)), np.stack([grey] * 3))
    np.testing.assert_array_equal(pictures.evidence(0, (0, 300, 0, 200)), score)
    run = with_run_threshold(pictures.output, 0.5)
    with pytest.raises(OutputError, match="below the run's 0.5 and the output stores no evidence"):
        Pictures(run, 0.4)
    assert Pictures(run, 0.9).flagged(0, (0, 300, 0, 200)).sum() == 0


def with_run_threshold(output, threshold):
    """``output`` as if its run had flagged at ``threshold`` (the sink writes no parameters)."""
    from dataclasses import replace

    return replace(output, manifest={**output.manifest, "parameters": {"threshold": threshold}})


def test_the_grey_is_the_background_the_overlay_was_drawn_on(small_run, tmp_path):
    """Pictures.grey, from the colour bytes: on level 0 of an 8-bit scan the very grey under the
    run's overlay, so the overlay drawn again from it (the viewer's hidden layer, an export at
    another threshold) is within 1 of the stored one; for a float visible image the bytes are
    rounded first (grey 1 off), and the overlay is still within 1 of a run's at any threshold."""
    from tilex.kernels.reference import overlay_reference

    from tilex.colour import display_bytes, luminance
    from tilex.preview import visible_from_overlay

    output = open_output(small_run)
    pictures = Pictures(output)
    for level, shape in enumerate(output["overlay"].shapes):
        region = (0, shape[-2], 0, shape[-1])
        grey = pictures.grey(level, region).astype(int)
        overlay = pictures.read("overlay", level, region).astype(int)
        score = pictures.read("score", level, region)[0]
        clear = score == 0  # the overlay is its grey there
        if level == 0:
            np.testing.assert_array_equal(grey[clear], overlay[0][clear])
            redrawn = overlay_reference(grey.astype(np.float32) / np.float32(255), score)
            assert np.abs(redrawn.astype(int) - overlay).max() <= 1
            recovered = visible_from_overlay(overlay.astype(np.uint8), score)  # older outputs'
            assert np.abs(recovered.astype(int) - grey).max() <= 2
        else:  # the grey of the mean bytes, the mean of the greys: each rounded once
            assert np.abs(grey - overlay[0])[clear].max() <= 1

    h, w = 300, 200
    visible = np.random.default_rng(1).random((3, h, w), dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    evidence = (0.9 * np.exp(-((yy - 150) ** 2 + (xx - 100) ** 2) / 5000)).astype(np.float32)
    score = np.where(evidence > np.float32(0.5), evidence, np.float32(0))
    gray = luminance(visible)
    sink = OmeZarrSink(tmp_path / "float", unit=512, chunk=128)
    sink.open(
        RunInfo(
            shape=(h, w), band_names=("ir",), wavelengths=(1000.0,), channels=1,
            keep_evidence=True, keep_visible=True,
        )
    )  # fmt: skip
    sink.write(
        TileResult(
            (0, h, 0, w), (score > 0).astype(np.uint8), score, score[None].copy(),
            overlay_reference(gray, score), evidence=evidence, visible=display_bytes(visible),
        )
    )  # fmt: skip
    sink.close()
    run = with_run_threshold(open_output(tmp_path / "float"), 0.5)
    grey = Pictures(run).grey(0, (0, h, 0, w)).astype(int)
    off = np.abs(grey - display_bytes(gray))
    assert off.max() == 1 and 0.05 < off.mean() < 0.3  # the bytes' rounding, then the grey's
    stored = np.asarray(run["overlay"].levels[0][...])
    recovered = visible_from_overlay(stored, score)  # what an output without the colour shows
    for t in (0.2, 0.5, 0.7):
        want = overlay_reference(gray, np.where(evidence > np.float32(t), evidence, np.float32(0)))
        at_t = Pictures(run, t).score(0, (0, h, 0, w))
        drawn, old = (
            overlay_reference(g.astype(np.float32) / np.float32(255), at_t)
            for g in (grey, recovered)
        )
        assert np.abs(drawn.astype(int) - want).max() <= 1, t
        assert np.abs(old.astype(int) - want).max() <= 1, t
        if t != 0.5:
            np.testing.assert_array_equal(Pictures(run, t).overlay(0, (0, h, 0, w)), drawn)


def test_cli_prints_the_address_and_stops_on_ctrl_c(small_run):
    command = [sys.executable, "-m", "tilex.cli", "view", str(small_run), "--no-browser"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("tilex view: serving "), line
        url = line.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        assert get(url)[0] == 200
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill() if process.poll() is None else None
    assert process.returncode == 0, err
    assert "tilex view: stopped" in out and "Traceback" not in err


def test_cli_refuses_a_busy_port(small_run):
    server = ViewServer(small_run)
    try:
        from click.testing import CliRunner
        from tilex.cli.main import main

        res = CliRunner().invoke(
            main, ["view", str(small_run), "--no-browser", "--port", str(server.port)]
        )
        assert res.exit_code == 2
        assert f"cannot listen on 127.0.0.1:{server.port}" in res.output
    finally:
        server.server_close()


# ---------------------------------------------------------------------- the page in Chromium


@pytest.fixture(scope="module")
def stored(small_run) -> dict[str, np.ndarray]:
    output = open_output(small_run)
    return {
        "overlay": np.moveaxis(np.asarray(output["overlay"].levels[0][...]), 0, -1).astype(int),
        "visible": np.moveaxis(np.asarray(output["visible"].levels[0][...]), 0, -1).astype(int),
        "grey": Pictures(output).grey(0, (0, 480, 0, 640)).astype(int),
        "evidence": np.asarray(output["evidence"].levels[0][0]),
        "winner": np.asarray(output["winner"].levels[0][...]),
        "flagged": float(output.manifest["found"]["flagged_fraction"]),
    }


@pytest.fixture
def viewer(served, browser_page):
    """The page, drawn at 1:1 with image pixel (0, 0) at canvas pixel (20, 20)."""
    page = browser_page(served.url)
    page.evaluate("window.tilexViewer.ready")
    page.evaluate(
        """() => { const c = document.getElementById('canvas');
                   window.tilexViewer.setView(c.clientWidth / 2 - 20, c.clientHeight / 2 - 20, 1); }"""
    )
    page.evaluate("window.tilexViewer.idle()")
    return page


def picture(page) -> np.ndarray:
    """The image's 480 x 640 pixels as the canvas shows them (int RGB)."""
    from PIL import Image

    page.evaluate("window.tilexViewer.idle()")
    png = page.locator("#canvas").screenshot()
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return rgb[20 : 20 + 480, 20 : 20 + 640]


def in_grey(page) -> None:
    """The visible layer in grey, as ArtExtract drew it under the blue (the overlay's look)."""
    page.select_option("#visible-mode", "grey")


def blue(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 2] - rgb[..., 0] > BLUE


def set_threshold(page, t: float) -> None:
    page.eval_on_selector(
        "#threshold", f"(e) => {{ e.value = '{t}'; e.dispatchEvent(new Event('input')); }}"
    )


def test_hidden_figure_is_blue_where_the_overlay_says_and_nowhere_else(viewer, stored):
    in_grey(viewer)
    rgb = picture(viewer)
    want = blue(stored["overlay"])
    assert 0.02 < want.mean() < 0.5  # the synthetic scan's hidden figure, flagged by the run
    np.testing.assert_array_equal(blue(rgb), want)
    # the stored overlay, redrawn in the page from the grey and the evidence (measured: 1)
    assert np.abs(rgb - stored["overlay"]).max() <= 2
    fraction = viewer.evaluate("window.tilexViewer.fraction")
    assert fraction == pytest.approx(stored["flagged"], abs=1e-12)
    assert viewer.problems == []


def test_raising_the_threshold_removes_blue_pixels_monotonically(viewer, stored):
    in_grey(viewer)
    masks, shown = [], []
    for t in (0.5, 0.6, 0.7, 0.8, 0.9, 0.99, 1.0):
        set_threshold(viewer, t)
        masks.append(blue(picture(viewer)))
        shown.append(viewer.evaluate("window.tilexViewer.fraction"))
        np.testing.assert_array_equal(masks[-1], stored["evidence"] > np.float32(t))
    counts = [int(m.sum()) for m in masks]
    assert all(b <= a for a, b in zip(counts, counts[1:], strict=False)), counts
    assert all(
        not (later & ~earlier).any() for earlier, later in zip(masks, masks[1:], strict=False)
    )
    assert counts[0] > counts[-2] > counts[-1] == 0
    assert shown == pytest.approx([c / masks[0].size for c in counts])
    assert viewer.locator("#fraction").inner_text().startswith("flagged: 0.00 % of the view")
    # below the run's threshold the evidence flags more, and their band is hatched, not coloured
    set_threshold(viewer, 0.3)
    assert (blue(picture(viewer)) & ~masks[0]).sum() > 0
    viewer.uncheck("#layer-hidden")
    viewer.check("#layer-winner")
    rgb = picture(viewer)
    unknown = (stored["evidence"] > np.float32(0.3)) & (stored["winner"] == 0)
    assert unknown.sum() > 100
    grey = (rgb.max(axis=-1) - rgb.min(axis=-1) <= 3) & ((rgb[..., 0] > 150) | (rgb[..., 0] < 70))
    assert grey[unknown].mean() > 0.95  # hatch of light and dark grey: no band's colour
    assert viewer.problems == []


def test_layers_band_filter_legend_and_read_out(viewer, stored, small_run):
    bands = open_output(small_run).bands
    legend = viewer.locator("#legend li").all_inner_texts()
    for band in bands:
        assert any(
            band["name"] in item and f"{band['wavelength_nm']:g} nm" in item for item in legend
        )
    in_grey(viewer)
    base = picture(viewer)
    pictures = {}
    for layer in ("collage", "winner", "heat", "overlay", "bandmap"):
        viewer.check(f"#layer-{layer}")
        pictures[layer] = picture(viewer)
        viewer.uncheck(f"#layer-{layer}")
        assert (np.abs(pictures[layer] - base).sum(axis=-1) > 30).mean() > 0.01, layer
    viewer.uncheck("#layer-visible")
    assert (np.abs(picture(viewer) - base).sum(axis=-1) > 30).mean() > 0.5
    viewer.check("#layer-visible")
    viewer.fill("#opacity-hidden", "0.5")
    viewer.dispatch_event("#opacity-hidden", "input")
    where = blue(base)
    half = picture(viewer)
    tint = [(rgb[..., 2] - rgb[..., 0])[where].mean() for rgb in (half, base)]
    assert tint[0] / tint[1] == pytest.approx(0.5, abs=0.05)
    viewer.fill("#opacity-hidden", "1")
    viewer.dispatch_event("#opacity-hidden", "input")
    # the band filter: blue only where band 2 wins
    viewer.select_option("#band-filter", "2")
    np.testing.assert_array_equal(
        blue(picture(viewer)), (stored["evidence"] > np.float32(0.5)) & (stored["winner"] == 2)
    )
    # the read-out: a pixel band 2 wins, in micrometres too
    y, x = np.argwhere(stored["winner"] == 2)[0]
    box = viewer.locator("#canvas").bounding_box()
    viewer.mouse.move(box["x"] + 20 + x + 0.5, box["y"] + 20 + y + 0.5)
    readout = viewer.locator("#readout")
    readout.filter(has_text=bands[1]["name"]).wait_for(timeout=10_000)
    text = readout.inner_text()
    assert f"x {x}, y {y}" in text and " mm" in text and "flagged" in text
    assert viewer.locator("#scalebar-label").inner_text().endswith(("µm", "mm", "cm"))
    assert viewer.problems == []


def test_visible_layer_is_the_stored_colour_or_its_grey(viewer, stored):
    """At 1:1 the visible layer shows the stored colour bytes, the hidden areas tint them blue,
    and the grey choice shows the overlay's grey (what ArtExtract showed under the blue)."""
    assert viewer.locator("#visible-mode").input_value() == "colour"  # the default, when stored
    viewer.uncheck("#layer-hidden")
    rgb = picture(viewer)
    assert np.abs(rgb - stored["visible"]).max() <= 1  # the bytes, through canvas and PNG
    assert (rgb.max(axis=-1) - rgb.min(axis=-1)).mean() > 10  # colour, not grey
    viewer.check("#layer-hidden")
    rgb = picture(viewer)
    flagged = stored["evidence"] > np.float32(0.5)
    a = 0.65 * np.minimum(stored["evidence"], 1)[..., None] * flagged[..., None]
    v = stored["visible"]
    tinted = np.concatenate([v[..., :2] * (1 - a), v[..., 2:] + a * (255 - v[..., 2:])], axis=-1)
    assert np.abs(rgb - tinted).max() <= 1  # the colour under the same blue as the overlay's
    assert (rgb[..., 2] - rgb[..., 0] > v[..., 2] - v[..., 0] + BLUE)[flagged].all()
    in_grey(viewer)
    viewer.uncheck("#layer-hidden")
    rgb = picture(viewer)
    assert (rgb.max(axis=-1) == rgb.min(axis=-1)).all()  # grey
    assert np.abs(rgb[..., 0] - stored["grey"]).max() <= 1
    assert viewer.evaluate("window.tilexViewer.state.visible") == "grey"
    assert viewer.problems == []


def test_first_view_opens_quickly_and_offline(served, browser_page):
    page = browser_page(served.url)
    page.evaluate("window.tilexViewer.ready")
    page.evaluate("window.tilexViewer.idle()")
    first = page.evaluate("window.tilexViewer.firstViewMs")
    print(f"first view of a 640x480 output: {first:.0f} ms after navigation")
    assert 0 < first < 10_000  # measured about 0.5 s on the 2-core VM; generous for CI
    assert page.problems == []  # no console error, no request to another host


def test_static_files_ship_in_the_package():
    from importlib import resources

    static = resources.files("tilex.viewer") / "static"
    for name in ("index.html", "viewer.js", "viewer.css", "iiif/index.html", "iiif/iiif.js"):
        assert (static / name).is_file(), name
    licence = (static / "vendor" / "openseadragon" / "LICENSE.txt").read_text()
    assert "Redistribution and use in source and binary forms" in licence
