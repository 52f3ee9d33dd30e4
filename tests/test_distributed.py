"""tilex on dask.distributed: the same bytes as one process, even when a worker dies."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import tilex
from tilex.errors import UsageError
from tilex.omezarr import open_output
from tilex.testing import FAILPOINT_ENV, FAILPOINT_ONCE_ENV

pytest.importorskip("distributed")

SHAPE = (320, 288)  # 3 x 3 level-0 units of 128 px, 4 pyramid levels
LAYOUT = {"tile": 128, "unit": 128, "chunk": 64}


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    return tilex.synth(tmp_path_factory.mktemp("scan") / "scan", size=SHAPE, bands=3, seed=5)


@pytest.fixture(scope="module")
def single(scan, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "OUT"
    tilex.run(scan, out, device="cpu", **LAYOUT)
    return out


def assert_same_arrays(a: Path, b: Path) -> None:
    one, two = open_output(a), open_output(b)
    assert sorted(one.images) == sorted(two.images)
    for name in one.images:
        for k, (x, y) in enumerate(zip(one[name].levels, two[name].levels, strict=True)):
            x, y = x[...], y[...]
            # bytes, not values: NaN payloads and the sign of zeros count too
            assert (x.dtype, x.shape) == (y.dtype, y.shape), f"{name} level {k}"
            assert x.tobytes() == y.tobytes(), f"{name} level {k} differs"
        assert one[name].attrs.get("omero") == two[name].attrs.get("omero"), name


def test_two_workers_equal_one_process(scan, single, tmp_path):
    out = tmp_path / "OUT"
    report = tilex.run(scan, out, device="cpu", workers=2, **LAYOUT)
    assert_same_arrays(out, single)
    manifest = json.loads((out / "tilex.json").read_text())
    assert manifest["state"] == "complete"
    assert manifest["cluster"]["workers"] == 2
    assert manifest["stats"] == json.loads((single / "tilex.json").read_text())["stats"]
    assert report.stats is not None and set(report.timings) >= {"stats_s", "tiles_s", "pyramid_s"}
    assert not (out / ".journal").exists()


def test_a_dying_worker_has_its_unit_recomputed(scan, single, tmp_path, monkeypatch):
    claim = tmp_path / "killed"
    # the first worker to write its second unit SIGKILLs itself before journaling it;
    # worker processes inherit the environment
    monkeypatch.setenv(FAILPOINT_ENV, "unit:2")
    monkeypatch.setenv(FAILPOINT_ONCE_ENV, str(claim))
    out = tmp_path / "OUT"
    tilex.run(scan, out, device="cpu", workers=2, **LAYOUT)
    assert claim.exists(), "no worker was killed"
    assert_same_arrays(out, single)


def test_a_killed_single_process_run_resumes_on_a_cluster(scan, single, tmp_path):
    out = tmp_path / "OUT"
    command = [
        sys.executable,
        "-c",
        "from tilex.cli.main import main; main()",
        "-q",
        "run",
        str(scan),
        "-o",
        str(out),
        "--device",
        "cpu",
        "--tile",
        "128",
        "--unit",
        "128",
        "--chunk",
        "64",
    ]
    killed = subprocess.run(
        command, env={**_env(), FAILPOINT_ENV: "unit:5"}, capture_output=True, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL
    assert json.loads((out / "tilex.json").read_text())["state"] == "running"
    tilex.run(scan, out, device="cpu", workers=2, resume=True, **LAYOUT)
    assert_same_arrays(out, single)


def test_cluster_options_are_checked(scan, tmp_path):
    with pytest.raises(UsageError, match="not both"):
        tilex.run(scan, tmp_path / "A", device="cpu", scheduler="tcp://x:1", workers=2, **LAYOUT)
    with pytest.raises(UsageError, match="output folder"):
        tilex.run(scan, None, device="cpu", workers=2, **LAYOUT)


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in (FAILPOINT_ENV, FAILPOINT_ONCE_ENV)}
