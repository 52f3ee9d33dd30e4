"""README's Python example and manifest example run as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_python_example_runs(tmp_path, monkeypatch):
    (code,) = blocks("python")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert (tmp_path / "out" / "tilex.json").is_file() and (tmp_path / "preview.png").is_file()
    assert namespace["winner"].shape == (256, 256)


def test_manifest_example_opens(tmp_path, write_image):
    import numpy as np

    from tilex.scan import open_scan

    (text,) = blocks("json")
    manifest = json.loads(text)
    write_image(
        tmp_path / manifest["visible"], np.zeros((8, 8, 3), np.uint8), "tiff", photometric="rgb"
    )
    for band in manifest["bands"]:
        write_image(tmp_path / band["file"], np.zeros((8, 8), np.uint16), "tiff")
    (tmp_path / "scan.json").write_text(text)
    scan = open_scan(tmp_path)
    assert scan.band_names == tuple(b["name"] for b in manifest["bands"])
    assert scan.pixel_size_um == manifest["pixel_size_um"]
