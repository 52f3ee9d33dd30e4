"""The in-memory API: :func:`render_scene` and the :class:`PhysicalScene` it returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tilex.synthetic.params import check_seed, check_size, parse_size
from tilex.synthetic.physical.recipe import Scene, draw_scene
from tilex.synthetic.physical.render import Spectra, names, render_region

__all__ = ["PhysicalScene", "render_scene"]


@dataclass(frozen=True)
class PhysicalScene:
    """A rendered scene: camera values as floats, exactly the on-disk codes scaled to [0, 1].

    ``visible`` is ``[H, W, 3]`` sRGB-encoded (8-bit codes / 255), ``bands``
    ``[N, H, W]`` (uint16 codes / 65535), ``hidden`` ``[H, W]`` the truth:
    where hidden content lies under the top paint. ``params`` holds every
    drawn parameter (pigments, layers, cameras).
    """

    visible: np.ndarray
    bands: np.ndarray
    band_names: list[str]
    wavelengths: list[float]
    fwhm: list[float]
    hidden: np.ndarray
    params: Scene


def render_scene(
    size: tuple[int, int] | str = (256, 256),
    seed: int = 0,
    recipe: str = "mixed",
    bands: int | list[tuple[float, float]] | None = None,
    holdout: bool = False,
    region: tuple[int, int, int, int] | None = None,
) -> PhysicalScene:
    """Render a physically based scene (or a ``region`` of it) in memory.

    Parameters
    ----------
    size
        ``(H, W)`` or ``"HxW"``; shapes scale with the shorter side.
    seed
        0 to 2**32 - 1: every drawn parameter and every noise.
    recipe
        ``"mixed"``, ``"underdrawing"``, ``"composition"``, ``"nothing"`` or
        ``"random"`` (see :mod:`tilex.synthetic.physical.recipe`).
    bands
        ``None``: a band set drawn from the seed; ``N``: N bands evenly from
        400 to 1000 nm, FWHM 40 nm; or ``[(centre_nm, fwhm_nm), ...]``.
    holdout
        Draw from the held-out pigments, band sets and camera ranges.
    region
        ``(y0, y1, x0, x1)``: these pixels, identical to the same pixels of
        the whole scene.

    Examples
    --------
    >>> sc = render_scene((64, 96), seed=3, recipe="underdrawing", bands=[(550, 40), (950, 40)])
    >>> sc.visible.shape, sc.bands.shape, sc.band_names, sc.hidden.dtype.name
    ((64, 96, 3), (2, 64, 96), ['vis550', 'ir950'], 'bool')
    """
    scene = make_scene(size, seed, recipe, bands, holdout)
    y0, y1, x0, x1 = region or (0, scene.height, 0, scene.width)
    if not (0 <= y0 < y1 <= scene.height and 0 <= x0 < x1 <= scene.width):
        raise ValueError(
            f"region {(y0, y1, x0, x1)} is not inside the {scene.height}x{scene.width} scene"
        )
    planes = render_region(scene, Spectra.of(scene), y0, y1, x0, x1)
    return PhysicalScene(
        visible=planes.visible.astype(np.float32) / np.float32(255.0),
        bands=planes.bands.astype(np.float32) / np.float32(65535.0),
        band_names=names(scene),
        wavelengths=[c for c, _ in scene.bands],
        fwhm=[f for _, f in scene.bands],
        hidden=planes.mask.astype(bool),
        params=scene,
    )


def make_scene(
    size: tuple[int, int] | str,
    seed: int,
    recipe: str = "mixed",
    bands: int | list[tuple[float, float]] | None = None,
    holdout: bool = False,
) -> Scene:
    """Validate the arguments of :func:`render_scene` and draw the scene's parameters."""
    h, w = parse_size(size)
    check_size(h, w)
    check_seed(seed)
    if isinstance(bands, int | np.integer) and not isinstance(bands, bool):
        if not 1 <= bands <= 254:
            raise ValueError(f"bands must be 1 to 254, got {bands}")
        centres = [700.0] if bands == 1 else list(np.linspace(400.0, 1000.0, int(bands)))
        bands = [(round(float(c), 1), 40.0) for c in centres]
    return draw_scene(h, w, int(seed), recipe, bands, bool(holdout))
