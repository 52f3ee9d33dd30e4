"""Nothing lost: a `tilex run` killed with SIGKILL at any moment resumes to the same bytes.

Each case runs the real command line in a subprocess with a failpoint
(``TILEX_FAILPOINT``, see :mod:`tilex.testing`) that SIGKILLs it during the
statistics pass, early or midway through the level-0 units, or while a
pyramid level is written; ``--resume`` then finishes it, and every level of
every image must equal an uninterrupted run's, byte for byte.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tilex.cli.main import main

import tilex
from tilex.errors import OutputError, PlanError, ResumeMismatchError
from tilex.omezarr import open_output
from tilex.testing import FAILPOINT_ENV

SHAPE = (320, 288)  # 3 x 3 level-0 units of 128 px; levels 320, 160, 80, 40 px
LAYOUT = {"tile": 128, "unit": 128, "chunk": 64}
OPTIONS = ["--device", "cpu", "--tile", "128", "--unit", "128", "--chunk", "64"]


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    return tilex.synth(tmp_path_factory.mktemp("scan") / "scan", size=SHAPE, bands=3, seed=11)


@pytest.fixture(scope="module")
def reference(scan, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "OUT"
    tilex.run(scan, out, device="cpu", **LAYOUT)
    return out


def tilex_cli(*args: object, failpoint: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != FAILPOINT_ENV}
    if failpoint:
        env[FAILPOINT_ENV] = failpoint
    command = [
        sys.executable,
        "-c",
        "from tilex.cli.main import main; main()",
        "-q",
        *map(str, args),
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def manifest_of(out: Path) -> dict:
    return json.loads((out / "tilex.json").read_text())


def state(out: Path) -> str:
    return json.loads((out / "tilex.json").read_text())["state"]


def assert_same_arrays(a: Path, b: Path) -> None:
    one, two = open_output(a), open_output(b)
    assert sorted(one.images) == sorted(two.images)
    for name in one.images:
        assert len(one[name].levels) == len(two[name].levels) == 4
        for k, (x, y) in enumerate(zip(one[name].levels, two[name].levels, strict=True)):
            assert np.array_equal(x[...], y[...]), f"{name} level {k} differs"
        assert one[name].attrs.get("omero") == two[name].attrs.get("omero"), name


def level0_shards(out: Path, journaled: set[str]) -> dict[Path, int]:
    """mtime of the level-0 score shards of the units the journal holds."""
    found = {}
    for marker in journaled:
        _, uy, ux = marker.split("-")
        shard = out / "score.ome.zarr" / "0" / "c" / "0" / uy / ux
        if shard.exists():
            found[shard] = shard.stat().st_mtime_ns
    return found


@pytest.mark.parametrize(
    ("failpoint", "killed_state", "level0_done"),
    [
        ("stats:2", "statistics", (0, 0)),  # during the statistics pass
        ("unit:1", "running", (0, 0)),  # the first unit written, not yet journaled
        ("unit:6", "running", (3, 5)),  # midway through level 0
        ("level1:2", "running", (3, 8)),  # while pyramid level 1 is written
        ("level3:1", "running", (8, 9)),  # the top level: all of level 0 done
    ],
)
def test_killed_run_resumes_to_identical_output(
    scan, reference, tmp_path, failpoint, killed_state, level0_done
):
    out = tmp_path / "OUT"
    killed = tilex_cli("run", scan, "-o", out, *OPTIONS, failpoint=failpoint)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert state(out) == killed_state
    with pytest.raises(OutputError, match="incomplete"):
        open_output(out)
    journal = out / ".journal"
    markers = {p.name for p in journal.glob("L0-*")} if journal.is_dir() else set()
    assert level0_done[0] <= len(markers) <= level0_done[1], sorted(markers)
    kept = level0_shards(out, markers)

    # the statistics are not measured again once saved: a failpoint in that pass stays silent
    again = None if killed_state == "statistics" else "stats:1"
    resumed = tilex_cli("run", scan, "-o", out, *OPTIONS, "--resume", failpoint=again)
    assert resumed.returncode == 0, resumed.stderr
    assert state(out) == "complete"
    assert not journal.exists()
    assert_same_arrays(out, reference)
    assert manifest_of(out)["found"] == manifest_of(reference)["found"]  # journaled per unit
    assert level0_shards(out, markers) == kept, "units finished before the kill were rewritten"


def test_resume_refuses_other_parameters(scan, reference):
    with pytest.raises(
        ResumeMismatchError, match=r"parameters\.threshold \(output: 0\.5, now: 0\.7\)"
    ):
        tilex.run(scan, reference, device="cpu", threshold=0.7, resume=True, **LAYOUT)
    with pytest.raises(ResumeMismatchError, match=r"unit \(output: 128, now: 256\)"):
        tilex.run(scan, reference, device="cpu", resume=True, **{**LAYOUT, "unit": 256})


def test_resume_and_overwrite_exclude_each_other(scan, reference):
    with pytest.raises(PlanError, match="--resume .* or --overwrite .*, not both"):
        tilex.run(scan, reference, device="cpu", resume=True, overwrite=True, **LAYOUT)


def test_resume_refuses_changed_inputs(scan, reference, tmp_path):
    out = tmp_path / "OUT"
    out.mkdir()
    manifest = json.loads((reference / "tilex.json").read_text())
    manifest["state"] = "failed"
    manifest["resume"]["input_files"][0][1] += 1  # as if the file had been rewritten since
    (out / "tilex.json").write_text(json.dumps(manifest))
    changed = manifest["resume"]["input_files"][0][0]
    with pytest.raises(ResumeMismatchError, match=f"input file {changed} changed"):
        tilex.run(scan, out, device="cpu", resume=True, **LAYOUT)


def test_resume_of_a_complete_output_says_so(scan, reference):
    before = (reference / "tilex.json").read_text()
    result = CliRunner().invoke(
        main, ["run", str(scan), "-o", str(reference), *OPTIONS, "--resume"]
    )
    assert result.exit_code == 0, result.output
    assert "already complete: nothing to resume" in result.output
    assert (reference / "tilex.json").read_text() == before


def test_resume_of_a_foreign_folder_is_refused(scan, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["run", str(scan), "-o", str(tmp_path), *OPTIONS, "--resume"])
    assert result.exit_code == 2
    assert "is not a tilex output: no tilex.json" in result.output
    assert (tmp_path / "notes.txt").exists()


def test_existing_output_suggests_resume(scan, reference):
    result = CliRunner().invoke(main, ["run", str(scan), "-o", str(reference), *OPTIONS])
    assert result.exit_code == 2
    assert "--overwrite" in result.output


def test_a_tile_that_divides_no_unit_gives_the_same_output(scan, reference, tmp_path):
    """Tiles of 96 px in units of 128: the last tile of each unit is clipped at its edge."""
    out = tmp_path / "OUT"
    tilex.run(scan, out, device="cpu", tile=96, unit=128, chunk=64)
    one, two = open_output(out), open_output(reference)
    np.testing.assert_array_equal(one["winner"].levels[0][...], two["winner"].levels[0][...])
    # float32 rounding of the convolutions, stretched by the normalisation (3.5e-6 seen)
    np.testing.assert_allclose(
        one["score"].levels[0][...], two["score"].levels[0][...], rtol=0, atol=1e-5
    )
