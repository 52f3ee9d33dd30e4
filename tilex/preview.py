"""ArtExtract's picture of a result: collage | visible | visible with the hidden areas in blue.

The preview is drawn from one pyramid level, the first whose longest side is
at most ``max_side`` (1024 by default), so it takes the same time on a
gigapixel output as on a small one, and its PNG stays small: three panels of
at most 1024 px, about 3100 px wide in all.

Panels
------
collage
    Each pixel in the colour of the band that wins there, its brightness the
    mean of the collage features normalised by robust percentiles (1 and 99)
    over the winning pixels; black where no band wins.
visible
    The visible image in colour, as the output keeps it (``visible``).
    Outputs older than that image show it grey, recovered from the overlay, which is ``(1 - a) * gray + a * blue`` with
    ``a = ALPHA * score`` (``tilex.kernels.reference.ALPHA`` = 0.65), so
    ``gray = red / (1 - a)`` (the mean of red and green, which carry the same
    grey).  It is exact up to uint8 rounding on level 0; on reduced levels
    the mean of products differs slightly from the product of means where the
    score changes within a 2x2 block.
overlay
    The stored overlay: the visible image in grey, scored pixels tinted blue.

Below the panels a legend gives each band's colour, name, wavelength and the
share of the preview's pixels it wins.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tilex.omezarr import Output, band_colours, open_output

__all__ = ["MAX_SIDE", "render_preview", "visible_from_overlay", "write_preview"]

MAX_SIDE = 1024
"""Longest side of the pyramid level a preview is drawn from (at most): the side of each panel."""


def _alpha() -> float:
    from tilex.kernels.reference import ALPHA

    return float(ALPHA)


def visible_from_overlay(
    overlay: np.ndarray, score: np.ndarray, alpha: float | None = None
) -> np.ndarray:
    """Recover the grey visible image (uint8 ``[h, w]``) from the overlay and score.

    Parameters
    ----------
    overlay : ndarray, uint8, ``[3, h, w]``
    score : ndarray, float, ``[h, w]``
    alpha : float, optional
        The overlay's blend factor per unit score (default the kernels' ``ALPHA``).

    Examples
    --------
    >>> import numpy as np
    >>> ov = np.array([[[70]], [[70]], [[236]]], np.uint8)  # grey 200/255 at score 1
    >>> int(visible_from_overlay(ov, np.ones((1, 1), np.float32), 0.65)[0, 0])
    200
    """
    a = np.float32(_alpha() if alpha is None else alpha) * np.nan_to_num(
        np.asarray(score, np.float32)
    )
    keep = np.clip(np.float32(1.0) - a, np.float32(1e-3), np.float32(1.0))
    rg = (overlay[0].astype(np.float32) + overlay[1].astype(np.float32)) * np.float32(0.5)
    return np.clip(np.rint(rg / keep), 0, 255).astype(np.uint8)


def _collage_rgb(collage: np.ndarray, winner: np.ndarray, n_bands: int) -> np.ndarray:
    """``uint8 [h, w, 3]``: the winner's colour, brightness from the collage features."""
    value = np.nan_to_num(collage.astype(np.float32).mean(axis=0))
    won = winner > 0
    if won.any():
        lo, hi = np.percentile(value[won], (1, 99))
        value = np.clip((value - lo) / max(float(hi - lo), 1e-12), 0.0, 1.0)
    brightness = (0.25 + 0.75 * value)[..., None]
    palette = np.array([(0, 0, 0), *band_colours(n_bands)], np.float32)
    rgb = palette[np.minimum(winner, n_bands)] * brightness
    rgb[~won] = 0
    return rgb.astype(np.uint8)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render_preview(out: str | os.PathLike | Output, *, max_side: int = MAX_SIDE) -> Any:
    """Draw the three-panel preview of a tilex output as a Pillow image.

    Parameters
    ----------
    out : path-like or Output
        A complete tilex output.
    max_side : int
        Draw from the first pyramid level whose longest side is at most this.

    Returns
    -------
    PIL.Image.Image
        RGB.

    Examples
    --------
    >>> render_preview("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tilex.errors.OutputError: /nonexistent is not a tilex output: ...
    """
    from PIL import Image, ImageDraw

    output = out if isinstance(out, Output) else open_output(out)
    k = output["overlay"].level_for(max_side)
    overlay = np.asarray(output["overlay"].levels[k][...])
    score = np.asarray(output["score"].levels[k][0])
    winner = np.asarray(output["winner"].levels[k][...])
    collage = np.asarray(output["collage"].levels[k][...])
    bands = output.bands
    h, w = winner.shape

    if "visible" in output.images:
        visible = np.moveaxis(np.asarray(output["visible"].levels[k][...]), 0, -1)
    else:  # an output older than the visible image: its grey, from the overlay
        visible = np.repeat(visible_from_overlay(overlay, score)[..., None], 3, axis=2)
    panels = [
        ("collage (winning band)", _collage_rgb(collage, winner, len(bands))),
        ("visible", visible),
        ("visible + hidden (blue)", np.moveaxis(overlay, 0, -1)),
    ]
    size = max(12, min(w, 2048) // 40)
    font = _font(size)
    gap, title_h, row_h = max(8, size // 2), size * 2, int(size * 1.6)
    legend_h = gap + row_h * max(1, len(bands)) + gap
    canvas = Image.new("RGB", (3 * w + 4 * gap, title_h + h + legend_h + gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (title, rgb) in enumerate(panels):
        x = gap + i * (w + gap)
        canvas.paste(Image.fromarray(np.ascontiguousarray(rgb), "RGB"), (x, title_h))
        draw.text((x, size // 3), title, fill=(0, 0, 0), font=font)
    total = max(1, h * w)
    y = title_h + h + gap
    for i, band in enumerate(bands):
        colour = tuple(int(band["colour"][j : j + 2], 16) for j in (0, 2, 4))
        draw.rectangle((gap, y + 2, gap + row_h - 4, y + row_h - 2), fill=colour, outline=(0, 0, 0))
        wl = band.get("wavelength_nm")
        share = 100.0 * np.count_nonzero(winner == i + 1) / total
        text = f"{i + 1}: {band['name']}" + (f"  {wl:g} nm" if wl is not None else "")
        draw.text(
            (gap + row_h + gap, y), f"{text}  ({share:.1f}% of pixels)", fill=(0, 0, 0), font=font
        )
        y += row_h
    if not bands:
        draw.text((gap, y), "no bands", fill=(0, 0, 0), font=font)
    return canvas


def write_preview(
    out: str | os.PathLike, dest: str | os.PathLike | None = None, *, max_side: int = MAX_SIDE
) -> Path:
    """Write the preview of ``out`` as a PNG and return its path.

    Parameters
    ----------
    out : path-like
        A complete tilex output.
    dest : path-like, optional
        The PNG to write; default ``OUT/preview.png``.
    max_side : int
        See :func:`render_preview`.

    Examples
    --------
    >>> write_preview("/nonexistent", "p.png")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tilex.errors.OutputError: /nonexistent is not a tilex output: ...
    """
    output = open_output(out)
    dest = Path(dest) if dest is not None else output.path / "preview.png"
    image = render_preview(output, max_side=max_side)
    dest.parent.mkdir(parents=True, exist_ok=True)
    image.save(dest, format="PNG")
    return dest
