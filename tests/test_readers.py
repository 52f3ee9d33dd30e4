"""Plane sources: region reads equal full reads for every format and dtype."""

from __future__ import annotations

import os
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tilex.errors import (
    CorruptFileError,
    MissingFileError,
    NonFiniteError,
    UnsupportedFormatError,
)
from tilex.readers import TiffSource, open_source, value_range

H, W = 70, 90  # not multiples of any tile or chunk size below
REGIONS = [
    (0, H, 0, W),
    (0, 1, 0, 1),
    (H - 1, H, W - 1, W),
    (5, 37, 11, 83),
    (16, 32, 32, 64),  # exactly one 16x32 tile
    (33, 70, 0, 17),
    (69, 70, 0, 90),
]


def _data(dtype: str, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (H, W) if channels == 1 else (H, W, channels)
    if dtype == "float32":
        return rng.standard_normal(shape).astype(np.float32)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True, dtype=dtype)


def _as_chw(data: np.ndarray) -> np.ndarray:
    return data[np.newaxis] if data.ndim == 2 else np.moveaxis(data, -1, 0)


def _check_regions(source, expected: np.ndarray) -> None:
    assert source.read(0, H, 0, W).dtype == expected.dtype
    for y0, y1, x0, x1 in REGIONS:
        got = source.read(y0, y1, x0, x1)
        assert got.shape == (expected.shape[0], y1 - y0, x1 - x0)
        np.testing.assert_array_equal(got, expected[:, y0:y1, x0:x1])


TIFF_CASES = {
    "tiled": {"tile": (16, 32)},
    "striped": {"rowsperstrip": 7},
    "one-strip": {},
    "zlib-tiled": {"tile": (16, 32), "compression": "zlib"},
    "zlib-predictor": {"tile": (16, 32), "compression": "zlib", "predictor": True},
    "zstd-striped": {"rowsperstrip": 9, "compression": "zstd"},
    "lzw-tiled": {"tile": (32, 16), "compression": "lzw"},
    "bigtiff-tiled": {"tile": (16, 32), "bigtiff": True, "compression": "zlib"},
    "bigtiff-striped": {"rowsperstrip": 8, "bigtiff": True},
    "big-endian": {"tile": (16, 16), "byteorder": ">"},
    "tile-larger-than-image": {"tile": (128, 128), "compression": "zstd"},
}


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("case", sorted(TIFF_CASES))
def test_tiff_region_equals_full(tmp_path, write_image, case, dtype):
    data = _data(dtype)
    path = write_image(tmp_path / "band.tif", data, "tiff", **TIFF_CASES[case])
    source = open_source(path)
    assert source.format == ("BigTIFF" if "bigtiff" in case else "TIFF")
    assert (source.shape, source.channels, source.dtype) == ((H, W), 1, np.dtype(dtype))
    _check_regions(source, _as_chw(data))
    source.close()


@pytest.mark.parametrize("planar", ["contig", "separate"])
@pytest.mark.parametrize("layout", [{"tile": (16, 32)}, {"rowsperstrip": 5}])
def test_tiff_rgb_samples_are_channels(tmp_path, write_image, planar, layout):
    data = _data("uint16", 3)
    if planar == "separate":
        path = write_image(
            tmp_path / "rgb.tif",
            np.moveaxis(data, -1, 0),
            "tiff",
            photometric="rgb",
            planarconfig="separate",
            **layout,
        )
    else:
        path = write_image(tmp_path / "rgb.tif", data, "tiff", photometric="rgb", **layout)
    source = open_source(path)
    assert source.channels == 3
    _check_regions(source, _as_chw(data))


def test_tiff_rgba_keeps_four_channels(tmp_path, write_image):
    data = _data("uint8", 4)
    source = open_source(
        write_image(
            tmp_path / "rgba.tif",
            data,
            "tiff",
            photometric="rgb",
            extrasamples=["unassalpha"],
            tile=(16, 16),
        )
    )
    assert source.channels == 4
    _check_regions(source, _as_chw(data))


def test_jpeg_compressed_tiff_regions_match_full(tmp_path, write_image):
    data = _data("uint8", 3)
    path = write_image(
        tmp_path / "rgb.tif", data, "tiff", photometric="rgb", tile=(16, 16), compression="jpeg"
    )
    source = open_source(path)
    _check_regions(source, source.read(0, H, 0, W))
    assert np.abs(source.read(0, H, 0, W).astype(int) - _as_chw(data)).mean() < 80  # lossy


