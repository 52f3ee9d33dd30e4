"""Whole-scan calibration: what the visible image predicts for each band.

The visible image is sRGB-encoded colour; each band is linear reflectance on
its own scale. Compared in absolute value, every coloured region differs.
With a calibration each band ``i`` is compared with its prediction from the
visible image instead:

- the visible plane is decoded to linear light (the piecewise sRGB EOTF,
  :func:`srgb_to_linear`) unless it is already linear (``visible="linear"``);
- ``mode="affine"``: ``p_i = a_i . [R, G, B, 1]`` of linear RGB;
  ``mode="gain"``: ``p_i = g_i * Y + c_i`` with ``Y`` the Rec. 709 luminance
  of linear RGB (:data:`LINEAR_LUMA`), stored as the same 4 coefficients;
  ``mode="flat"``: the affine model plus a quadratic surface over the scan,
  ``q_i . [u, v, u^2, u v, v^2]`` with ``u, v`` the pixel's column and row
  mapped to ``[-1, 1]`` over the whole scan (:func:`surface_terms`): each
  band's own uneven illumination and vignetting, which no colour explains;
  ``mode="colour"``: the flat model plus a colour table, ``t_i[cell(R, G, B)]``
  with linear RGB cut into :data:`TABLE_CELLS` cells per channel: what a band
  holds for each visible colour beyond the smooth model (a pigment that is
  darker in the infrared than its colour says). A cell's value is the mean
  residual of its pixels shrunk towards 0 by :data:`TABLE_SHRINK` pixels, so a
  rare colour keeps the smooth model, and it is refitted without the pixels
  far from it like the model (:data:`REFITS`). Hidden content is what differs
  from the other pixels of the same visible colour;
  ``mode="registered"``: the colour model plus ``d_i . [dR/dx, dG/dx, dB/dx,
  dR/dy, dG/dy, dB/dy]``, the linear RGB's central differences
  (:func:`gradient_terms`): to first order, a band registered a fraction of
  a pixel off the visible image, which otherwise differs along every edge.
  A prediction then needs one pixel around it (:attr:`Calibration.context`).

The fit is least squares from float64 sums ``X^T X`` and ``X^T y`` of each
sampled square (:func:`tilex.stats.sample_regions`, read straight from the
scan: pointwise, so no halo and no encoder), kept per square and added up in
the order of the squares, so the model is bit-identical whatever the tile
size, the tile order or the grouping of squares into tasks
(:meth:`FitSums.merge`).

Robustness to the hidden content itself: :data:`REFITS` times, the pixels
whose residual exceeds ``CUTOFF`` times a robust scale are dropped, and so is
each sampled square whose median signed residual lies beyond
:data:`SQUARE_CUT` robust spreads of the squares' medians (in that band; from
:data:`SQUARE_MIN` squares up), and the model is refitted. With
``CUTOFF = 1`` each refit keeps about the central two
thirds of the residuals (a trimmed least-squares fit). Hidden content is
spatially coherent and one-signed over large areas, so a looser cut (3
spreads, 2 refits, before 0.1.0's release) let a large hidden region pull the
model, and its lighting surface, towards itself. On 14 held-out physical
scenes, a blurred residual's mean ROC AUC was 0.852 with that fit, 0.883
with the pixel cut alone, and 0.929 with the model fitted on the same scenes rendered
without their hidden content (the designed encoder's evidence: 0.835 and
0.876; ``benchmarks/bench_detection.py`` has the benchmark's own table).
Where the pull remains is the smooth part: the same scenes scored with the
own fit's colour terms and the hidden-free fit's offset and lighting surface
reach the oracle's AUC (0.933 against 0.891 with the weights trained before
this cut), while
swapping the colour table changes nothing. Hence the square cut: a square
inside a hidden region sits apart from the other squares even where each of
its pixels is within the pixel cut, and leaving it out keeps it from bending
the surface. With it those weights' mean AUC on held-out scenes
8000-8019 went from 0.889 to 0.908 (the benchmark's scenes 9000-9021: 0.908
to 0.914, both at the floor's former 8 spreads). The price is paid where
nothing is hidden: what the cut leaves out there is real paint that no colour
explains (a red whose infrared varies with its thickness), which the model
then does not explain either; held-out scene 8018 went from 1.5 % to 2.9 %
flagged at 8 spreads, which is why the noise floor now lies at 11
(:data:`tilex.stats.NOISE_K`). A richer lighting model (the surface times the
luminance or each colour, the multiplicative fall-off a camera has) and
fitting the colour table jointly with the squares' cut were tried and did not
help: more freedom lets the hidden content pull harder.
The scale is ``1.4826 * median |r|`` (the normal-consistent median absolute
residual), the median read from a mergeable histogram of
``|r|`` (integer counts over float32 bit-pattern bins of relative width
2**-7, so it too is independent of the order; the bin's upper edge is used).

Examples
--------
>>> spec = CalibrationSpec(mode="gain")
>>> spec.enabled, spec.visible
(True, 'srgb')
>>> CalibrationSpec(mode="rainbow")
Traceback (most recent call last):
...
tilex.errors.PlanError: --calibrate must be one of none, gain, affine, flat, colour, registered, got 'rainbow'
"""

from tilex.calibration.fitting import (
    CACHE_BYTES,
    FitSums,
    fit,
    fit_image,
    fit_scan,
    fit_squares,
    fit_stride,
)
from tilex.calibration.model import (
    CALIBRATION_MODES,
    CUTOFF,
    LINEAR_LUMA,
    REFITS,
    SQUARE_CUT,
    SQUARE_MIN,
    TABLE_CELLS,
    TABLE_SHRINK,
    VISIBLE_ENCODINGS,
    Calibration,
    CalibrationSpec,
    colour_cells,
    gradient_terms,
    srgb_to_linear,
    surface_terms,
)

__all__ = [
    "CACHE_BYTES",
    "CALIBRATION_MODES",
    "CUTOFF",
    "LINEAR_LUMA",
    "REFITS",
    "SQUARE_CUT",
    "SQUARE_MIN",
    "TABLE_CELLS",
    "TABLE_SHRINK",
    "VISIBLE_ENCODINGS",
    "Calibration",
    "CalibrationSpec",
    "FitSums",
    "colour_cells",
    "fit",
    "fit_image",
    "fit_scan",
    "fit_squares",
    "fit_stride",
    "gradient_terms",
    "srgb_to_linear",
    "surface_terms",
]
