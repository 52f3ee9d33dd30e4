"""Scan: manifests, parts, multi-channel files, scaling, validation."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tilex.errors import (
    InputRangeError,
    ManifestError,
    MissingFileError,
    NonFiniteError,
    RegistrationError,
    ScanError,
    UnsupportedFormatError,
)
from tilex.readers import value_range
from tilex.scan import Scan, open_scan, parse_band_option

H, W = 40, 56


def _gray(dtype: str = "uint16", seed: int = 0, shape=(H, W)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        return rng.random(shape, dtype=np.float32)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True, dtype=dtype)


@pytest.fixture
def parts(tmp_path, write_image):
    """visible.tif (RGB uint8) + two uint16 bands in tmp_path."""
    rgb = _gray("uint8", 1, (H, W, 3))
    write_image(tmp_path / "visible.tif", rgb, "tiff", photometric="rgb", tile=(16, 16))
    bands = [_gray("uint16", 2), _gray("uint16", 3)]
    write_image(tmp_path / "ir1000.tif", bands[0], "tiff", tile=(16, 16), compression="zlib")
    write_image(tmp_path / "uv.png", bands[1], "png")
    return rgb, bands


def _manifest(folder, **changes) -> dict:
    data = {
        "visible": "visible.tif",
        "bands": [
            {"name": "ir1000", "file": "ir1000.tif", "wavelength_nm": 1000},
            {"name": "uv", "file": "uv.png"},
        ],
        "pixel_size_um": 40,
    }
    data.update(changes)
    (folder / "scan.json").write_text(json.dumps(data))
    return data


def _expect(scan: Scan, rgb: np.ndarray, bands: list[np.ndarray]) -> None:
    visible, read = scan.read_region(0, H, 0, W)
    assert visible.dtype == read.dtype == np.float32
    np.testing.assert_array_equal(visible, np.moveaxis(rgb, -1, 0).astype(np.float32) / 255)
    np.testing.assert_array_equal(read, np.stack(bands).astype(np.float32) / 65535)


def test_manifest_file_and_folder(tmp_path, parts):
    _manifest(tmp_path)
    for source in (tmp_path / "scan.json", tmp_path):
        with open_scan(source) as scan:
            assert scan.shape == (H, W)
            assert scan.n_bands == 2
            assert scan.band_names == ("ir1000", "uv")
            assert scan.wavelengths == (1000.0, None)
            assert scan.pixel_size_um == 40
            _expect(scan, *parts)


def test_manifest_paths_absolute_and_outside_the_folder(tmp_path, parts):
    sub = tmp_path / "manifests"
    sub.mkdir()
    _manifest(
        sub,
        visible=str(tmp_path / "visible.tif"),
        bands=[{"name": "ir1000", "file": "../ir1000.tif"}, {"name": "uv", "file": "../uv.png"}],
    )
    with open_scan(sub / "scan.json") as scan:
        _expect(scan, *parts)
        assert scan.pixel_size_um == 40


def test_pixel_size_argument_overrides(tmp_path, parts):
    _manifest(tmp_path)
    assert open_scan(tmp_path, pixel_size_um=12.5).pixel_size_um == 12.5


def test_parts(tmp_path, parts):
    scan = open_scan(
        visible=tmp_path / "visible.tif",
        bands=[("ir1000", 1000, tmp_path / "ir1000.tif"), ("uv", None, tmp_path / "uv.png")],
    )
    assert scan.wavelengths == (1000.0, None)
    assert scan.origin is None
    _expect(scan, *parts)


def test_region_and_threads(tmp_path, parts):
    rgb, bands = parts
    _manifest(tmp_path)
    scan = open_scan(tmp_path)
    full_visible, full_bands = scan.read_region(0, H, 0, W)
    regions = [(y, y + 13, x, x + 17) for y in range(0, H - 13, 5) for x in range(0, W - 17, 7)]

    def check(region):
        y0, y1, x0, x1 = region
        visible, read = scan.read_region(*region)
        return np.array_equal(visible, full_visible[:, y0:y1, x0:x1]) and np.array_equal(
            read, full_bands[:, y0:y1, x0:x1]
        )

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(check, regions * 4))
    with pytest.raises(ValueError, match="empty or outside the 40x56 scan"):
        scan.read_region(0, H + 1, 0, W)


def test_gray_visible_replicated_rgba_alpha_dropped(tmp_path, write_image):
    gray = _gray("uint8")
    rgba = _gray("uint8", 5, (H, W, 4))
    band = _gray("float32", 6)
    write_image(tmp_path / "gray.png", gray, "png")
    write_image(tmp_path / "rgba.png", rgba, "png")
    write_image(tmp_path / "band.tif", band, "tiff")
    visible, bands = open_scan(
        visible=tmp_path / "gray.png", bands=[("b", None, tmp_path / "band.tif")]
    ).read_region(0, H, 0, W)
    np.testing.assert_array_equal(visible, np.stack([gray] * 3).astype(np.float32) / 255)
    np.testing.assert_array_equal(bands[0], band)  # float32 taken as it is
    visible, _ = open_scan(
        visible=tmp_path / "rgba.png", bands=[("b", None, tmp_path / "band.tif")]
    ).read_region(0, H, 0, W)
    np.testing.assert_array_equal(
        visible, np.moveaxis(rgba[..., :3], -1, 0).astype(np.float32) / 255
    )


def test_gray_visible_file_may_be_a_band_too(tmp_path, write_image):
    write_image(tmp_path / "g.tif", _gray(), "tiff")
    visible, bands = open_scan(
        visible=tmp_path / "g.tif", bands=[("g", None, tmp_path / "g.tif")]
    ).read_region(0, H, 0, W)
    np.testing.assert_array_equal(visible[0], bands[0])


def test_ome_tiff_multichannel(tmp_path, write_image):
    data = np.stack([_gray("uint16", i) for i in range(6)])
    names = ["R", "G", "B", "ir1000", "b_850nm", "uv"]
    path = write_image(
        tmp_path / "scan.ome.tif",
        data,
        "tiff",
        ome=True,
        tile=(16, 16),
        metadata={
            "axes": "CYX",
            "PhysicalSizeX": 25,
            "Channel": {"Name": names, "EmissionWavelength": [None] * 5 + [365]},
        },
    )
    with open_scan(path) as scan:
        assert scan.band_names == ("ir1000", "b_850nm", "uv")
        assert scan.wavelengths == (1000.0, 850.0, 365.0)
        assert scan.pixel_size_um == 25
        visible, bands = scan.read_region(3, 30, 5, 50)
        np.testing.assert_array_equal(visible, data[:3, 3:30, 5:50] / np.float32(65535))
        np.testing.assert_array_equal(bands, data[3:, 3:30, 5:50] / np.float32(65535))
        assert len(scan.describe()["inputs"]) == 1


@pytest.mark.parametrize("fmt", ["ome-zarr-0.4", "ome-zarr-0.5"])
def test_ome_zarr_multichannel(tmp_path, write_image, fmt):
    data = np.stack([_gray("uint8", i) for i in range(5)])
    path = write_image(
        tmp_path / "scan.ome.zarr",
        data,
        fmt,
        chunks=(1, 16, 16),
        labels=["red", "green", "blue", "ir_1200nm", "channel7"],
        pixel_size_um=8,
    )
    with open_scan(path) as scan:
        assert scan.band_names == ("ir_1200nm", "channel7")
        assert scan.wavelengths == (1200.0, None)  # 7 is no plausible wavelength
        assert scan.pixel_size_um == 8
        visible, bands = scan.read_region(0, H, 0, W)
        np.testing.assert_array_equal(bands, data[3:] / np.float32(255))


def test_plain_zarr_multichannel_default_names(tmp_path, write_image):
    data = np.stack([_gray("float32", i) for i in range(4)])
    path = write_image(tmp_path / "scan.zarr", data, "zarr2")
    scan = open_scan(path)
    assert scan.band_names == ("channel3",)
    assert scan.wavelengths == (None,)


def test_describe_is_json(tmp_path, parts):
    _manifest(tmp_path)
    info = open_scan(tmp_path).describe()
    assert json.loads(json.dumps(info)) == info
    assert info["shape"] == [H, W]
    assert [b["name"] for b in info["bands"]] == ["ir1000", "uv"]
    assert [i["format"] for i in info["inputs"]] == ["TIFF", "TIFF", "PNG"]
    assert info["inputs"][1]["tiling"] == {"tile": [16, 16]}
    assert info["inputs"][1]["compression"] == "adobe_deflate"


# ------------------------------------------------------------------ errors


def test_registration_error_names_both_files(tmp_path, parts, write_image):
    write_image(tmp_path / "small.tif", _gray(shape=(H, W - 1)), "tiff")
    with pytest.raises(
        RegistrationError,
        match=r"band 'small' \(.*small.tif\) is 40x55 \(HxW\) but the visible image "
        r"\(.*visible.tif\) is 40x56",
    ):
        open_scan(visible=tmp_path / "visible.tif", bands=[("small", None, tmp_path / "small.tif")])


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"bands": []}, ManifestError, "gives 0 bands, expected 1 to 254"),
        (
            {"bands": [{"name": f"b{i}", "file": "uv.png"} for i in range(255)]},
            ManifestError,
            "gives 255 bands, expected 1 to 254",
        ),
        (
            {"bands": [{"name": "a", "file": "uv.png"}, {"name": "a", "file": "ir1000.tif"}]},
            ManifestError,
            "names band 'a' twice",
        ),
        ({"colour": "yes"}, ManifestError, "unknown key 'colour'; allowed keys are visible, bands"),
        (
            {"bands": [{"name": "a", "file": "uv.png", "nm": 3}]},
            ManifestError,
            r"bands\[0\] has unknown key 'nm'",
        ),
        ({"bands": [{"name": "a"}]}, ManifestError, r"bands\[0\] lacks required key 'file'"),
        ({"bands": "uv.png"}, ManifestError, "'bands' is str, expected a list"),
        (
            {"bands": [{"name": "a", "file": "uv.png", "wavelength_nm": -5}]},
            ManifestError,
            "wavelength_nm is -5, expected a positive number",
        ),
        ({"bands": [{"name": "", "file": "uv.png"}]}, ManifestError, "not a non-empty string"),
        ({"pixel_size_um": "40"}, ManifestError, "pixel_size_um is '40', expected a positive"),
        ({"visible": 3}, ManifestError, "'visible' is 3, expected a file path"),
        ({"visible": "gone.tif"}, MissingFileError, "gone.tif does not exist"),
        (
            {"bands": [{"name": "a", "file": "visible.tif"}]},
            ScanError,
            "a band names the visible image",
        ),
    ],
)
def test_manifest_errors(tmp_path, parts, changes, error, match):
    _manifest(tmp_path, **changes)
    with pytest.raises(error, match=match):
        open_scan(tmp_path)


def test_manifest_missing_key_and_bad_json(tmp_path, parts):
    (tmp_path / "scan.json").write_text('{"visible": "visible.tif"}')
    with pytest.raises(ManifestError, match="lacks required key 'bands'"):
        open_scan(tmp_path / "scan.json")
    (tmp_path / "scan.json").write_text('{"visible": "visible.tif",')
    with pytest.raises(ManifestError, match="is not valid JSON: .* at line 1 column"):
        open_scan(tmp_path / "scan.json")
    (tmp_path / "scan.json").write_text("[1, 2]")
    with pytest.raises(ManifestError, match="is list, expected a JSON object"):
        open_scan(tmp_path / "scan.json")


def test_channel_count_errors(tmp_path, parts, write_image):
    write_image(tmp_path / "la.png", _gray("uint8", 0, (H, W, 2)), "png")
    with pytest.raises(
        UnsupportedFormatError,
        match=r"visible image \(.*la.png\) has 2 channels, "
        r"expected 1 \(gray\), 3 \(RGB\) or 4",
    ):
        open_scan(visible=tmp_path / "la.png", bands=[("uv", None, tmp_path / "uv.png")])
    with pytest.raises(
        UnsupportedFormatError, match=r"band 'rgb' \(.*visible.tif\) has 3 channels"
    ):
        open_scan(visible=tmp_path / "uv.png", bands=[("rgb", None, tmp_path / "visible.tif")])
    write_image(tmp_path / "three.zarr", np.zeros((3, H, W), np.uint8), "zarr3")
    with pytest.raises(ScanError, match="three.zarr has 3 channels; as a whole scan it needs"):
        open_scan(tmp_path / "three.zarr")


def test_source_argument_errors(tmp_path, parts):
    with pytest.raises(ScanError, match="not both"):
        open_scan(tmp_path, visible=tmp_path / "visible.tif")
    with pytest.raises(ScanError, match="no scan given"):
        open_scan()
    with pytest.raises(ScanError, match="comes without bands"):
        open_scan(visible=tmp_path / "visible.tif")
    with pytest.raises(ScanError, match="gives 255 bands"):
        open_scan(
            visible=tmp_path / "visible.tif",
            bands=[(f"b{i}", None, tmp_path / "uv.png") for i in range(255)],
        )
    with pytest.raises(ScanError, match="names band 'x' twice"):
        open_scan(
            visible=tmp_path / "visible.tif",
            bands=[("x", None, tmp_path / "uv.png"), ("x", None, tmp_path / "ir1000.tif")],
        )
    with pytest.raises(MissingFileError, match="holds no|without scan.json"):
        (tmp_path / "empty").mkdir()
        open_scan(tmp_path / "empty")


def test_many_bands_of_one_file_open_it_once(tmp_path, parts):
    scan = open_scan(
        visible=tmp_path / "visible.tif",
        bands=[(f"b{i}", None, tmp_path / "uv.png") for i in range(254)],
    )
    assert scan.n_bands == 254 and len(scan.sources) == 2
    _, bands = scan.read_region(0, 2, 0, 2)
    assert bands.shape == (254, 2, 2)


def test_parse_band_option():
    assert parse_band_option("ir1000@1000=ir.tif") == ("ir1000", 1000.0, "ir.tif")
    assert parse_band_option("ir@850nm=a=b.tif") == ("ir", 850.0, "a=b.tif")
    assert parse_band_option("uv=uv.png") == ("uv", None, "uv.png")
    for text, match in [
        ("ir.tif", "is not NAME"),
        ("=ir.tif", "is not NAME"),
        ("ir=", "is not NAME"),
        ("@800=ir.tif", "has no name"),
        ("ir@abc=ir.tif", "wavelength 'abc'"),
        ("ir@-3=ir.tif", "expected a positive number"),
    ]:
        with pytest.raises(ScanError, match=match):
            parse_band_option(text)


def test_arrays_in_memory_are_a_scan():
    rng = np.random.default_rng(0)
    visible = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)  # channels last
    ir = rng.random((20, 30), dtype=np.float32)
    scan = open_scan(
        visible=visible, bands=[("ir", 1000, ir), ("uv", None, (ir * 65535).astype(np.uint16))]
    )
    v, b = scan.read_region(5, 15, 10, 30)
    np.testing.assert_allclose(
        v, np.moveaxis(visible, -1, 0)[:, 5:15, 10:30] / np.float32(255), rtol=1e-6
    )
    np.testing.assert_array_equal(b[0], ir[5:15, 10:30])
    assert scan.describe()["inputs"][1]["format"] == "array"
    ir[7, 12] = np.nan
    with pytest.raises(NonFiniteError, match=r"<ir> holds NaN"):
        scan.read_region(0, 20, 0, 30)
    with pytest.raises(RegistrationError, match="ir"):
        open_scan(visible=visible, bands=[("ir", None, ir[:10])])


# ------------------------------------------------------------- input ranges


@pytest.fixture
def float_parts(tmp_path, parts, write_image):
    """``parts`` plus ``f16.tif``: float32 values spanning 0..65535 (16-bit data saved as float)."""
    data = (_gray("float32", 4) * 65535).astype(np.float32)
    write_image(tmp_path / "f16.tif", data, "tiff", tile=(16, 16))
    return data


def test_float_values_that_cannot_be_reflectance_are_refused(tmp_path, float_parts):
    _manifest(tmp_path, bands=[{"name": "ir", "file": "f16.tif"}])
    low, high = float(float_parts.min()), float(float_parts.max())
    with pytest.raises(
        InputRangeError,
        match=rf"band 'ir' \(\S*f16.tif\) holds float values from {low:g} to {high:g}, not "
        r'reflectance in \[0, 1\]; give the range they span: "input_range": \[0, 65535\] in the '
        r"manifest, or --input-range 0,65535",
    ):
        open_scan(tmp_path)
    with pytest.raises(
        InputRangeError,
        match=r"f16.tif\) holds float values .* far outside its input "
        r"range \[0, 255\]",
    ):
        open_scan(
            visible=tmp_path / "visible.tif",
            bands=[("ir", None, tmp_path / "f16.tif")],
            input_range=(0, 255),
        )


def test_manifest_input_range_scales_a_float_band(tmp_path, float_parts):
    _manifest(tmp_path, bands=[{"name": "ir", "file": "f16.tif", "input_range": [0, 65535]}])
    scan = open_scan(tmp_path)
    _, bands = scan.read_region(0, H, 0, W)
    np.testing.assert_array_equal(bands[0], float_parts / np.float32(65535))
    band = scan.describe()["bands"][0]
    assert band["input_range"] == [0, 65535]
    assert band["values"] == {
        "min": float(float_parts.min()),
        "max": float(float_parts.max()),
        "sampled": False,
    }


def test_input_range_argument_for_parts_and_offsets(tmp_path, float_parts):
    visible = tmp_path / "visible.tif"
    scan = open_scan(
        visible=visible, bands=[("ir", 1000, tmp_path / "f16.tif")], input_range="-100,65435"
    )
    v, bands = scan.read_region(0, H, 0, W)
    np.testing.assert_allclose(bands[0], (float_parts + 100) / 65535, rtol=1e-6)
    assert v.max() <= 1  # the uint8 visible keeps its type's range
    assert scan.describe()["visible"] | {"path": None} == {
        "path": None,
        "channels": [0, 1, 2],
        "input_range": [0, 255],
        "values": None,
    }


def test_visible_entry_object_with_input_range(tmp_path, parts, write_image):
    rgb = _gray("float32", 5, (H, W, 3)) * 255
    write_image(tmp_path / "visible_f.tif", rgb, "tiff", photometric="rgb", tile=(16, 16))
    _manifest(tmp_path, visible={"file": "visible_f.tif", "input_range": [0, 255]})
    visible, _ = open_scan(tmp_path).read_region(0, H, 0, W)
    np.testing.assert_allclose(visible, np.moveaxis(rgb, -1, 0) / 255, rtol=1e-6)
    _manifest(tmp_path, visible="visible_f.tif")
    with pytest.raises(
        InputRangeError, match=r"the visible image \(\S*visible_f.tif\) holds float values"
    ):
        open_scan(tmp_path)


def test_small_overshoot_and_noise_are_reflectance(tmp_path, write_image):
    data = _gray("float32", 6) * 1.06 - 0.03  # -0.03 .. 1.03: dark subtraction and gain
    write_image(tmp_path / "v.tif", data, "tiff")
    scan = open_scan(visible=tmp_path / "v.tif", bands=[("ir", None, tmp_path / "v.tif")])
    np.testing.assert_array_equal(scan.read_region(0, H, 0, W)[1][0], data)
    write_image(tmp_path / "neg.tif", data - 0.6, "tiff")
    with pytest.raises(
        InputRangeError, match=r"neg.tif\) holds float values from -0.6\d* to .*, not reflectance"
    ):
        open_scan(visible=tmp_path / "v.tif", bands=[("ir", None, tmp_path / "neg.tif")])


def test_large_float_files_are_sampled_and_say_so(tmp_path, float_parts, monkeypatch):
    monkeypatch.setattr(value_range, "FINITE_CHECK_AT_OPEN_PX", 0)
    with pytest.raises(
        InputRangeError, match=r"holds float values from \S+ to \S+ \(sampled\), not"
    ):
        open_scan(visible=tmp_path / "visible.tif", bands=[("ir", None, tmp_path / "f16.tif")])
    scan = open_scan(
        visible=tmp_path / "visible.tif",
        bands=[("ir", None, tmp_path / "f16.tif")],
        input_range=(0, 65535),
    )
    assert scan.describe()["bands"][0]["values"]["sampled"] is True


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (
            {"bands": [{"name": "a", "file": "f16.tif", "input_range": [1, 1]}]},
            r"bands\[0\]: input_range is \[1, 1\], expected two finite numbers LO,HI with LO < HI",
        ),
        (
            {"bands": [{"name": "a", "file": "f16.tif", "input_range": "0,255"}]},
            "input_range is '0,255'",
        ),
        ({"bands": [{"name": "a", "file": "f16.tif", "input_range": [0, None]}]}, "input_range is"),
        (
            {"visible": {"file": "visible.tif", "input_range": [0, float("nan")]}},
            r"visible: input_range is",
        ),
        ({"visible": {"path": "visible.tif"}}, r"visible has unknown key 'path'"),
    ],
)
def test_manifest_input_range_errors(tmp_path, float_parts, changes, match):
    _manifest(tmp_path, **changes)
    with pytest.raises(ManifestError, match=match):
        open_scan(tmp_path)


def test_input_range_is_for_float_images_only(tmp_path, parts):
    _manifest(tmp_path, bands=[{"name": "ir", "file": "ir1000.tif", "input_range": [0, 4095]}])
    with pytest.raises(
        ScanError,
        match=r"band 'ir' \(\S*ir1000.tif\) is uint16, scaled by its type's "
        r"range 0..65535; an input range is for float32 images only",
    ):
        open_scan(tmp_path)
    _manifest(tmp_path)
    with pytest.raises(ScanError, match="input range 0,4095 given, but no input is float32"):
        open_scan(tmp_path, input_range=(0, 4095))
    for bad in ("0", "5,1", "0,inf", (0, 1, 2)):
        with pytest.raises(ScanError, match="expected two finite numbers LO,HI"):
            open_scan(tmp_path, input_range=bad)


def test_input_range_argument_overrides_the_manifest(tmp_path, float_parts):
    _manifest(tmp_path, bands=[{"name": "ir", "file": "f16.tif", "input_range": [0, 255]}])
    with pytest.raises(InputRangeError, match=r"far outside its input range \[0, 255\]"):
        open_scan(tmp_path)
    scan = open_scan(tmp_path, input_range=(0, 65535))
    assert scan.describe()["bands"][0]["input_range"] == [0, 65535]
