"""Scans as scanners and slide software write them, read through tilex's lazy path.

Pyramidal BigTIFFs as libvips and QuPath write them (JPEG and LZW, 256 and
512 px tiles, the pyramid in SubIFDs or in pages, OME-TIFF or plain) and a
sharded OME-Zarr (Zarr v3, shards of 2x2 chunks, two levels): ``tilex.run``
on each gives exactly what it gives on the same pixels as plain TIFFs. For
lossless inputs those pixels are the originals; for JPEG they are level 0 as
tifffile decodes it. The inputs are cut so that tiles of the run straddle the
files' tiles and shards, and the last ones are partial.

Most runs use a plan without the statistics pass and the calibration
(``FAST``): what differs between inputs is only how their pixels are read, and
every stage reads through the same ``Scan.read_region``. One run (libvips)
uses the defaults, statistics pass and calibration fit included.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

FAST = {"calibrate": "none", "norm": "pixel", "tile": 128, "device": "cpu"}
SHAPE = (600, 700)  # 3x3 tiles of 256 px and 2x2 of 512, the last ones partial
BAND_NAMES = ("ir850", "ir1000")


@pytest.fixture(scope="session")
def pixels() -> tuple[np.ndarray, np.ndarray]:
    """A synthetic scan in memory: visible uint8 ``[H, W, 3]``, bands uint16 ``[2, H, W]``."""
    from tilex.synthetic import render

    scan = render(SHAPE, bands=len(BAND_NAMES), seed=5)
    return scan.visible, scan.bands


# ----------------------------------------------------------------------------- writers


def write_manifest(folder: Path, visible: str, bands: list[str]) -> Path:
    manifest = {
        "visible": visible,
        "bands": [
            {"name": n, "file": f, "wavelength_nm": int(n[2:])}
            for n, f in zip(BAND_NAMES, bands, strict=True)
        ],
    }
    path = folder / "scan.json"
    path.write_text(json.dumps(manifest))
    return path


def plain_scan(folder: Path, visible: np.ndarray, bands: np.ndarray) -> Path:
    """The pixels as plain TIFFs: one strip each, no compression, no pyramid."""
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / "visible.tif", visible, photometric="rgb", metadata=None)
    for name, band in zip(BAND_NAMES, bands, strict=True):
        tifffile.imwrite(folder / f"{name}.tif", band, photometric="minisblack", metadata=None)
    return write_manifest(folder, "visible.tif", [f"{n}.tif" for n in BAND_NAMES])


def pyramid_tiff(
    path: Path,
    data: np.ndarray,
    *,
    tile: int,
    compression: str,
    subifds: bool,
    ome: bool = False,
    photometric: str | None = None,
    levels: int = 3,
) -> Path:
    """A tiled pyramidal BigTIFF: levels in SubIFDs of page 0 (QuPath, ``vips --subifd``)
    or as further pages marked reduced (``vips --pyramid``)."""
    rgb = data.ndim == 3
    photometric = photometric or ("rgb" if rgb else "minisblack")
    options = {"tile": (tile, tile), "compression": compression, "photometric": photometric}
    metadata = {"axes": "YXS" if rgb else "YX"} if ome else None
    with tifffile.TiffWriter(path, bigtiff=True, ome=ome) as tif:
        tif.write(data, subifds=levels - 1 if subifds else None, metadata=metadata, **options)
        for _ in range(1, levels):
            data = data[::2, ::2]
            tif.write(data, subfiletype=1, metadata=None, **options)
    return path


def level0(path: Path) -> np.ndarray:
    """Level 0 of a TIFF as tifffile decodes it."""
    with tifffile.TiffFile(path) as tif:
        if tif.is_ome:
            return tif.series[0].levels[0].asarray()
        return tif.pages.first.asarray()


def sharded_ome_zarr(path: Path, data: np.ndarray, *, chunk: int, shard: int) -> Path:
    """OME-Zarr 0.5 (Zarr v3) ``[c, y, x]`` with sharding (shard = 2x2 chunks) and two levels."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    datasets = []
    for level in range(2):
        step = 2**level
        part = np.ascontiguousarray(data[:, ::step, ::step])
        array = group.create_array(
            str(level),
            shape=part.shape,
            dtype=part.dtype,
            chunks=(1, chunk, chunk),
            shards=(1, shard, shard),
            compressors=zarr.codecs.ZstdCodec(level=3),
            dimension_names=["c", "y", "x"],
        )
        array[...] = part
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [{"type": "scale", "scale": [1.0, step, step]}],
            }
        )
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [
                    {"name": "c", "type": "channel"},
                    {"name": "y", "type": "space", "unit": "micrometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"},
                ],
                "datasets": datasets,
            }
        ],
        "omero": {
            "channels": [{"label": n} for n in ("R", "G", "B", *BAND_NAMES)],
        },
    }
    return path


