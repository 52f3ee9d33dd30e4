"""Writing a physical scene as a scan folder, streamed tile by tile.

The same layout as :func:`tilex.synthetic.synth`: ``scan.json``, a visible
uint8 sRGB BigTIFF, one uint16 BigTIFF per band, the truth
:data:`~tilex.synthetic.MASK_FILE` and :data:`~tilex.synthetic.PARAMS_FILE`
(here every drawn parameter: pigments, layers, cameras, band pass-bands).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tilex.synthetic.physical.render import Spectra, names, render_region
from tilex.synthetic.physical.scene import make_scene
from tilex.synthetic.writer import check_folder, write_scan_folder

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
    check_folder(out_dir, tile, compression, overwrite)
    scene = make_scene(size, seed, recipe, bands, holdout)
    spectra = Spectra.of(scene)
    band_names = names(scene)
    params = {
        "generator": "tilex.synth.physical",
        "visible_encoding": "sRGB, 8 bit",
        "band_fwhm_nm": {n: f for n, (_, f) in zip(band_names, scene.bands, strict=True)},
        "scene": dataclasses.asdict(scene),
    }

    def planes(region: tuple[int, int, int, int]) -> list[np.ndarray]:
        p = render_region(scene, spectra, *region)
        return [p.visible, *p.bands, p.mask]

    bands_nm = [(n, c) for n, (c, _) in zip(band_names, scene.bands, strict=True)]
    return write_scan_folder(
        out_dir, (scene.height, scene.width), bands_nm, planes, params,
        tile=tile, compression=compression, workers=workers, progress=progress,
    )  # fmt: skip
