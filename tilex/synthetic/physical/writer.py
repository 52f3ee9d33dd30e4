"""Writing a physical scene as a scan folder, streamed tile by tile.

The same layout as :func:`tilex.synthetic.synth`: ``scan.json``, a visible
uint8 sRGB BigTIFF, one uint16 BigTIFF per band, the truth
:data:`~tilex.synthetic.MASK_FILE` and :data:`~tilex.synthetic.PARAMS_FILE`
(here every drawn parameter: pigments, layers, cameras, band pass-bands).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tilex._version import __version__
from tilex.errors import OutputExistsError
from tilex.synthetic.physical.render import Spectra, names, render_region
from tilex.synthetic.physical.scene import make_scene
from tilex.synthetic.writer import MASK_FILE, PARAMS_FILE, _write_streams

__all__ = ["synth_physical"]


def synth_physical(
    out_dir: str | os.PathLike,
    size: tuple[int, int] | str = (2048, 2048),
    seed: int = 0,
    recipe: str = "mixed",
    bands: int | list[tuple[float, float]] | None = None,
    holdout: bool = False,
    *,
    tile: int = 512,
    compression: str = "zstd",
    overwrite: bool = False,
    workers: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Write a physically based scene as a scan folder; return its manifest.

    ``size, seed, recipe, bands, holdout`` are those of
    :func:`~tilex.synthetic.physical.render_scene` (and give the same pixels);
    ``tile, compression, overwrite, workers, progress`` those of
    :func:`tilex.synthetic.synth`.

    Examples
    --------
    >>> manifest = synth_physical(tmp_path / "scan", size=(64, 64), bands=3)  # doctest: +SKIP
    >>> sorted(p.name for p in manifest.parent.iterdir())  # doctest: +SKIP
    ['hidden_mask.tif', 'ir1000.tif', 'scan.json', 'synth.json', 'vis400.tif', 'vis700.tif', 'visible.tif']
    """
    scene = make_scene(size, seed, recipe, bands, holdout)
    h, w = scene.height, scene.width
    if not isinstance(tile, int) or tile < 16 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile!r}")
    codec = {"zstd": "zstd", "zlib": "zlib", "none": None}
    if compression not in codec:
        raise ValueError(f"compression must be one of {sorted(codec)}, got {compression!r}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputExistsError(
            f"{out}: exists and is not empty; pass overwrite=True or choose another folder"
        )
    out.mkdir(parents=True, exist_ok=True)

    spectra = Spectra.of(scene)
    band_names = names(scene)
    files = ["visible.tif", *(f"{n}.tif" for n in band_names), MASK_FILE]
    common = {
        "bigtiff": True,
        "tile": (tile, tile),
        "compression": codec[compression],
        "maxworkers": 1,
        "metadata": None,
    }
    specs = [
        dict(shape=(h, w, 3), dtype=np.uint8, photometric="rgb", planarconfig="contig", **common),
        *(
            dict(shape=(h, w), dtype=np.uint16, photometric="minisblack", **common)
            for _ in band_names
        ),
        dict(shape=(h, w), dtype=np.uint8, photometric="minisblack", **common),
    ]

    def planes(region: tuple[int, int, int, int]) -> list[np.ndarray]:
        p = render_region(scene, spectra, *region)
        return [p.visible, *p.bands, p.mask]

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
        "bands": [
            {"name": n, "file": f"{n}.tif", "wavelength_nm": c}
            for n, (c, _) in zip(band_names, scene.bands, strict=True)
        ],
        "pixel_size_um": round(600_000.0 / max(h, w), 4),  # a 60 cm painting
    }
    (out / "scan.json").write_text(json.dumps(manifest, indent=2) + "\n")
    params = {
        "generator": "tilex.synth.physical",
        "tilex_version": __version__,
        "tile": tile,
        "compression": compression,
        "mask": MASK_FILE,
        "visible_encoding": "sRGB, 8 bit",
        "band_fwhm_nm": {n: f for n, (_, f) in zip(band_names, scene.bands, strict=True)},
        "scene": dataclasses.asdict(scene),
    }
    (out / PARAMS_FILE).write_text(json.dumps(params, indent=1) + "\n")
    return out / "scan.json"
