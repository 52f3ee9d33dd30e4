"""``tilex run``, ``tilex demo`` and the group options, end to end on small scans."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from tilex.cli.main import main

import tilex
from tilex.metrics import roc_auc
from tilex.omezarr import open_output
from tilex.synthetic import MASK_FILE
from tilex.validate import VALIDATORS


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    return tilex.synth(tmp_path_factory.mktemp("scan") / "scan", size=(200, 150), bands=3, seed=5)


def one_error_line(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tilex: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_version_and_help():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"tilex {tilex.__version__}"
    result = invoke("--help")
    for name in ("demo", "synth", "run", "info", "preview", "export", "validate"):
        assert name in result.stdout
    for name in ("demo", "synth", "run", "info", "preview", "export", "validate"):
        sub = invoke(name, "--help")
        assert sub.exit_code == 0 and "Usage" in sub.stdout


def test_run_writes_a_complete_valid_output(scan, tmp_path):
    out = tmp_path / "out"
    result = invoke("-q", "run", scan, "-o", out, "--device", "cpu", "--tile", "64")
    assert result.exit_code == 0, result.stderr
    assert "wrote" in result.stdout and "Mpx/s" in result.stdout
    meta = json.loads((out / "tilex.json").read_text())
    assert meta["state"] == "complete"
    # what was found, from the units' summaries, agrees with the arrays written
    winner = open_output(out)["winner"].levels[0][...]
    found = meta["found"]
    assert found["flagged_fraction"] == (winner > 0).mean()
    assert [b["pixels"] for b in found["bands"]] == [int((winner == i + 1).sum()) for i in range(3)]
    assert sum(found["score_histogram"]["counts"]) == int((winner > 0).sum())
    assert f"flagged {found['flagged_fraction']:.1%} of the scan" in result.stdout
    assert meta["parameters"]["halo"] == 7 and meta["parameters"]["tile"] == 64  # 6 + 1
    assert len(meta["stats"]["lo"]) == 3
    # level 0 on disk equals the engine's in-memory result
    memory = tilex.run(scan, None, device="cpu", tile=64).sink
    output = open_output(out)
    np.testing.assert_array_equal(output["winner"].levels[0][...], memory.winner)
    np.testing.assert_array_equal(output["score"].levels[0][0], memory.score)
    np.testing.assert_array_equal(output["overlay"].levels[0][...], memory.overlay)
    checked = invoke("validate", out)
    assert checked.exit_code == 0, checked.stdout + checked.stderr


def test_run_refuses_existing_output(scan, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "something").write_text("keep me")
    one_error_line(invoke("run", scan, "-o", out, "--device", "cpu"), str(out), "--overwrite")
    assert (out / "something").read_text() == "keep me"


def test_stats_from_reuses_statistics(scan, tmp_path):
    first = tilex.run(scan, tmp_path / "a", device="cpu", tile=64)
    result = invoke(
        "-q", "run", scan, "-o", tmp_path / "b", "--device", "cpu", "--stats-from", tmp_path / "a"
    )
    assert result.exit_code == 0, result.stderr
    meta = json.loads((tmp_path / "b" / "tilex.json").read_text())
    assert meta["stats"]["lo"] == list(first.stats.lo) and meta["stats"]["hi"] == list(
        first.stats.hi
    )


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--clip", "5"], ["--clip"]),
        (["--clip", "90,10"], ["--clip"]),
        (["--stats-sample", "0"], ["--stats-sample"]),
        (["--tile", "8"], ["--tile", ">= 16"]),
        (["--threshold", "2"], ["--threshold"]),
        (["--threshold", "nan"], ["--threshold must be a number in [0, 1], got nan"]),
        (["--threshold", "inf"], ["--threshold"]),
        (["--stats-sample", "nan"], ["--stats-sample", "got nan"]),
        (["--stats-sample", "inf"], ["--stats-sample"]),
        (["--unit", "100"], ["--unit", "multiple of 16"]),
        (
            ["--unit", "4096", "--chunk", "1536"],
            ["--unit 4096 px must be a multiple of --chunk 1536 px"],
        ),
        (["--workers", "0"], ["--workers"]),
        (["--workers", "2", "--scheduler", "tcp://x:1"], ["not both"]),
        (["--resume", "--overwrite"], ["not both"]),
        (["--overlap", "8"], ["only used with --blend feather"]),
        (["--blend", "feather", "--overlap", "300"], ["more than half the tile"]),
        (["--clip", "nan,99"], ["--clip"]),
        (["--clip", "1,inf"], ["--clip"]),
        (["--input-range", "0,nan"], ["--input-range", "two finite numbers"]),
        (["--device", "tpu"], ["tpu"]),
        (["--device", "cuda:3"], ["cuda:3", "--device cpu"]),
        (["--precision", "fp16", "--device", "cpu"], ["fp16"]),
        (["--blend", "feather"], ["--overlap"]),
    ],
)
def test_run_bad_options(scan, tmp_path, args, fragments):
    """Every rule lives in the run plan: one ``tilex: error:`` line naming the option, exit 2."""
    result = invoke("run", scan, "-o", tmp_path / "out", *args)
    one_error_line(result, *fragments)
    assert not (tmp_path / "out" / "tilex.json").exists()


def test_run_bad_weights_and_stats_source(scan, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    one_error_line(
        invoke("run", scan, "-o", tmp_path / "o1", "--device", "cpu", "--weights", bad),
        "bad.safetensors",
    )
    one_error_line(
        invoke("run", scan, "-o", tmp_path / "o2", "--device", "cpu", "--stats-from", tmp_path),
        "tilex.json",
    )
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_weights_by_name_and_a_missing_file(scan, tmp_path):
    from tilex.encoder import designed_network, weights_sha256

    shas = {}
    for name in ("trained", "designed"):
        out = tmp_path / name
        args = ["-q", "run", scan, "-o", out, "--device", "cpu", "--weights", name]
        assert invoke(*args).exit_code == 0
        weights = json.loads((out / "tilex.json").read_text())["weights"]
        assert weights["path"] == name
        shas[name] = weights["sha256"]
    assert shas["designed"] == weights_sha256(designed_network()) != shas["trained"]
    default = tmp_path / "default"
    assert invoke("-q", "run", scan, "-o", default, "--device", "cpu").exit_code == 0
    meta = json.loads((default / "tilex.json").read_text())
    assert meta["weights"] == {"path": "trained", "sha256": shas["trained"]}
    missing = tmp_path / "nowhere.safetensors"
    one_error_line(
        invoke("run", scan, "-o", tmp_path / "o3", "--device", "cpu", "--weights", missing),
        "nowhere.safetensors",
        "does not exist",
    )
    assert not (tmp_path / "o3").exists()


def test_run_missing_scan(tmp_path):
    one_error_line(invoke("run", tmp_path / "nowhere.json", "-o", tmp_path / "out"), "nowhere.json")


def test_pipeline_reveals_the_hidden_figure(tmp_path):
    manifest = tilex.synth(tmp_path / "scan", size=(256, 256), bands=8, seed=1)
    import tifffile

    mask = tifffile.imread(manifest.parent / MASK_FILE)
    sink = tilex.run(manifest, None, device="cpu", tile=128).sink
    assert roc_auc(sink.score, mask) >= 0.93


def test_demo_in_a_subprocess(tmp_path):
    out = tmp_path / "demo"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tilex.cli",
            "demo",
            str(out),
            "--size",
            "160x200",
            "--bands",
            "3",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "preview.png" in run.stdout and "napari" in run.stdout
    # Every validator must run and pass, none skipped: the dev extra installs the package of
    # each (ome-zarr-models, ngff-zarr + jsonschema, yaozarrs, napari + napari-ome-zarr), so a
    # skip here means an incomplete dev environment, and "none failed" alone would pass even
    # if every one of them were skipped.
    results = tilex.validate_output(out / "result")
    assert [r.name for r in results] == list(VALIDATORS), results
    assert [r for r in results if r.skipped or not r.ok] == [], "\n".join(map(str, results))
    picture = np.asarray(Image.open(out / "preview.png").convert("L"), dtype=np.float32)
    assert picture.std() > 10, "the preview is blank"
    again = subprocess.run(
        [sys.executable, "-m", "tilex.cli", "demo", str(out)], capture_output=True, text=True
    )
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_demo_overwrite_never_deletes_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    one_error_line(
        invoke("demo", tmp_path, "--overwrite", "--device", "cpu"), "not a tilex demo folder"
    )
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_unwritable_output_is_one_line(scan, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should go")
    one_error_line(
        invoke("run", scan, "-o", blocker / "out", "--device", "cpu"), str(blocker / "out")
    )


def _state(out: Path) -> str:
    return json.loads((out / "tilex.json").read_text())["state"]


@pytest.mark.parametrize(
    "named", [False, True], ids=["write-without-filename", "open-with-filename"]
)
def test_disk_full_is_one_line_naming_the_path_and_marks_failed(scan, tmp_path, monkeypatch, named):
    import errno

    from zarr.storage import _local

    put = _local._put

    def full(path, value, exclusive=False):
        if "/c/" not in path.as_posix():  # metadata fits; the first chunk does not
            return put(path, value, exclusive=exclusive)
        raise OSError(errno.ENOSPC, "No space left on device", *([str(path)] if named else []))

    monkeypatch.setattr(_local, "_put", full)
    out = tmp_path / "out"
    result = invoke(
        "-q",
        "run",
        scan,
        "-o",
        out,
        "--device",
        "cpu",
        "--tile",
        "64",
        "--unit",
        "128",
        "--chunk",
        "64",
    )
    where = str(out / "collage.ome.zarr" / "0") + ("/c/" if named else ":")
    one_error_line(result, where, "No space left on device")
    assert _state(out) == "failed"


def _corrupt_tile_scan(folder: Path) -> Path:
    """A 192x192 scan in 64 px tiles whose first band has its middle tile damaged."""
    import tifffile

    manifest = tilex.synth(folder, size=(192, 192), bands=2, seed=5, tile=64)
    band = folder / json.loads(manifest.read_text())["bands"][0]["file"]
    with tifffile.TiffFile(band) as tif:
        offset, count = tif.pages[0].dataoffsets[4], tif.pages[0].databytecounts[4]
    with open(band, "r+b") as file:
        file.seek(offset)
        file.write(b"\xff" * count)
    return manifest


@pytest.mark.parametrize(
    ("options", "stage"),
    [
        (["--calibrate", "none"], "statistics pass: reading rows 58:134, columns 58:134 of "),
        (
            ["--calibrate", "none", "--norm", "pixel"],
            "fusing tiles: reading rows 0:70, columns 0:70 of ",
        ),
        ([], "calibration: reading rows 64:128, columns 64:128 of "),
    ],
)
def test_corrupt_tile_met_mid_run_names_the_file_and_marks_failed(tmp_path, options, stage):
    manifest = _corrupt_tile_scan(tmp_path / "scan")
    out = tmp_path / "out"
    result = invoke("-q", "run", manifest, "-o", out, "--device", "cpu", "--tile", "64", *options)
    one_error_line(
        result,
        stage + str(tmp_path / "scan" / "uv365.tif") + " failed: the file's tile at "
        "rows 64:128, columns 64:128",
        "cannot be decoded",
    )
    if options:
        assert _state(out) == "failed"
    else:  # the calibration is fitted before OUT is laid out: nothing there looks complete
        assert not (out / "tilex.json").exists() or _state(out) != "complete"


def test_float_scan_in_16_bit_values_needs_its_input_range(tmp_path, write_image):
    rng = np.random.default_rng(0)
    visible = write_image(
        tmp_path / "v.tif",
        rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
        "tiff",
        photometric="rgb",
    )
    band = write_image(
        tmp_path / "ir.tif", rng.uniform(0, 65535, (64, 64)).astype(np.float32), "tiff"
    )
    args = ["-q", "run", "--visible", visible, "--band", f"ir@1000={band}", "--device", "cpu"]
    one_error_line(
        invoke(*args, "-o", tmp_path / "a"),
        str(band),
        "not reflectance in [0, 1]",
        "--input-range 0,65535",
    )
    assert not (tmp_path / "a").exists()
    result = invoke(*args, "-o", tmp_path / "b", "--input-range", "0,65535")
    assert result.exit_code == 0, result.stderr
    meta = json.loads((tmp_path / "b" / "tilex.json").read_text())
    assert meta["state"] == "complete" and meta["scan"]["bands"][0]["input_range"] == [0, 65535]
