"""Physically based synthetic scenes: layered paint from measured pigment optics.

Kubelka-Munk layers (:mod:`.km`) of measured pigments (:mod:`.spectra`,
:mod:`.palette`) over a ground, seen by a colour camera through the CIE
observer under D65 and by band cameras through Gaussian pass-bands
(:mod:`.observer`, :mod:`.camera`), with hidden content and traps drawn per
recipe (:mod:`.recipe`) and rendered tile-independently (:mod:`.render`).
:func:`render_scene` renders in memory; :func:`synth_physical` (``tilex synth
--model physical``) writes the same pixels as a scan folder.
"""

from tilex.synthetic.physical.recipe import RECIPES, Scene, draw_scene
from tilex.synthetic.physical.scene import PhysicalScene, make_scene, render_scene
from tilex.synthetic.physical.writer import synth_physical

__all__ = [
    "RECIPES",
    "PhysicalScene",
    "Scene",
    "draw_scene",
    "make_scene",
    "render_scene",
    "synth_physical",
]
