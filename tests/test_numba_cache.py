"""Compiled Numba kernels are cached in the user's cache directory, never in the package.

A cache file written into an installed ``site-packages/tilex/kernels/__pycache__``
is not in the wheel's RECORD: it outlives ``pip uninstall`` and turns the
leftover folder into a namespace package that shadows a later editable install.
The kernels run in a fresh interpreter, so their compilation is not shared
with the rest of the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numba
import pytest
import tilex.kernels
from tilex.kernels import _numba

PACKAGE = Path(tilex.kernels.__file__).parent

CHILD = r"""
import json
import numba
import numpy as np
import tilex.kernels
numba_cache_dir = numba.config.CACHE_DIR
out = tilex.kernels.dissimilarity(np.ones((1, 2, 2), np.float32), np.zeros((1, 1, 2, 2), np.float32))
print(json.dumps({"sum": float(out.sum()), "numba_cache_dir": numba_cache_dir,
                  "numba_cache_dir_after": numba.config.CACHE_DIR}))
"""


def _package_cache_files() -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in PACKAGE.rglob("*.nb[ic]")}


def _run_kernel(cache_dir: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env[_numba.CACHE_DIR_ENV] = str(cache_dir)
    run = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_kernels_are_cached_in_tilex_cache_dir_not_in_the_package(tmp_path: Path) -> None:
    before = _package_cache_files()
    report = _run_kernel(tmp_path)
    assert report == {"sum": 4.0, "numba_cache_dir": "", "numba_cache_dir_after": ""}
    written = {p.suffix for p in (tmp_path / "numba").rglob("cpu._dissimilarity_kernel-*")}
    assert written == {".nbi", ".nbc"}
    assert _package_cache_files() == before


def test_unwritable_cache_dir_runs_uncached(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    before = _package_cache_files()
    assert _run_kernel(not_a_dir)["sum"] == 4.0
    assert _package_cache_files() == before


@pytest.mark.parametrize(
    ("tilex_dir", "numba_dir", "xdg", "expected"),
    [
        ("/t", "/n", "/x", "/t/numba"),
        ("", "/n", "/x", "/n"),
        ("", "", "/x", "/x/tilex/numba"),
    ],
)
def test_cache_dir_precedence(
    monkeypatch: pytest.MonkeyPatch, tilex_dir: str, numba_dir: str, xdg: str, expected: str
) -> None:
    monkeypatch.setenv(_numba.CACHE_DIR_ENV, tilex_dir)
    monkeypatch.setattr(numba.config, "CACHE_DIR", numba_dir)  # what NUMBA_CACHE_DIR sets
    monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    assert _numba.cache_dir() == Path(expected)


def test_cache_dir_defaults_to_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(_numba.CACHE_DIR_ENV, raising=False)
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _numba.cache_dir() == tmp_path / ".cache" / "tilex" / "numba"