def test_pyramidal_tiff_reads_level0(tmp_path):
    data = _data("uint16")
    path = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(data, tile=(16, 16), subifds=1)
        tif.write(data[::2, ::2], tile=(16, 16), subfiletype=1)
    source = open_source(path)
    assert source.shape == (H, W)
    _check_regions(source, _as_chw(data))


def test_ome_tiff_channels_names_and_pixel_size(tmp_path, write_image):
    data = np.stack([_data("uint16", seed=i) for i in range(5)])
    names = ["R", "G", "B", "ir1000", "uv"]
    path = write_image(
        tmp_path / "scan.ome.tif",
        data,
        "tiff",
        ome=True,
        tile=(16, 32),
        metadata={
            "axes": "CYX",
            "Channel": {"Name": names},
            "PhysicalSizeX": 40,
            "PhysicalSizeY": 40,
        },
    )
    source = open_source(path)
    assert source.format == "OME-TIFF"
    assert source.channels == 5
    assert source.channel_names == tuple(names)
    assert source.pixel_size_um == 40
    _check_regions(source, data)
    assert source.describe()["tiling"] == {"tile": [16, 32]}


ZARR_CASES = {
    "zarr2-yx": ("zarr2", (), {"chunks": (16, 32)}),
    "zarr3-yx": ("zarr3", (), {"chunks": (16, 32)}),
    "zarr3-cyx-named": ("zarr3", (2,), {"chunks": (1, 16, 16), "dimension_names": ("c", "y", "x")}),
    "zarr2-cyx": ("zarr2", (5,), {"chunks": (2, 16, 16)}),
    "zarr2-yxc": ("zarr2", (3,), {"chunks": (16, 16, 3)}),
    "ome-zarr-0.4": ("ome-zarr-0.4", (4,), {"chunks": (1, 16, 32), "labels": list("RGBN")}),
    "ome-zarr-0.5": ("ome-zarr-0.5", (4,), {"chunks": (1, 16, 32), "labels": list("RGBN")}),
}


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("case", sorted(ZARR_CASES))
def test_zarr_region_equals_full(tmp_path, write_image, case, dtype):
    fmt, channel_shape, options = ZARR_CASES[case]
    chw = np.stack([_data(dtype, seed=i) for i in range(channel_shape[0] if channel_shape else 1)])
    data = chw[0] if not channel_shape else np.moveaxis(chw, 0, -1) if case.endswith("yxc") else chw
    path = write_image(tmp_path / "a.zarr", data, fmt, **options)
    source = open_source(path)
    assert source.format == ("OME-Zarr" if fmt.startswith("ome") else "Zarr")
    assert (source.shape, source.channels, source.dtype) == ((H, W), len(chw), np.dtype(dtype))
    if "labels" in options:
        assert source.channel_names == tuple(options["labels"])
    _check_regions(source, chw)


@pytest.mark.parametrize(
    ("chunks", "shards", "layout"),
    [
        ((1, 200, 300), None, "cyx"),
        ((128, 128, 3), None, "yxc"),
        ((1, 64, 64), (1, 256, 256), "cyx"),
    ],
)
def test_zarr_reads_across_cached_blocks_equal_the_array(tmp_path, chunks, shards, layout):
    import zarr

    rng = np.random.default_rng(3)
    chw = rng.integers(0, 65535, (3, 1100, 1300), dtype=np.uint16)
    data = chw if layout == "cyx" else np.moveaxis(chw, 0, -1)
    array = zarr.create_array(
        str(tmp_path / "a.zarr"),
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunks,
        shards=shards,
        dimension_names=tuple(layout),
    )
    array[...] = data
    source = open_source(tmp_path / "a.zarr")
    fetched = []
    fetch = source._fetch
    source._fetch = lambda *args: fetched.append(args[:4]) or fetch(*args)
    for _ in range(40):  # regions anywhere, across block borders, some of them again
        y0, x0 = int(rng.integers(0, 1000)), int(rng.integers(0, 1200))
        y1, x1 = y0 + int(rng.integers(1, 1100 - y0 + 1)), x0 + int(rng.integers(1, 1300 - x0 + 1))
        np.testing.assert_array_equal(source.read(y0, y1, x0, x1), chw[:, y0:y1, x0:x1])
    assert len(fetched) == len(set(fetched))  # every block read from the store once
    assert len(fetched) <= len(range(0, 1100, source._block[0])) * len(
        range(0, 1300, source._block[1])
    )


