"""What every command shares: ``-v``/``-q`` before or after its name; and what ``tilex run``
says about its tile, its unit and the work ahead."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from tilex.cli.main import _COMMANDS, main

import tilex


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    return tilex.synth(tmp_path_factory.mktemp("scan") / "scan", size=(200, 150), bands=3, seed=5)


@pytest.mark.parametrize("name", _COMMANDS)
def test_every_command_takes_v_and_q(name):
    result = invoke(name, "--help")
    assert result.exit_code == 0
    assert "-v, --verbose" in result.stdout and "-q, --quiet" in result.stdout


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_before_or_after_the_command(scan, tmp_path, where):
    args = ["run", scan, "-o", tmp_path / "out", "--device", "cpu", "--tile", "64"]
    result = invoke(*(["-q", *args] if where == "before" else [*args, "-q"]))
    assert result.exit_code == 0, result.stderr
    assert "wrote" in result.stdout
    assert "tilex:" not in result.stderr  # warnings only: no work estimate


def test_verbose_after_the_command_shows_the_traceback(tmp_path):
    missing = tmp_path / "nowhere.json"
    plain = invoke("info", missing)
    assert plain.exit_code == 2 and "Traceback" not in plain.stderr
    for args in (["info", missing, "-v"], ["-v", "info", missing], ["export", tmp_path, "-v"]):
        result = invoke(*args)
        assert result.exit_code == 2 and "Traceback" in result.stderr, args
        assert result.stderr.strip().splitlines()[-1].startswith("tilex: error: ")


def test_verbosity_adds_up_across_the_group_and_the_command(tmp_path):
    # -q before and -v after cancel out: back to no traceback
    result = invoke("-q", "info", tmp_path / "nowhere.json", "-v")
    assert result.exit_code == 2 and "Traceback" not in result.stderr


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("quiet", "drawn"), [([], True), (["-q"], False)])
def test_progress_bars_respect_quiet_after_the_command(tmp_path, monkeypatch, quiet, drawn):
    terminal = Terminal()
    monkeypatch.setattr("tilex.cli.progress.sys", SimpleNamespace(stderr=terminal))
    result = invoke("synth", tmp_path / "scan", "--size", "64x64", "--bands", "1", *quiet)
    assert result.exit_code == 0, result.stderr
    assert ("writing scan" in terminal.getvalue()) is drawn
    assert "scan px" in terminal.getvalue() or not drawn


def test_run_tells_the_work_ahead_and_its_unit(scan, tmp_path):
    result = invoke("run", scan, "-o", tmp_path / "out", "--device", "cpu", "--tile", "64")
    assert result.exit_code == 0, result.stderr
    assert "tilex: work ahead: 200x150 scan (0.0 Mpx)" in result.stderr
    assert "trial tile encoded in" in result.stderr and "--device cuda" not in result.stderr
    wrote = next(line for line in result.stdout.splitlines() if line.startswith("wrote "))
    assert wrote.startswith(f"wrote {tmp_path / 'out'} (200x150, 3 bands) in ")
    assert wrote.endswith(" Mpx/s (scan pixels)")
    assert result.stdout.strip().splitlines()[-1].startswith("flagged ")


def test_a_tile_longer_than_the_scan_is_lowered(scan, tmp_path):
    result = invoke("run", scan, "-o", tmp_path / "out", "--device", "cpu", "--tile", "8192")
    assert result.exit_code == 0, result.stderr
    assert "tile 8192 px is larger than the 200x150 scan: using 208 px" in result.stderr
    assert json.loads((tmp_path / "out" / "tilex.json").read_text())["parameters"]["tile"] == 208


def test_a_tiny_tile_is_warned_about(scan, tmp_path):
    result = invoke(
        "run", scan, "-o", tmp_path / "out", "--device", "cpu", "--tile", "16", "--norm", "pixel"
    )
    assert result.exit_code == 0, result.stderr
    warning = next(line for line in result.stderr.splitlines() if "wasted" in line)
    assert (
        "tile 16 px reads" in warning and "--tile 208" in warning
    )  # the default, lowered to the scan
    quiet = invoke(
        "run",
        scan,
        "-o",
        tmp_path / "q",
        "--device",
        "cpu",
        "--tile",
        "16",
        "--norm",
        "pixel",
        "-q",
    )
    assert "wasted" in quiet.stderr  # a warning: -q keeps it


def test_tile_help_states_every_rule():
    text = " ".join(invoke("run", "--help").stdout.split())
    for rule in (
        "twice the encoder's halo",
        "clipped at its edge",
        "lowered",
        "Default 512 on CPU",
    ):
        assert rule in text, rule