# ----------------------------------------------------------------------------- runs


def run_arrays(scan: Any, **plan: Any) -> dict[str, np.ndarray]:
    """Every image of ``tilex.run(scan)`` in memory."""
    import tilex

    report = tilex.run(scan, None, **plan)
    sink = report.sink
    return {
        name: getattr(sink, name)
        for name in ("winner", "score", "evidence", "collage", "overlay", "visible")
    }


def assert_same_run(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for name, array in want.items():
        assert got[name].dtype == array.dtype, name
        np.testing.assert_array_equal(got[name], array, err_msg=name)


def assert_reads(manifest: Path, tiling: dict, compression: str) -> None:
    """Each file is what the case says (tiling, compression) as ``tilex info`` sees it."""
    from tilex.scan import open_scan

    inputs = open_scan(manifest).describe()["inputs"]
    assert len(inputs) == 1 + len(BAND_NAMES)
    for source in inputs:
        assert source["tiling"] == tiling, source
        assert source["compression"] == compression, source


@pytest.fixture(scope="session")
def plain_runs(tmp_path_factory, pixels):
    """``plain_runs(visible, bands, **plan)``: the run of those pixels as plain TIFFs (memoised)."""
    cache: dict = {}

    def get(visible: np.ndarray, bands: np.ndarray, **plan: Any) -> dict[str, np.ndarray]:
        key = (visible.tobytes(), bands.tobytes(), tuple(sorted(plan.items())))
        if key not in cache:
            folder = tmp_path_factory.mktemp("plain")
            cache[key] = run_arrays(plain_scan(folder, visible, bands), **plan)
        return cache[key]

    return get


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("tile", "compression", "subifds"),
    [(256, "lzw", True), (512, "lzw", False), (512, "zlib", True)],
    ids=["lzw-256-subifds", "lzw-512-pages", "deflate-512-subifds"],
)
def test_lossless_pyramidal_bigtiff_equals_plain(
    tmp_path, pixels, plain_runs, tile, compression, subifds
):
    visible, bands = pixels
    pyramid_tiff(
        tmp_path / "visible.tif", visible, tile=tile, compression=compression, subifds=subifds
    )
    for name, band in zip(BAND_NAMES, bands, strict=True):
        pyramid_tiff(
            tmp_path / f"{name}.tif", band, tile=tile, compression=compression, subifds=subifds
        )
    manifest = write_manifest(tmp_path, "visible.tif", [f"{n}.tif" for n in BAND_NAMES])
    expected = {"lzw": "lzw", "zlib": "adobe_deflate"}[compression]
    assert_reads(manifest, {"tile": [tile, tile]}, expected)
    assert_same_run(run_arrays(manifest, **FAST), plain_runs(visible, bands, **FAST))


def test_qupath_like_jpeg_ome_tiff_equals_its_decoded_pixels(tmp_path, pixels, plain_runs):
    """OME-TIFF, 512 px JPEG tiles (the visible image YCbCr, subsampled), levels in SubIFDs."""
    visible, bands = pixels
    bands8 = (bands >> 8).astype(np.uint8)  # JPEG holds 8 bits
    vis = pyramid_tiff(
        tmp_path / "visible.ome.tif",
        visible,
        tile=512,
        compression="jpeg",
        subifds=True,
        ome=True,
        photometric="ycbcr",
    )
    files = [
        pyramid_tiff(
            tmp_path / f"{n}.ome.tif", b, tile=512, compression="jpeg", subifds=True, ome=True
        )
        for n, b in zip(BAND_NAMES, bands8, strict=True)
    ]
    manifest = write_manifest(tmp_path, vis.name, [f.name for f in files])
    assert_reads(manifest, {"tile": [512, 512]}, "jpeg")
    decoded_visible = level0(vis)
    assert np.abs(decoded_visible.astype(int) - visible).max() > 0  # lossy: not the originals
    decoded = np.stack([level0(f) for f in files])
    assert_same_run(run_arrays(manifest, **FAST), plain_runs(decoded_visible, decoded, **FAST))