def test_zarr_chunks_too_large_to_keep_are_read_as_before(tmp_path, monkeypatch):
    import zarr

    from tilex.readers import zarr as zarr_reader

    monkeypatch.setattr(zarr_reader, "CHUNK_CACHE_PIXELS", 1000)  # no block fits
    data = np.arange(300 * 400, dtype=np.uint16).reshape(300, 400)
    zarr.create_array(str(tmp_path / "b.zarr"), data=data, chunks=(128, 128))
    source = open_source(tmp_path / "b.zarr")
    np.testing.assert_array_equal(source.read(10, 290, 5, 390), data[None, 10:290, 5:390])
    assert len(source._cache) == 0


def test_ome_zarr_5d_level0_and_pixel_size(tmp_path, write_image):
    chw = np.stack([_data("uint16", seed=i) for i in range(4)])
    path = write_image(
        tmp_path / "a.ome.zarr",
        chw[np.newaxis, :, np.newaxis],
        "ome-zarr-0.5",
        axes="tczyx",
        chunks=(1, 1, 1, 32, 32),
        pixel_size_um=12.5,
    )
    source = open_source(path)
    assert source.channels == 4 and source.pixel_size_um == 12.5
    _check_regions(source, chw)


def test_ome_zarr_refuses_time_series(tmp_path, write_image):
    data = np.zeros((2, 3, H, W), np.uint8)
    path = write_image(tmp_path / "t.ome.zarr", data, "ome-zarr-0.4", axes="tcyx")
    with pytest.raises(UnsupportedFormatError, match=r"axis 't' of size 2"):
        open_source(path)


@pytest.mark.parametrize(
    ("fmt", "dtype", "channels"),
    [
        ("png", "uint8", 1),
        ("png", "uint8", 3),
        ("png", "uint8", 4),
        ("png", "uint16", 1),
        ("bmp", "uint8", 3),
        ("bmp", "uint8", 1),
    ],
)
def test_lossless_small_images(tmp_path, write_image, fmt, dtype, channels):
    data = _data(dtype, channels)
    source = open_source(write_image(tmp_path / f"image.{fmt}", data, fmt))
    assert source.format == fmt.upper() and source.dtype == np.dtype(dtype)
    _check_regions(source, _as_chw(data))


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_regions_match_full(tmp_path, write_image, channels):
    data = _data("uint8", channels)
    source = open_source(write_image(tmp_path / "image.jpg", data, "jpeg", quality=95))
    assert source.format == "JPEG" and source.channels == channels
    _check_regions(source, source.read(0, H, 0, W))


# ----------------------------------------------------------------- laziness


def test_read_touches_only_overlapping_tiles(tmp_path, write_image, monkeypatch):
    path = write_image(tmp_path / "band.tif", _data("uint16"), "tiff", tile=(16, 32))
    source = open_source(path)
    calls = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: calls.append(off) or real(fd, n, off))
    source.read(20, 40, 40, 70)  # rows 1-2, columns 1-2 of the 16x32 tile grid
    assert len(calls) == 4
    calls.clear()
    source.read(48, 64, 64, 90)  # row 3, column 2: one tile no read decoded before
    assert len(calls) == 1


def test_a_segment_read_again_is_not_decoded_again(tmp_path, write_image, monkeypatch):
    data = _data("uint16")
    path = write_image(tmp_path / "band.tif", data, "tiff", tile=(16, 32))
    source = open_source(path)
    calls = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: calls.append(off) or real(fd, n, off))
    first = source.read(20, 40, 40, 70)
    again = source.read(16, 32, 32, 64)  # one of the four tiles the first read decoded
    assert len(calls) == 4
    np.testing.assert_array_equal(first, data[20:40, 40:70][None])
    np.testing.assert_array_equal(again, data[16:32, 32:64][None])
    again[...] = 0  # a read returns its own array: the cached segment is untouched
    np.testing.assert_array_equal(source.read(16, 32, 32, 64), data[16:32, 32:64][None])


def test_the_segment_cache_keeps_at_most_its_limit(tmp_path, write_image, monkeypatch):
    from tilex.readers import tiff

    data = _data("uint16")
    path = write_image(tmp_path / "band.tif", data, "tiff", tile=(16, 16))
    monkeypatch.setattr(tiff, "SEGMENT_CACHE", 3)
    source = open_source(path)
    np.testing.assert_array_equal(source.read(0, data.shape[0], 0, data.shape[1]), data[None])
    assert len(source._cache) == 3
    assert source._cache.nbytes == 3 * 16 * 16 * 2
    source.close()
    assert not source._cache


