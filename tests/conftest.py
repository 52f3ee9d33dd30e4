"""Shared fixtures.

``write_image`` (scan input stage): writes a small image in any format tilex
reads, so reader, scan and CLI tests build their inputs at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def _write_ome_zarr(
    path: Path,
    data: np.ndarray,
    *,
    version: str,
    chunks: tuple[int, ...],
    labels: list[str] | None,
    axes: str,
    pixel_size_um: float | None,
) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    array = group.create_array("0", shape=data.shape, chunks=chunks, dtype=data.dtype)
    array[...] = data
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    axes_meta = [{"name": a, "type": kinds[a]} for a in axes]
    scale = [1.0] * len(axes)
    if pixel_size_um:
        axes_meta[-1]["unit"] = axes_meta[-2]["unit"] = "micrometer"
        scale[-1] = scale[-2] = pixel_size_um
    multiscales = [
        {
            "axes": axes_meta,
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
            ],
        }
    ]
    ome: dict[str, Any] = {"multiscales": multiscales}
    if labels is not None:
        ome["omero"] = {"channels": [{"label": label} for label in labels]}
    if version == "0.4":
        multiscales[0]["version"] = "0.4"
        group.attrs.update(ome)
    else:
        group.attrs["ome"] = {"version": "0.5", **ome}


def write_image_file(path: Path, data: np.ndarray, fmt: str, **options: Any) -> Path:
    """Write ``data`` to ``path`` as ``fmt``; returns ``path``.

    fmt: ``tiff`` (options go to ``tifffile.imwrite``), ``zarr2``/``zarr3``
    (options: chunks, dimension_names), ``ome-zarr-0.4``/``ome-zarr-0.5``
    (options: chunks, labels, axes, pixel_size_um), ``png``, ``bmp``, ``jpeg``
    (``H x W`` or ``H x W x C``, via Pillow).
    """
    path = Path(path)
    if fmt == "tiff":
        import tifffile

        tifffile.imwrite(path, data, **options)
    elif fmt in ("zarr2", "zarr3"):
        import zarr

        extra = {}
        if options.get("dimension_names"):
            extra["dimension_names"] = options["dimension_names"]
        array = zarr.create_array(
            str(path),
            shape=data.shape,
            dtype=data.dtype,
            zarr_format=int(fmt[-1]),
            chunks=options.get("chunks", tuple(min(n, 16) for n in data.shape)),
            **extra,
        )
        array[...] = data
    elif fmt.startswith("ome-zarr-"):
        _write_ome_zarr(
            path,
            data,
            version=fmt.removeprefix("ome-zarr-"),
            chunks=options.get("chunks", tuple(min(n, 16) for n in data.shape)),
            labels=options.get("labels"),
            axes=options.get("axes", "cyx"),
            pixel_size_um=options.get("pixel_size_um"),
        )
    elif fmt in ("png", "bmp", "jpeg"):
        from PIL import Image

        assert data.dtype == np.uint8 or data.ndim == 2, "Pillow writes 16-bit gray only"
        Image.fromarray(data).save(path, format=fmt.upper(), **options)
    else:
        raise ValueError(f"unknown test format {fmt!r}")
    return path


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """:func:`write_image_file` as a fixture."""
    return write_image_file


def _random_network(seed: int = 0):
    """ArtExtract's SiameseNetwork with random weights and non-trivial BatchNorm statistics."""
    import torch
    from torch import nn

    from tilex.encoder import SiameseNetwork

    torch.manual_seed(seed)
    net = SiameseNetwork()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
                m.num_batches_tracked.fill_(123)
    return net.eval()


@pytest.fixture(scope="session")
def random_network() -> Callable[..., Any]:
    """``random_network(seed)``: a random SiameseNetwork (random BN statistics too)."""
    return _random_network


@pytest.fixture(scope="session")
def random_encoder(random_network) -> Callable[..., Any]:
    """``random_encoder(seed)``: a CPU encoder built on :func:`random_network`."""
    from tilex.encoder import build_encoder

    return lambda seed: build_encoder(network=random_network(seed), device="cpu")


@pytest.fixture(scope="session")
def chunk_hashes() -> Callable[[Path], dict[str, str]]:
    """Hash every decoded chunk of every level of an output (pins arrays, not codec bytes)."""
    from tilex.omezarr import chunk_digests

    return chunk_digests


def _killed_then_resumed(scan: Path, out: Path, options: list[str], point: str = "unit:4") -> None:
    """``tilex run`` SIGKILLed at failpoint ``point``, then run again with ``--resume``."""
    import os
    import signal
    import subprocess
    import sys

    command = [sys.executable, "-m", "tilex.cli", "-q", "run", str(scan), "-o", str(out), *options]
    env = dict(os.environ, TILEX_FAILPOINT=point)
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    env.pop("TILEX_FAILPOINT")
    resumed = subprocess.run(
        [*command, "--resume"], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr


@pytest.fixture(scope="session")
def killed_then_resumed() -> Callable[..., None]:
    """Run ``tilex run SCAN -o OUT OPTIONS``, SIGKILL it midway, resume it (asserting both)."""
    return _killed_then_resumed


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> Path:
    """A real ``tilex.run`` of a small synthetic scan (640 x 480, 3 bands): its output folder.

    Chunks of 256 px, so it has 3 pyramid levels and 6 tiles on level 0, and
    the per-band maps are kept. Made once per session (about 10 s on 2 cores)
    for the viewer and export tests; treat it as read-only.
    """
    import tilex

    root = tmp_path_factory.mktemp("small-run")
    scan = tilex.synth(root / "scan", size=(480, 640), bands=3, seed=3)
    out = root / "out"
    tilex.run(scan, out, device="cpu", tile=256, unit=512, chunk=256, keep_dissimilarity=True)
    return out


# Debian's Chromium as a machine without a screen or network starts it (see tests/test_view.py)
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="session")
def chromium() -> Any:
    """A headless Chromium (Debian's ``chromium``, driven by Playwright), or a skip.

    No browser is downloaded: the tests skip cleanly when ``chromium`` (or
    ``$TILEX_CHROMIUM``) or the ``playwright`` package is missing. Playwright
    gives every launch a fresh profile.
    """
    import os
    import shutil

    executable = os.environ.get("TILEX_CHROMIUM") or shutil.which("chromium")
    if not executable:
        pytest.skip("no chromium to test in (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=list(CHROMIUM_FLAGS)
        )
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium) -> Callable[..., Any]:
    """``browser_page(url)``: a 1200 x 800 page at ``url`` whose ``problems`` list collects
    console errors, page errors, failed requests and requests to any other host."""
    from urllib.parse import urlsplit

    pages = []

    def open_page(url: str, *, width: int = 1200, height: int = 800) -> Any:
        page = chromium.new_page(viewport={"width": width, "height": height})
        problems: list[str] = []
        host = urlsplit(url).netloc
        page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
        page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
        page.on(
            "request",
            lambda r: (
                urlsplit(r.url).netloc == host
                or r.url.startswith("data:")
                or problems.append(f"left the machine: {r.url}")
            ),
        )
        page.problems = problems
        pages.append(page)
        page.goto(url)
        return page

    yield open_page
    for page in pages:
        page.close()
