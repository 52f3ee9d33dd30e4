"""Synthetic multispectral scans with a known hidden figure, streamed tile by tile.

:func:`synth` writes a scan folder that :func:`tilex.scan.open_scan` reads:
``scan.json``, a visible RGB BigTIFF, one uint16 BigTIFF per band, plus the
ground truth ``hidden_mask.tif`` (uint8, 1 where the hidden figure is) and
``synth.json`` (the generator's parameters). The manifest names only the
visible image and the bands; the mask is found by its file name.

The picture (a portrait under-drawing beneath a later still life, seen more
clearly the longer the wavelength) is described in
:mod:`tilex.synthetic.scene`; the parameters are checked in
:mod:`~tilex.synthetic.params`; the files are written by
:mod:`~tilex.synthetic.writer`.

A second, physically based generator (Kubelka-Munk layers of measured
pigments, CIE colour, a camera per band, traps, scenes with nothing hidden)
lives in :mod:`tilex.synthetic.physical`: ``render_scene`` in memory,
``synth_physical`` (``tilex synth --model physical``) on disk, same layout.

Streaming
---------
Every pixel is a pure function of ``(y, x, seed)`` and the scan's size:
textures are hash-based value noise on integer lattices, shapes are distances
in coordinates scaled by the image's shorter side, and only IEEE-exact
operations (``+ - * /``, ``sqrt``, ``floor``) touch pixel arrays. Any region
therefore renders bit for bit as it does inside the whole image
(:func:`render`), and :func:`synth` writes arbitrarily large scans with memory
bounded by the tile size, the band count and the worker count.
"""

from tilex.synthetic.params import MAX_BANDS, band_names, parse_size, wavelengths
from tilex.synthetic.scene import SynthRegion, render
from tilex.synthetic.writer import MASK_FILE, PARAMS_FILE, synth

__all__ = [
    "MASK_FILE",
    "MAX_BANDS",
    "PARAMS_FILE",
    "SynthRegion",
    "band_names",
    "parse_size",
    "render",
    "synth",
    "wavelengths",
]