@pytest.fixture(scope="module")
def huge_tiff(tmp_path_factory):
    """A 30000x30000 uint16 BigTIFF, tiled 512, each tile constant = its index."""
    size, tile = 30000, 512
    per_row = -(-size // tile)
    path = tmp_path_factory.mktemp("huge") / "huge.tif"
    tiles = (np.full((tile, tile), i, np.uint16) for i in range(per_row * per_row))
    tifffile.imwrite(
        path,
        tiles,
        shape=(size, size),
        dtype="uint16",
        tile=(tile, tile),
        compression="zlib",
        compressionargs={"level": 1},
        bigtiff=True,
    )
    return path, per_row


def test_region_of_huge_bigtiff_is_lazy(huge_tiff):
    path, per_row = huge_tiff
    assert path.stat().st_size < 64 * 2**20
    tracemalloc.start()
    try:
        start = time.perf_counter()
        source = open_source(path)
        region = source.read(20000, 20512, 10000, 10512)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.5, f"open + 512x512 read took {elapsed:.2f} s"
    assert peak < 32 * 2**20, f"open + 512x512 read peaked at {peak / 2**20:.1f} MB"
    ty, tx = 20000 // 512, 10000 // 512
    assert region[0, 0, 0] == ty * per_row + tx
    assert region[0, -1, -1] == (ty + 1) * per_row + tx + 1
    assert source.describe()["format"] == "BigTIFF"


def test_concurrent_reads_from_threads(tmp_path, write_image):
    data = _data("uint16", 3)
    tiff = open_source(
        write_image(
            tmp_path / "a.tif", data, "tiff", photometric="rgb", tile=(16, 16), compression="zlib"
        )
    )
    zarr_src = open_source(
        write_image(tmp_path / "a.zarr", np.moveaxis(data, -1, 0), "zarr3", chunks=(1, 16, 16))
    )
    expected = _as_chw(data)
    rng = np.random.default_rng(1)
    jobs = []
    for _ in range(200):
        y0, x0 = int(rng.integers(0, H - 1)), int(rng.integers(0, W - 1))
        jobs.append((y0, int(rng.integers(y0 + 1, H + 1)), x0, int(rng.integers(x0 + 1, W + 1))))

    def check(job):
        y0, y1, x0, x1 = job
        want = expected[:, y0:y1, x0:x1]
        return all(np.array_equal(src.read(*job), want) for src in (tiff, zarr_src))

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(check, jobs))


@pytest.fixture(scope="module")
def tiled_for_hypothesis(tmp_path_factory):
    data = _data("float32", 3)
    path = tmp_path_factory.mktemp("hyp") / "a.tif"
    tifffile.imwrite(
        path,
        np.moveaxis(data, -1, 0),
        photometric="rgb",
        planarconfig="separate",
        tile=(16, 48),
        compression="zstd",
    )
    return open_source(path), _as_chw(data)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_any_region_equals_full(tiled_for_hypothesis, data):
    source, expected = tiled_for_hypothesis
    y0 = data.draw(st.integers(0, H - 1))
    y1 = data.draw(st.integers(y0 + 1, H))
    x0 = data.draw(st.integers(0, W - 1))
    x1 = data.draw(st.integers(x0 + 1, W))
    np.testing.assert_array_equal(source.read(y0, y1, x0, x1), expected[:, y0:y1, x0:x1])


# ------------------------------------------------------------------- errors


