"""One writer per output: a second run on an output being written is refused.

The writer is a real process: :func:`tilex.run` whose progress callback pauses
at the statistics pass (output laid out, lock held) until the test lets it go.
The second run is the real command line, with and without ``--overwrite`` and
``--resume``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from tilex.cli.main import main

import tilex
from tilex.errors import OutputBusyError, ScanError
from tilex.lock import lock_path, output_lock
from tilex.omezarr import open_output

pytest.importorskip("fcntl")

OPTIONS = ["--device", "cpu", "--tile", "128", "--unit", "128", "--chunk", "64"]

WRITER = """
import sys, time
from pathlib import Path
import tilex

scan, out, ready, go = sys.argv[1:]

def pause(stage, done, total):
    if not Path(ready).exists():
        Path(ready).touch()
        deadline = time.monotonic() + 60
        while not Path(go).exists() and time.monotonic() < deadline:
            time.sleep(0.02)

tilex.run(scan, out, device="cpu", tile=128, unit=128, chunk=64, progress=pause)
"""


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    return tilex.synth(tmp_path_factory.mktemp("scan") / "scan", size=(256, 256), bands=2, seed=3)


def start_writer(scan: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    """A `tilex.run` into ``out``, paused while it holds ``out``; touch the returned path to go on."""
    ready, go = out.with_name("ready"), out.with_name("go")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, scan, out, ready, go], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert writer.poll() is None, writer.communicate()[1]
        assert time.monotonic() < deadline, "the writer never reached the statistics pass"
        time.sleep(0.02)
    return writer, go


def tilex_cli(*args: object) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tilex.cli", "-q", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def assert_complete(out: Path) -> None:
    assert json.loads((out / "tilex.json").read_text())["state"] == "complete"
    score = open_output(out)["score"].levels[0][...]
    assert score.shape == (1, 256, 256)
    assert not lock_path(out).exists()


def test_a_second_run_on_a_busy_output_is_refused(scan, tmp_path):
    out = tmp_path / "OUT"
    writer, go = start_writer(scan, out)
    try:
        for flags in (["--overwrite"], ["--resume"], []):
            second = tilex_cli("run", scan, "-o", out, *OPTIONS, *flags)
            assert second.returncode == 2, (flags, second.stderr)
            assert re.fullmatch(
                rf"tilex: error: {re.escape(str(out))} is being written by process {writer.pid} "
                rf"on host {re.escape(socket.gethostname())} since \d\d:\d\d:\d\d; wait for it or stop it\n",
                second.stderr,
            ), (flags, second.stderr)
    finally:
        go.touch()
        _, stderr = writer.communicate(timeout=120)
    assert writer.returncode == 0, stderr
    assert_complete(out)


def test_a_killed_writer_does_not_block_resume(scan, tmp_path):
    out = tmp_path / "OUT"
    writer, _ = start_writer(scan, out)
    writer.kill()
    writer.communicate(timeout=60)
    # the file outlives its holder, the lock does not
    assert json.loads(lock_path(out).read_text())["pid"] == writer.pid
    resumed = tilex_cli("run", scan, "-o", out, *OPTIONS, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_complete(out)


def test_the_lock_is_released_when_a_run_fails(tmp_path):
    out = tmp_path / "OUT"
    with pytest.raises(ScanError):
        tilex.run(tmp_path / "no-such-scan", out, device="cpu")
    assert not lock_path(out).exists()
    with output_lock(out):
        pass


def test_a_held_output_is_refused_in_process(tmp_path):
    out = tmp_path / "OUT"
    with (
        output_lock(out) as path,
        pytest.raises(OutputBusyError, match=rf"process {os.getpid()} on host"),
    ):
        assert path.parent == tmp_path and path.exists()
        tilex.run(tmp_path / "no-such-scan", out, device="cpu", overwrite=True)
    assert not path.exists()


def test_demo_overwrite_is_refused_while_the_demo_folder_is_held(tmp_path):
    root = tmp_path / "demo"
    (root / "result").mkdir(parents=True)
    (root / "result" / "tilex.json").write_text("{}")
    with output_lock(root):
        result = CliRunner().invoke(
            main,
            [
                "demo",
                str(root),
                "--overwrite",
                "--size",
                "64x64",
                "--bands",
                "2",
                "--device",
                "cpu",
            ],
        )
    assert result.exit_code == 2, result.output
    assert f"is being written by process {os.getpid()}" in result.stderr
    assert (root / "result" / "tilex.json").exists()


def test_a_stale_lock_file_is_taken_over(tmp_path):
    out = tmp_path / "OUT"
    lock_path(out).write_text("not json")
    with output_lock(out) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()
