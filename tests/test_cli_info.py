"""``tilex info``: output, --json, and the bad-input matrix (one line, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from tilex.cli.main import main

H, W = 32, 48
REAL_SCAN = Path(__file__).resolve().parents[2] / "shared" / "data" / "cave-oil-painting"


@pytest.fixture
def folder(tmp_path, write_image):
    """A valid scan folder: visible.tif, ir.tif, uv.png and scan.json."""
    rng = np.random.default_rng(0)
    write_image(
        tmp_path / "visible.tif",
        rng.integers(0, 255, (H, W, 3), dtype=np.uint8),
        "tiff",
        photometric="rgb",
        tile=(16, 16),
        compression="zlib",
    )
    write_image(
        tmp_path / "ir.tif", rng.integers(0, 65535, (H, W), dtype=np.uint16), "tiff", rowsperstrip=8
    )
    write_image(tmp_path / "uv.png", rng.integers(0, 255, (H, W), dtype=np.uint8), "png")
    _manifest(tmp_path)
    return tmp_path


def _manifest(folder: Path, **changes) -> Path:
    data = {
        "visible": "visible.tif",
        "bands": [
            {"name": "ir1000", "file": "ir.tif", "wavelength_nm": 1000},
            {"name": "uv", "file": "uv.png"},
        ],
    }
    data.update(changes)
    path = folder / "scan.json"
    path.write_text(json.dumps(data))
    return path


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_info_manifest(folder):
    result = _invoke("info", str(folder))
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "32 x 48 px" in out and "pixel size unknown" in out
    assert "ir1000" in out and "1000 nm" in out and "uv" in out
    assert "tiles 16x16" in out and "strips of 8 rows" in out and "whole image" in out
    assert "adobe_deflate" in out and "PNG" in out and "uint16" in out


def test_info_json(folder):
    result = _invoke("info", "--json", str(folder / "scan.json"))
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["shape"] == [H, W]
    assert [b["wavelength_nm"] for b in info["bands"]] == [1000, None]
    assert info["inputs"][1]["tiling"] == {"rows_per_strip": 8}


def test_info_visible_and_bands(folder):
    result = _invoke(
        "info",
        "--visible",
        str(folder / "visible.tif"),
        "--band",
        f"ir@1000nm={folder / 'ir.tif'}",
        "--band",
        f"uv={folder / 'uv.png'}",
    )
    assert result.exit_code == 0, result.stderr
    assert "(from --visible/--band)" in result.stdout and "1000 nm" in result.stdout


def test_info_ome_tiff(tmp_path, write_image):
    data = np.zeros((4, H, W), np.uint16)
    path = write_image(
        tmp_path / "s.ome.tif",
        data,
        "tiff",
        ome=True,
        tile=(16, 16),
        metadata={"axes": "CYX", "Channel": {"Name": ["R", "G", "B", "ir_950nm"]}},
    )
    result = _invoke("info", str(path))
    assert result.exit_code == 0, result.stderr
    assert "OME-TIFF" in result.stdout and "950 nm" in result.stdout


@pytest.mark.skipif(not REAL_SCAN.is_dir(), reason="../shared/data/cave-oil-painting is absent")
def test_info_real_scan(tmp_path):
    numbers = range(17, 32, 2)
    manifest = {
        "visible": str(REAL_SCAN / "oil_painting_RGB.bmp"),
        "bands": [
            {
                "name": f"ms{nn}",
                "file": str(REAL_SCAN / f"oil_painting_ms_{nn}.png"),
                "wavelength_nm": 400 + 10 * (nn - 1),
            }
            for nn in numbers
        ],
    }
    (tmp_path / "scan.json").write_text(json.dumps(manifest))
    result = _invoke("info", str(tmp_path / "scan.json"))
    assert result.exit_code == 0, result.stderr
    assert "512 x 512 px" in result.stdout and "bands    8" in result.stdout
    assert "560 nm" in result.stdout and "700 nm" in result.stdout and "BMP" in result.stdout
    info = json.loads(_invoke("info", "--json", str(tmp_path / "scan.json")).stdout)
    assert [i["dtype"] for i in info["inputs"]] == ["uint8"] + ["uint16"] * 8
    assert info["inputs"][0]["channels"] == 3


# ------------------------------------------------------- bad-input matrix


def _truncate(path: Path, keep: int) -> None:
    with open(path, "r+b") as file:
        file.truncate(keep)


def _smash_first_tile(path: Path) -> None:
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(b"\xff" * count)


def _case_missing(d, w):
    return [str(d / "nowhere.json")], "nowhere.json does not exist"


def _case_folder_without_manifest(d, w):
    (d / "empty").mkdir()
    return [str(d / "empty")], "without scan.json"


def _case_bad_json(d, w):
    (d / "scan.json").write_text('{"visible": "visible.tif", "bands": [}')
    return [str(d)], "is not valid JSON"


def _case_missing_key(d, w):
    (d / "scan.json").write_text('{"visible": "visible.tif"}')
    return [str(d)], "lacks required key 'bands'"


def _case_unknown_key(d, w):
    _manifest(d, pixel_size=40)
    return [str(d)], "unknown key 'pixel_size'"


def _case_duplicate_names(d, w):
    _manifest(d, bands=[{"name": "ir", "file": "ir.tif"}, {"name": "ir", "file": "uv.png"}])
    return [str(d)], "names band 'ir' twice"


def _case_zero_bands(d, w):
    _manifest(d, bands=[])
    return [str(d)], "gives 0 bands, expected 1 to 254"


def _case_too_many_bands(d, w):
    _manifest(d, bands=[{"name": f"b{i}", "file": "uv.png"} for i in range(255)])
    return [str(d)], "gives 255 bands, expected 1 to 254"


def _case_size_mismatch(d, w):
    w(d / "small.png", np.zeros((H, W - 1), np.uint8), "png")
    _manifest(d, bands=[{"name": "small", "file": "small.png"}])
    return [str(d)], "band 'small' (" + str(d / "small.png") + ") is 32x47 (HxW) but the visible"


def _case_visible_two_channels(d, w):
    w(d / "la.png", np.zeros((H, W, 2), np.uint8), "png")
    _manifest(d, visible="la.png")
    return [str(d)], "has 2 channels, expected 1 (gray), 3 (RGB) or 4 (RGBA)"


def _case_band_rgb(d, w):
    _manifest(d, visible="uv.png", bands=[{"name": "rgb", "file": "visible.tif"}])
    return [str(d)], "band 'rgb'"


def _case_unsupported_dtype(d, w):
    w(d / "ir.tif", np.zeros((H, W), np.int16), "tiff")
    return [str(d)], "pixel type int16, expected uint8, uint16 or float32"


def _case_nan(d, w):
    data = np.zeros((H, W), np.float32)
    data[3, 4] = np.nan
    w(d / "ir.tif", data, "tiff", tile=(16, 16))
    return [str(d)], "holds NaN or infinity"


def _case_truncated_data(d, w):
    w(d / "ir.tif", np.ones((H, W), np.uint16), "tiff", tile=(16, 16))
    _truncate(d / "ir.tif", (d / "ir.tif").stat().st_size - 100)
    return [str(d)], "is truncated"


def _case_truncated_header(d, w):
    _truncate(d / "ir.tif", 6)
    return [str(d)], "ir.tif is not a readable TIFF"


def _case_corrupt_tile(d, w):
    w(d / "ir.tif", np.ones((H, W), np.uint16), "tiff", tile=(16, 16), compression="zlib")
    _smash_first_tile(d / "ir.tif")
    return [str(d)], "cannot be decoded"


def _case_not_an_image(d, w):
    (d / "ir.tif").write_text("not a tiff at all")
    return [str(d)], "ir.tif is not a TIFF, PNG, BMP, JPEG or Zarr image"


def _case_scan_and_visible(d, w):
    return [str(d), "--visible", str(d / "visible.tif")], "give either SCAN or --visible"


def _case_band_syntax(d, w):
    return [
        "--visible",
        str(d / "visible.tif"),
        "--band",
        str(d / "ir.tif"),
    ], "is not NAME[@NM]=FILE"


def _case_band_wavelength(d, w):
    return [
        "--visible",
        str(d / "visible.tif"),
        "--band",
        f"ir@red={d / 'ir.tif'}",
    ], "wavelength 'red'"


def _case_band_without_visible(d, w):
    return ["--band", f"ir={d / 'ir.tif'}"], "--band needs --visible"


def _case_visible_without_band(d, w):
    return ["--visible", str(d / "visible.tif")], "--visible needs at least one --band"


def _case_nothing(d, w):
    return [], "no scan given"


def _case_missing_band_file(d, w):
    return [
        "--visible",
        str(d / "visible.tif"),
        "--band",
        f"ir={d / 'gone.tif'}",
    ], "gone.tif does not exist"


def _case_float_not_reflectance(d, w):
    w(d / "ir.tif", np.full((H, W), 4000.0, np.float32), "tiff", tile=(16, 16))
    return [str(d)], "band 'ir1000' (" + str(
        d / "ir.tif"
    ) + ") holds float values from 4000 to 4000"


def _case_float_beyond_its_input_range(d, w):
    w(d / "ir.tif", np.full((H, W), 4000.0, np.float32), "tiff", tile=(16, 16))
    return [str(d), "--input-range", "0,255"], "far outside its input range [0, 255]"


def _case_input_range_without_floats(d, w):
    return [str(d), "--input-range", "0,4095"], "no input is float32"


def _case_zarr_three_channels(d, w):
    w(d / "s.zarr", np.zeros((3, H, W), np.uint8), "ome-zarr-0.5")
    return [str(d / "s.zarr")], "has 3 channels; as a whole scan it needs"


CASES = sorted(name for name in globals() if name.startswith("_case_"))


@pytest.mark.parametrize("case", CASES, ids=[c.removeprefix("_case_") for c in CASES])
def test_bad_input_is_one_line_and_exit_2(folder, write_image, case):
    args, expected = globals()[case](folder, write_image)
    result = _invoke("info", *args)
    lines = result.stderr.splitlines()
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("tilex: error: "), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""


@pytest.mark.parametrize("value", ["0", "1,0", "0,nan", "inf,1", "a,b"])
def test_bad_input_range_is_a_usage_error(folder, value):
    result = _invoke("info", str(folder), "--input-range", value)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "--input-range" in result.stderr and "two finite numbers" in result.stderr


def test_info_shows_each_planes_values_and_scaling(folder, write_image, monkeypatch):
    rng = np.random.default_rng(1)
    write_image(folder / "ir.tif", rng.uniform(10, 60000, (H, W)).astype(np.float32), "tiff")
    result = _invoke("info", str(folder), "--input-range", "0,65535")
    assert result.exit_code == 0, result.stderr
    ir = next(line for line in result.stdout.splitlines() if "ir1000" in line)
    assert "0..65535" in ir and "(sampled)" not in ir
    low, high = ir.split()[-1].split("..")
    assert 10 <= float(low) < float(high) <= 60000
    uv = next(line for line in result.stdout.splitlines() if " uv " in line)
    assert uv.split()[-2:] == ["0..255", "-"]  # integers: their type's range, not read
    assert "visible.tif (channels [0, 1, 2]), 0..255 scaled to 0..1" in result.stdout
    from tilex.readers import value_range

    monkeypatch.setattr(value_range, "FINITE_CHECK_AT_OPEN_PX", 0)  # large files are sampled
    result = _invoke("info", str(folder), "--input-range", "0,65535")
    assert "(sampled)" in next(line for line in result.stdout.splitlines() if "ir1000" in line)


def test_bad_input_matrix_is_wide():
    assert len(CASES) >= 12


def test_verbose_shows_traceback(folder):
    result = _invoke("-v", "info", str(folder / "nowhere.json"))
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "MissingFileError" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("tilex: error: ")


def _options(command, ctx):
    """``(where, option)`` for every option of ``command`` and of its subcommands, --help included."""
    import click

    for param in command.get_params(ctx):
        if isinstance(param, click.Option):
            yield ctx.command_path, param
    for name, sub in getattr(command, "commands", {}).items():
        yield from _options(sub, click.Context(sub, info_name=name, parent=ctx))


def test_every_option_has_help():
    """Every option of the ``tilex`` group and of each of its commands says what it does."""
    import click

    options = list(_options(main, click.Context(main, info_name="tilex")))
    where = {path for path, _ in options}
    assert where == {"tilex", *(f"tilex {name}" for name in main.commands)}
    assert set(main.commands) >= {"demo", "synth", "run", "info", "preview", "export", "validate"}
    assert ("tilex", "--version") in {(path, opt.opts[0]) for path, opt in options}
    missing = [
        f"{path} {'/'.join(opt.opts)}" for path, opt in options if not (opt.help or "").strip()
    ]
    assert missing == [], f"options without help: {missing}"