def test_missing_and_not_an_image(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        open_source(tmp_path / "nope.tif")
    (tmp_path / "notes.tif").write_text("hello")
    with pytest.raises(UnsupportedFormatError, match=r"notes.tif is not a TIFF"):
        open_source(tmp_path / "notes.tif")
    (tmp_path / "folder").mkdir()
    with pytest.raises(UnsupportedFormatError, match="without Zarr metadata"):
        open_source(tmp_path / "folder")


@pytest.mark.parametrize("dtype", ["int16", "float64", "uint32"])
def test_unsupported_dtype(tmp_path, write_image, dtype):
    path = write_image(tmp_path / "b.tif", np.zeros((8, 8), dtype), "tiff")
    with pytest.raises(UnsupportedFormatError, match=f"b.tif has pixel type {dtype}, expected"):
        open_source(path)


def test_unsupported_zarr_dtype(tmp_path, write_image):
    path = write_image(tmp_path / "b.zarr", np.zeros((8, 8), "int32"), "zarr3")
    with pytest.raises(UnsupportedFormatError, match="pixel type int32"):
        open_source(path)


def test_truncated_tiff_fails_at_open(tmp_path, write_image):
    path = write_image(tmp_path / "b.tif", _data("uint16"), "tiff", tile=(16, 16))
    size = path.stat().st_size
    with open(path, "r+b") as file:  # header first, pixel data after (tifffile writes it so)
        file.truncate(size - 1000)
    with pytest.raises(CorruptFileError, match=r"b.tif is truncated: a tile/strip ends at byte"):
        open_source(path)


def test_corrupt_tile_fails_when_read(tmp_path, write_image):
    path = write_image(
        tmp_path / "b.tif", _data("uint16"), "tiff", tile=(16, 16), compression="zlib"
    )
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[-1], tif.pages[0].databytecounts[-1]
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(b"\0" * count)
    source = open_source(path)  # the probe decodes tile 0 only
    source.read(0, 16, 0, 16)
    with pytest.raises(
        CorruptFileError,
        match=r"reading rows 65:70, columns 85:90 of \S*b.tif failed: the file's tile at "
        r"rows 64:70, columns 80:90 \(byte \d+\) cannot be decoded \(DeflateError",
    ):
        source.read(H - 5, H, W - 5, W)


def test_corrupt_strip_names_its_rows(tmp_path, write_image):
    path = write_image(
        tmp_path / "s.tif", _data("uint16"), "tiff", rowsperstrip=8, compression="zlib"
    )
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[2], tif.pages[0].databytecounts[2]
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(b"\0" * count)
    with pytest.raises(
        CorruptFileError,
        match=r"rows 10:30, columns 0:5 of \S*s.tif failed: the file's strip of rows 16:24 ",
    ):
        open_source(path).read(10, 30, 0, 5)


def test_corrupt_first_tile_fails_at_open(tmp_path, write_image):
    path = write_image(
        tmp_path / "b.tif", _data("uint16"), "tiff", tile=(16, 16), compression="zstd"
    )
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(b"\xff" * count)
    with pytest.raises(CorruptFileError, match="cannot be decoded"):
        open_source(path)


def test_truncated_png(tmp_path, write_image):
    path = write_image(tmp_path / "b.png", _data("uint8"), "png")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptFileError, match="b.png is a truncated or corrupt PNG"):
        open_source(path)


def test_palette_tiff_refused(tmp_path, write_image):
    path = write_image(
        tmp_path / "p.tif",
        np.zeros((8, 8), np.uint8),
        "tiff",
        photometric="palette",
        colormap=np.zeros((3, 256), np.uint16),
    )
    with pytest.raises(UnsupportedFormatError, match="PALETTE"):
        open_source(path)


def test_non_finite_float_refused_at_open(tmp_path, write_image):
    data = _data("float32")
    data[40, 50] = np.nan
    path = write_image(tmp_path / "f.tif", data, "tiff", tile=(16, 16))
    with pytest.raises(NonFiniteError, match=r"f.tif holds NaN or infinity"):
        open_source(path)


def test_non_finite_large_float_refused_when_read(tmp_path, write_image, monkeypatch):
    monkeypatch.setattr(value_range, "FINITE_CHECK_AT_OPEN_PX", 0)  # "large": not checked at open
    monkeypatch.setattr(
        value_range, "RANGE_LATTICE", 2
    )  # its value range: 4 regions, none at (40, 50)
    data = _data("float32", 2)
    data[40, 50, 1] = np.inf
    path = write_image(tmp_path / "f.zarr", np.moveaxis(data, -1, 0), "zarr2")
    source = open_source(path)
    assert source.read(0, 40, 0, W).shape == (2, 40, W)
    with pytest.raises(
        NonFiniteError, match=r"f.zarr holds NaN or infinity in rows 32:48, columns 48:64"
    ):
        source.read(32, 48, 48, 64)


def test_region_outside_is_value_error(tmp_path, write_image):
    source = open_source(write_image(tmp_path / "a.tif", _data("uint8"), "tiff"))
    for region in [(0, 0, 0, 1), (0, H + 1, 0, W), (-1, 3, 0, 3), (0, 3, 5, 4)]:
        with pytest.raises(ValueError, match="empty or outside"):
            source.read(*region)