@pytest.mark.skipif(shutil.which("vips") is None, reason="libvips' vips command is not installed")
def test_libvips_pyramids_equal_their_pixels_with_the_default_plan(tmp_path, pixels, plain_runs):
    """``vips tiffsave --pyramid``: the visible image JPEG in 256 px tiles (levels as pages),
    the 16-bit bands LZW in 512 px tiles (levels in SubIFDs); ``tilex.run`` with its defaults."""
    visible, bands = pixels
    source = tmp_path / "source"
    plain_scan(source, visible, bands)

    def vips(src: Path, dst: Path, *options: str) -> Path:
        command = ["vips", "tiffsave", str(src), str(dst), "--pyramid", "--tile", "--bigtiff"]
        subprocess.run([*command, *options], check=True, capture_output=True, timeout=120)
        return dst

    vis = vips(
        source / "visible.tif",
        tmp_path / "visible.tif",
        *("--compression", "jpeg", "--Q", "90", "--tile-width", "256", "--tile-height", "256"),
    )
    files = [
        vips(
            source / f"{n}.tif",
            tmp_path / f"{n}.tif",
            *("--compression", "lzw", "--tile-width", "512", "--tile-height", "512", "--subifd"),
        )
        for n in BAND_NAMES
    ]
    with tifffile.TiffFile(vis) as tif:
        assert len(tif.pages) > 1 and tif.pages.first.compression.name == "JPEG"
    with tifffile.TiffFile(files[0]) as tif:
        assert tif.pages.first.subifds and tif.pages.first.compression.name == "LZW"
    for f, band in zip(files, bands, strict=True):
        np.testing.assert_array_equal(level0(f), band)  # LZW: the originals
    manifest = write_manifest(tmp_path, vis.name, [f.name for f in files])
    decoded_visible = level0(vis)
    plan = {"device": "cpu", "tile": 256}
    assert_same_run(run_arrays(manifest, **plan), plain_runs(decoded_visible, bands, **plan))


def test_sharded_ome_zarr_equals_plain(tmp_path, pixels, plain_runs):
    """One multi-channel OME-Zarr 0.5 (R, G, B, then the bands; uint16), 128 px chunks in
    256 px shards; the same pixels as plain 16-bit TIFFs."""
    visible, bands = pixels
    visible16 = visible.astype(np.uint16) * 257
    data = np.concatenate([np.moveaxis(visible16, -1, 0), bands])
    path = sharded_ome_zarr(tmp_path / "scan.ome.zarr", data, chunk=128, shard=256)

    from tilex.scan import open_scan

    scan = open_scan(path)
    assert scan.band_names == BAND_NAMES
    (source,) = scan.describe()["inputs"]
    tiling = source["tiling"]
    assert tiling["chunks"] == [1, 128, 128] and tiling["shards"] == [1, 256, 256]
    assert_same_run(run_arrays(path, **FAST), plain_runs(visible16, bands, **FAST))


@pytest.mark.parametrize("fmt", ["lzw-256-pages", "jpeg-512-subifds", "zarr-sharded"])
def test_region_reads_across_file_tiles_equal_the_decoded_image(tmp_path, pixels, fmt):
    """Regions that straddle the files' tiles (or shards) and end inside a partial one."""
    from tilex.readers import open_source

    visible, _ = pixels
    if fmt == "zarr-sharded":
        path = sharded_ome_zarr(
            tmp_path / "v.ome.zarr", np.moveaxis(visible, -1, 0), chunk=128, shard=256
        )
        want = np.moveaxis(visible, -1, 0)
    else:
        compression, tile, layout = fmt.split("-")
        path = pyramid_tiff(
            tmp_path / "v.tif",
            visible,
            tile=int(tile),
            compression=compression,
            subifds=layout == "subifds",
        )
        want = np.moveaxis(level0(path), -1, 0)
    source = open_source(path)
    for y0, y1, x0, x1 in [(0, 600, 0, 700), (250, 263, 250, 520), (500, 600, 511, 700)]:
        np.testing.assert_array_equal(source.read(y0, y1, x0, x1), want[:, y0:y1, x0:x1])
