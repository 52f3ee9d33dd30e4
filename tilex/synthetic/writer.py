"""Writing a synthetic scan folder: tiles rendered on threads, streamed to TIFF.

:func:`synth` writes ``scan.json``, a visible RGB BigTIFF, one uint16 BigTIFF
per band, the ground truth :data:`MASK_FILE` and :data:`PARAMS_FILE`.  Memory
stays bounded by the tile size, the band count and the worker count, however
large the scan.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tilex._version import __version__
from tilex.errors import OutputExistsError
from tilex.synthetic.params import band_names, check_bands, check_seed, check_size, parse_size
from tilex.synthetic.scene import SynthRegion, _Model

__all__ = ["MASK_FILE", "PARAMS_FILE", "check_folder", "synth", "write_scan_folder"]

MASK_FILE = "hidden_mask.tif"
"""File name of the ground-truth mask in a synthetic scan folder."""

PARAMS_FILE = "synth.json"
"""File name of the generator's parameters in a synthetic scan folder."""


def synth(
    out_dir: str | os.PathLike,
    size: tuple[int, int] | str = (2048, 2048),
    bands: int = 8,
    seed: int = 0,
    *,
    tile: int = 512,
    compression: str = "zstd",
    overwrite: bool = False,
    workers: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Write a synthetic multispectral scan with a hidden figure; return its manifest.

    Parameters
    ----------
    out_dir
        Folder to create. An existing non-empty folder is refused unless
        ``overwrite`` (then the files below are replaced, others left alone).
    size
        ``(H, W)`` or ``"HxW"``.
    bands
        Number of bands, 1 to :data:`MAX_BANDS`, at :func:`wavelengths`.
    seed
        0 to 2**32 - 1; the same seed gives the same bytes.
    tile
        TIFF tile side (a multiple of 16).
    compression
        ``"zstd"``, ``"zlib"`` or ``"none"``.
    workers
        Threads rendering tiles (default: CPU count, at most 8).
    progress
        Callback ``progress("synth", done_pixels, total_pixels)``.

    Returns
    -------
    Path
        ``out_dir / "scan.json"``. The folder also holds ``visible.tif``
        (uint8 RGB), ``<band>.tif`` (uint16), :data:`MASK_FILE` (uint8 0/1)
        and ``synth.json``; all are tiled BigTIFFs.

    Examples
    --------
    >>> manifest = synth(tmp_path / "scan", size=(256, 256), bands=4)  # doctest: +SKIP
    >>> sorted(p.name for p in manifest.parent.iterdir())  # doctest: +SKIP
    ['hidden_mask.tif', 'ir1018.tif', 'ir1700.tif', 'scan.json', 'synth.json', 'uv365.tif', 'vis610.tif']
    """
    h, w = parse_size(size)
    check_size(h, w)
    check_bands(bands)
    check_seed(seed)
    check_folder(out_dir, tile, compression, overwrite)
    model = _Model(h, w, int(bands), int(seed))
    names = band_names(bands)
    nms = model.band_wavelengths()
    params = {
        "generator": "tilex.synth",
        "size": [h, w],
        "bands": int(bands),
        "seed": int(seed),
        "transparency": {
            n: round(model.transparency(nm), 4) for n, nm in zip(names, nms, strict=True)
        },
        "visible_noise": model.visible_noise,
        "band_noise": model.band_noise,
    }

    def planes(region: tuple[int, int, int, int]) -> list[np.ndarray]:
        part: SynthRegion = model.render(*region)
        return [part.visible, *part.bands, part.mask]

    return write_scan_folder(
        out_dir, (h, w), list(zip(names, nms, strict=True)), planes, params,
        tile=tile, compression=compression, workers=workers, progress=progress,
    )  # fmt: skip


_CODECS = {"zstd": "zstd", "zlib": "zlib", "none": None}


def check_folder(out_dir: str | os.PathLike, tile: int, compression: str, overwrite: bool) -> None:
    """Refuse a bad tile or compression, or a non-empty ``out_dir`` without ``overwrite``."""
    if not isinstance(tile, int) or tile < 16 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile!r}")
    if compression not in _CODECS:
        raise ValueError(f"compression must be one of {sorted(_CODECS)}, got {compression!r}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputExistsError(
            f"{out}: exists and is not empty; pass overwrite=True or choose another folder"
        )


def write_scan_folder(
    out_dir: str | os.PathLike,
    shape: tuple[int, int],
    bands: list[tuple[str, float]],
    planes: Callable[[tuple[int, int, int, int]], list[np.ndarray]],
    params: dict,
    *,
    tile: int,
    compression: str,
    workers: int | None,
    progress: Callable[[str, int, int], None] | None,
) -> Path:
    """Write a synthetic scan folder from ``planes(region)`` (visible, bands..., mask); its manifest.

    ``bands`` is ``[(name, wavelength_nm)]``; ``params`` goes into
    :data:`PARAMS_FILE` with the tile, compression, mask name and tilex version.
    Call :func:`check_folder` first.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    h, w = shape
    names = [name for name, _ in bands]
    files = ["visible.tif", *(f"{n}.tif" for n in names), MASK_FILE]
    common = {
        "bigtiff": True,
        "tile": (tile, tile),
        "compression": _CODECS[compression],
        "maxworkers": 1,
        "metadata": None,
    }
    specs = [
        dict(shape=(h, w, 3), dtype=np.uint8, photometric="rgb", planarconfig="contig", **common),
        *(dict(shape=(h, w), dtype=np.uint16, photometric="minisblack", **common) for _ in names),
        dict(shape=(h, w), dtype=np.uint8, photometric="minisblack", **common),
    ]
    regions = [
        (y, min(y + tile, h), x, min(x + tile, w))
        for y in range(0, h, tile)
        for x in range(0, w, tile)
    ]
    _write_streams(
        [out / f for f in files],
        specs,
        regions,
        planes,
        workers=workers or min(8, os.cpu_count() or 1),
        progress=progress,
        total=h * w,
    )
    manifest = {
        "visible": "visible.tif",
        "bands": [{"name": n, "file": f"{n}.tif", "wavelength_nm": nm} for n, nm in bands],
        "pixel_size_um": round(600_000.0 / max(h, w), 4),  # a 60 cm painting
    }
    (out / "scan.json").write_text(json.dumps(manifest, indent=2) + "\n")
    record = {
        "generator": params["generator"],
        "tilex_version": __version__,
        **{k: v for k, v in params.items() if k != "generator"},
        "tile": tile,
        "compression": compression,
        "mask": MASK_FILE,
    }
    (out / PARAMS_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return out / "scan.json"


def _write_streams(paths, specs, regions, make, *, workers, progress, total) -> None:
    """Render regions in order on a thread pool and stream plane k of each to file k.

    One writer thread per file consumes a bounded queue (tifffile's ``imwrite``
    takes the whole iterator in one call, so files written side by side need
    threads). Memory stays bounded: at most ``2 * workers`` rendered regions
    wait for the writers, and each queue holds at most 2 tiles. A failing
    writer keeps draining its queue and a failing render stops the others,
    so an error never leaves a thread blocked; the first one is re-raised.
    """
    import tifffile

    stop = object()
    queues = [queue.Queue(maxsize=2) for _ in paths]
    errors: list[BaseException] = []

    def writer(path, spec, q):
        finished = threading.Event()

        def tiles() -> Iterator[np.ndarray]:
            while (item := q.get()) is not stop:
                yield item
            finished.set()

        try:
            tifffile.imwrite(path, data=tiles(), **spec)
        except BaseException as err:  # noqa: BLE001 - re-raised by the caller
            errors.append(err)
            while not finished.is_set() and q.get() is not stop:
                pass  # keep draining so the producer never blocks

    threads = [
        threading.Thread(target=writer, args=a, daemon=True, name=f"tilex-synth-write-{i}")
        for i, a in enumerate(zip(paths, specs, queues, strict=True))
    ]
    for t in threads:
        t.start()
    done = 0
    pending: deque = deque()
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="tilex-synth-render") as pool:
            try:
                for region in regions:
                    pending.append((region, pool.submit(make, region)))
                    if len(pending) >= 2 * workers:
                        done = _hand_over(pending.popleft(), queues, done, progress, total)
                    if errors:
                        break
                while pending and not errors:
                    done = _hand_over(pending.popleft(), queues, done, progress, total)
            finally:
                for _, fut in pending:
                    fut.cancel()
    finally:
        for q in queues:
            q.put(stop)
        for t in threads:
            t.join()
    if errors:
        raise errors[0]


def _hand_over(item, queues, done, progress, total) -> int:
    """Give one rendered region's planes to the writers, in file order."""
    (y0, y1, x0, x1), fut = item
    for q, plane in zip(queues, fut.result(), strict=True):
        q.put(plane)
    done += (y1 - y0) * (x1 - x0)
    if progress is not None:
        progress("synth", done, total)
    return done