def test_tiff_source_closes_its_descriptor(tmp_path, write_image):
    source = TiffSource(write_image(tmp_path / "a.tif", _data("uint8"), "tiff"))
    fd = source._fd
    source.close()
    source.close()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_describe_is_json_able(tmp_path, write_image):
    import json

    for path in [
        write_image(tmp_path / "a.tif", _data("uint16"), "tiff", rowsperstrip=8, compression="lzw"),
        write_image(tmp_path / "a.zarr", _data("uint8"), "zarr3", chunks=(32, 32)),
        write_image(tmp_path / "a.png", _data("uint8"), "png"),
    ]:
        info = open_source(path).describe()
        json.dumps(info)
        assert {"path", "format", "dtype", "shape", "channels", "tiling", "compression"} <= set(
            info
        )
    assert open_source(tmp_path / "a.tif").describe()["tiling"] == {"rows_per_strip": 8}
    assert open_source(tmp_path / "a.tif").describe()["compression"] == "lzw"
    assert open_source(tmp_path / "a.zarr").describe()["tiling"]["chunks"] == [32, 32]


def test_corrupt_zarr_chunk_fails_when_read(tmp_path, write_image):
    path = write_image(tmp_path / "b.zarr", _data("uint16"), "zarr3", chunks=(32, 32))
    chunk = path / "c" / "0" / "0"
    chunk.write_bytes(b"garbage" * 10)
    source = open_source(path)
    with pytest.raises(
        CorruptFileError, match=r"reading rows 0:10, columns 0:10 of \S*b.zarr failed: its chunks"
    ):
        source.read(0, 10, 0, 10)
    chunk.unlink()  # a missing chunk is the fill value, as Zarr defines
    assert (source.read(0, 10, 0, 10) == 0).all()


# ------------------------------------------------------------- value range


def test_value_range_of_a_small_float_file_is_exact(tmp_path, write_image):
    data = _data("float32", 2)
    source = open_source(write_image(tmp_path / "f.zarr", np.moveaxis(data, -1, 0), "zarr2"))
    values = source.value_range()
    assert values == value_range.ValueRange(
        tuple(float(v) for v in data.min(axis=(0, 1))),
        tuple(float(v) for v in data.max(axis=(0, 1))),
        sampled=False,
    )
    assert (
        open_source(write_image(tmp_path / "i.tif", _data("uint16"), "tiff")).value_range() is None
    )


def test_value_range_of_a_large_float_file_is_sampled(tmp_path, write_image, monkeypatch):
    monkeypatch.setattr(value_range, "FINITE_CHECK_AT_OPEN_PX", 0)  # every file counts as large
    data = _data("float32")
    source = open_source(write_image(tmp_path / "f.tif", data, "tiff", tile=(16, 16)))
    reads = []
    monkeypatch.setattr(source, "read", lambda *region: reads.append(region) or data[None, :1, :1])
    values = value_range.measure_range(source)
    assert values.sampled and len(reads) == value_range.RANGE_LATTICE**2
    assert all(y1 - y0 <= 16 and x1 - x0 <= 16 for y0, y1, x0, x1 in reads)


@pytest.fixture(scope="module")
def large_float_tiff(tmp_path_factory):
    """A 8704x8704 float32 BigTIFF (76 Mpx: sampled at open), tiled 512, tile i holding i."""
    size, tile = 8704, 512
    per_row = size // tile
    path = tmp_path_factory.mktemp("large") / "large.tif"
    tiles = (np.full((tile, tile), i, np.float32) for i in range(per_row * per_row))
    tifffile.imwrite(
        path,
        tiles,
        shape=(size, size),
        dtype="float32",
        tile=(tile, tile),
        compression="zlib",
        compressionargs={"level": 1},
        bigtiff=True,
    )
    return path, per_row


def test_opening_a_large_float_file_decodes_a_lattice_only(large_float_tiff, monkeypatch):
    path, per_row = large_float_tiff
    decoded = []
    segment = TiffSource._segment
    monkeypatch.setattr(
        TiffSource, "_segment", lambda self, p, i, w: decoded.append(i) or segment(self, p, i, w)
    )
    start = time.perf_counter()
    values = open_source(path).value_range()
    assert time.perf_counter() - start < 5
    assert values.sampled and len(set(decoded)) <= value_range.RANGE_LATTICE**2 + 1  # + the probe
    assert 0 <= values.lo[0] < values.hi[0] <= per_row * per_row - 1
