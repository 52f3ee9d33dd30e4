"""The synthetic scene: a hidden under-drawing under a still life, pixel by pixel.

The picture
-----------
Two paint layers over a bright chalk ground:

* the **hidden layer**: a portrait under-drawing in carbon black (head, eyes,
  nose, mouth, hair, neck, shoulders, hatching), drawn with a slightly
  wobbling hand, directly on the ground;
* the **top layer**: a later still life (wall, table, bowl, fruit) in muted,
  mid-to-light earth tones with brush-stroke texture.

Each band at wavelength ``lambda`` sees
``illum_i * ((1 - t) * R_top(lambda) + t * R_hidden) + noise_i`` where the
top layer's transparency ``t`` grows with wavelength (about 0.02 at 365 nm,
0.1 at 550 nm, 0.6 at 850 nm, 0.9 past 1300 nm) and is lower where the paint
is thicker; ``R_top(lambda)`` interpolates the top layer's colour over
wavelength (blue near 450 nm, green near 550 nm, red near 620 nm; pigments
reflect more in the infrared); ``illum_i`` is an uneven illumination
(vignetting and a gradient that differs per band) and ``noise_i`` a sensor
noise that grows in the infrared. The visible image is the top layer under
its own illumination, with a little noise.

Shapes are distances in coordinates scaled by the image's shorter side and
textures come from :mod:`tilex.synthetic.noise`, so :func:`render` gives any
region exactly as it is inside the whole image.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from tilex.colour import LUMA
from tilex.synthetic.noise import gauss_noise, mix32_int, value_noise
from tilex.synthetic.params import (
    check_bands,
    check_seed,
    check_size,
    parse_size,
    wavelengths,
)
from tilex.synthetic.shapes import Shape, coverage, ellipse_inside

__all__ = ["SynthRegion", "render"]


@dataclass(frozen=True)
class _Model:
    """The scene's scalar parameters, drawn from (size, bands, seed); pixels from :meth:`render`."""

    height: int
    width: int
    n_bands: int
    seed: int

    # noise and illumination, in reflectance units
    visible_noise: float = 0.006
    band_noise: float = 0.025
    line_width: float = 0.018  # carbon stroke width, in units of the shorter side
    hue_weight: float = 0.3  # how much a band departs from luminance towards its colour

    def __post_init__(self) -> None:
        rnd = random.Random(self.seed)  # scalar parameters only, stable across versions
        j = lambda s: s * (1.0 + 0.16 * (rnd.random() - 0.5))  # noqa: E731
        cx, cy = 0.02 * (rnd.random() - 0.5), -0.10 + 0.04 * (rnd.random() - 0.5)
        ha, hb = j(0.16), j(0.21)
        eye_dx, eye_y, eye_a, eye_b = (
            j(0.065),
            cy - 0.03 + 0.02 * (rnd.random() - 0.5),
            j(0.035),
            j(0.016),
        )
        mouth_y = cy + 0.08 + 0.01 * (rnd.random() - 0.5)
        sh_x, sh_y, sh_a, sh_b = 0.02 * (rnd.random() - 0.5), 0.46, j(0.40), j(0.25)
        shapes = [
            Shape("outline", (cx, cy, ha, hb)),  # head
            *(Shape("outline", (cx + sx * eye_dx, eye_y, eye_a, eye_b)) for sx in (-1, 1)),
            *(Shape("fill", (cx + sx * eye_dx, eye_y, 0.012, 0.012)) for sx in (-1, 1)),
            Shape("segment", (cx, cy - 0.08, cx + 0.018, cy)),  # nose
            Shape("segment", (cx + 0.018, cy, cx - 0.022, cy + 0.012)),
            Shape("outline", (cx, mouth_y, j(0.055), j(0.022)), keep=(mouth_y, 0.0, True)),
            *(
                Shape("segment", (cx + sx * 0.06, cy + hb * 0.93, cx + sx * 0.075, cy + hb + 0.12))
                for sx in (-1, 1)
            ),  # neck
            Shape("outline", (sh_x, sh_y, sh_a, sh_b), keep=(sh_y, 0.0, False)),  # shoulders
            # hair: the top of the head, cut by a slanted parting, shaded densely
            Shape(
                "fill",
                (cx, cy - 0.05, ha * 1.08, hb * 0.95),
                keep=(cy - 0.09 + 0.03 * cx / ha, -0.03 / ha, False),
                density=0.9,
            ),
        ]
        # shading hatches on the shadow side of the face: parallel strokes
        angle = math.radians(50 + 20 * rnd.random())
        ux, uy = math.cos(angle), math.sin(angle)  # along a stroke
        for k in range(5):
            length = j(0.08)
            hx0 = cx - 0.10 - 0.032 * k * uy + 0.004 * (rnd.random() - 0.5)
            hy0 = cy + 0.105 + 0.032 * k * ux
            hx, hy = 0.5 * length * ux, 0.5 * length * uy
            shapes.append(Shape("segment", (hx0 - hx, hy0 - hy, hx0 + hx, hy0 + hy)))
        # the still life of the top layer
        top = {
            "table_y": 0.20 + 0.06 * (rnd.random() - 0.5),
            "bowl": (0.18 * (rnd.random() - 0.5), 0.18, j(0.22), j(0.09)),
            "fruit": [
                (0.22 * (rnd.random() - 0.5), 0.07 + 0.03 * rnd.random(), j(0.055))
                for _ in range(3)
            ],
            "stroke_angle": math.pi * rnd.random(),
        }
        # uneven illumination: one gradient per band (and one for the visible image)
        gradients = [
            (0.04 * (rnd.random() - 0.5), 0.04 * (rnd.random() - 0.5))
            for _ in range(self.n_bands + 1)
        ]
        object.__setattr__(self, "_shapes", tuple(shapes))
        object.__setattr__(self, "_top", top)
        object.__setattr__(self, "_gradients", gradients)
        object.__setattr__(
            self,
            "_keys",
            {
                name: mix32_int(self.seed * 0x9E3779B1 + mix32_int(i + 1))
                for i, name in enumerate(
                    (
                        "wobble_x",
                        "wobble_y",
                        "ground",
                        "stroke",
                        "thick",
                        "blotch",
                        "vis_r",
                        "vis_g",
                        "vis_b",
                        "edge",
                    )
                    + tuple(f"band{k}" for k in range(self.n_bands))
                )
            },
        )

    # ------------------------------------------------------------------
    @property
    def side(self) -> float:
        return float(min(self.height, self.width))

    def band_wavelengths(self) -> list[int]:
        return wavelengths(self.n_bands)

    def transparency(self, nm: float) -> float:
        """Top-layer transparency at ``nm``: logistic in wavelength, 0.02 .. 0.93."""
        return 0.02 + 0.91 / (1.0 + math.exp(-(nm - 830.0) / 110.0))

    def spectral_weights(self, nm: float) -> tuple[float, float, float]:
        """``R_top(nm) = wr * r + wg * g + wb * b``: luminance plus a damped hue term.

        The palette (lead white, ochres, earths) has broad, flat reflectance
        spectra: every band sees about the luminance, nudged towards the colour
        channel nearest ``nm`` (blue in the UV, red in the infrared).
        """
        lum = LUMA
        anchors = [(450.0, (0.0, 0.0, 1.0)), (550.0, (0.0, 1.0, 0.0)), (620.0, (1.0, 0.0, 0.0))]
        if nm <= anchors[0][0]:
            chan = anchors[0][1]
        elif nm >= anchors[-1][0]:
            chan = anchors[-1][1]
        else:
            for (n0, w0), (n1, w1) in zip(anchors, anchors[1:], strict=False):
                if nm <= n1:
                    f = (nm - n0) / (n1 - n0)
                    chan = tuple(a + f * (b - a) for a, b in zip(w0, w1, strict=True))
                    break
        k = self.hue_weight
        return tuple(lw + k * (cw - lw) for lw, cw in zip(lum, chan, strict=True))  # type: ignore[return-value]

    # ------------------------------------------------------------------
    def _coords(self, y0: int, y1: int, x0: int, x1: int):
        """Pixel-centre coordinates centred on the image, in shorter-side units."""
        s = self.side
        ys = np.arange(y0, y1, dtype=np.float64)[:, None]
        xs = np.arange(x0, x1, dtype=np.float64)[None, :]
        X = ((xs + 0.5 - self.width / 2.0) / s).astype(np.float32)
        Y = ((ys + 0.5 - self.height / 2.0) / s).astype(np.float32)
        # float32 from here on: exact for pixel indices below 2**24
        return ys.astype(np.float32), xs.astype(np.float32), X, Y

    def hidden_cover(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Carbon coverage in [0, 1] of the under-drawing at (X, Y).

        Shapes whose box lies farther than a stroke (plus the wobble and the
        anti-aliasing ramp) from this region are skipped: they would add an
        exact 0, so culling keeps regions bit-identical to the whole image.
        """
        k, s = self._keys, self.side
        hw = 0.5 * self.line_width
        wobble = 0.006
        # the wobble moves points by at most wobble / 2; 2 px covers the ramp and rounding
        box = (
            float(X.min()) - wobble,
            float(X.max()) + wobble,
            float(Y.min()) - wobble,
            float(Y.max()) + wobble,
        )
        near = [sh for sh in self._shapes if sh.may_touch(*box, hw + 2.0 / s)]
        shape = np.broadcast_shapes(X.shape, Y.shape)
        if not near:
            return np.zeros(shape, dtype=np.float32)
        # a hand-drawn wobble: the drawing is displaced by smooth noise
        Xw = X + wobble * (value_noise(X, Y, 0.05, k["wobble_x"]) - 0.5)
        Yw = Y + wobble * (value_noise(X, Y, 0.05, k["wobble_y"]) - 0.5)
        cover = np.zeros(shape, dtype=np.float32)
        for sh in near:
            cover = np.maximum(cover, sh.cover(Xw, Yw, hw, s))
        return cover

    def top_colour(self, X: np.ndarray, Y: np.ndarray, ys: np.ndarray, xs: np.ndarray):
        """Top-layer reflectance (r, g, b) and paint thickness in [0, 1]."""
        k, t, s = self._keys, self._top, self.side
        wall = (0.80, 0.76, 0.66)
        table = (0.74, 0.66, 0.56)
        bowl = (0.66, 0.72, 0.70)
        fruit = (0.84, 0.70, 0.56)
        # large soft blotches across the wall
        blotch = value_noise(X, Y, 0.25, k["blotch"]) - 0.5
        edge = 0.004 * (value_noise(X, Y, 0.03, k["edge"]) - 0.5)
        in_table = coverage(t["table_y"] - Y + edge, 0.0, s)
        bx, by, ba, bb = t["bowl"]
        in_bowl = coverage(ellipse_inside(X, Y, bx, by, ba, bb) + edge, 0.0, s)
        in_bowl = in_bowl * (Y > by - 0.25 * bb)
        in_fruit = np.zeros_like(X * Y)
        for fx, fy, fr in t["fruit"]:
            in_fruit = np.maximum(
                in_fruit, coverage(ellipse_inside(X, Y, bx + fx, fy, fr, fr) + edge, 0.0, s)
            )
        colours = []
        for c in range(3):
            v = wall[c] + 0.03 * blotch
            v = v + (table[c] - v) * in_table
            v = v + (bowl[c] - v) * in_bowl
            v = v + (fruit[c] - v) * in_fruit
            colours.append(v)
        # brush strokes: anisotropic noise along a stroke direction, a few px wide
        ca, sa = math.cos(t["stroke_angle"]), math.sin(t["stroke_angle"])
        u = xs * ca + ys * sa
        w = -xs * sa + ys * ca
        cell = max(2.0, s / 300.0)
        stroke = value_noise(u / 6.0, w, cell, k["stroke"]) - 0.5
        texture = 1.0 + 0.05 * stroke
        thick = value_noise(X, Y, 0.08, k["thick"])
        return [c * texture for c in colours], thick

    def vignetting(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """The lighting rig's fall-off, shared by every capture: 1 at the centre, 0.88 at the corners."""
        u = X * (2.0 * self.side / self.width)
        v = Y * (2.0 * self.side / self.height)
        return 1.0 - 0.06 * (u * u + v * v)

    def gradient(self, index: int, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        """Capture ``index``'s own uneven lighting (the visible image is ``n_bands``)."""
        gx, gy = self._gradients[index]
        return 1.0 + gx * X + gy * Y

    # ------------------------------------------------------------------
    def render(self, y0: int, y1: int, x0: int, x1: int) -> SynthRegion:
        ys, xs, X, Y = self._coords(y0, y1, x0, x1)
        k, h, w = self._keys, y1 - y0, x1 - x0
        cover = self.hidden_cover(X, Y)
        ground = 0.86 + 0.02 * (value_noise(X, Y, 0.1, k["ground"]) - 0.5)
        hidden = ground + (0.07 - ground) * cover  # carbon black on chalk
        (r, g, b), thick = self.top_colour(X, Y, ys, xs)
        vignetting = self.vignetting(X, Y)

        light = vignetting * self.gradient(self.n_bands, X, Y)
        visible = np.empty((h, w, 3), dtype=np.uint8)
        for c, (plane, key) in enumerate(zip((r, g, b), ("vis_r", "vis_g", "vis_b"), strict=True)):
            v = plane * light + self.visible_noise * gauss_noise(xs, ys, k[key])
            visible[..., c] = _quantise(v, 255.0, np.uint8)

        bands = np.empty((self.n_bands, h, w), dtype=np.uint16)
        for i, nm in enumerate(self.band_wavelengths()):
            wr, wg, wb = self.spectral_weights(nm)
            top = wr * r + wg * g + wb * b
            t = self.transparency(nm) * (1.0 - 0.25 * thick)  # thick paint hides more
            value = (top + (hidden - top) * t) * (vignetting * self.gradient(i, X, Y))
            sigma = self.band_noise * (1.0 + 0.6 * max(0.0, (nm - 1000.0) / 700.0))
            value += sigma * gauss_noise(xs, ys, k[f"band{i}"])
            bands[i] = _quantise(value, 65535.0, np.uint16)
        mask = np.broadcast_to(cover >= 0.5, (h, w)).astype(np.uint8)
        return SynthRegion(visible, bands, mask)


def _quantise(v: np.ndarray, full: float, dtype) -> np.ndarray:
    return np.floor(np.clip(v, 0.0, 1.0) * full + 0.5).astype(dtype)


class SynthRegion(NamedTuple):
    """One rendered region of a synthetic scan (on-disk dtypes and layouts)."""

    visible: np.ndarray  # uint8 [h, w, 3]
    bands: np.ndarray  # uint16 [N, h, w]
    mask: np.ndarray  # uint8 [h, w], 1 on the hidden figure


def render(
    size: tuple[int, int] | str,
    bands: int = 8,
    seed: int = 0,
    region: tuple[int, int, int, int] | None = None,
) -> SynthRegion:
    """Render a region of the synthetic scan in memory, exactly as :func:`synth` writes it.

    Parameters
    ----------
    size
        The whole scan's ``(H, W)`` (or ``"HxW"``); features scale with it.
    bands, seed
        As for :func:`synth`.
    region
        ``(y0, y1, x0, x1)``; the whole scan when ``None``.

    Examples
    --------
    >>> part = render((256, 256), bands=3, region=(0, 64, 32, 96))
    >>> part.visible.shape, part.bands.shape, part.mask.dtype.name
    ((64, 64, 3), (3, 64, 64), 'uint8')
    """
    h, w = parse_size(size)
    check_size(h, w)
    check_bands(bands)
    check_seed(seed)
    y0, y1, x0, x1 = region or (0, h, 0, w)
    if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
        raise ValueError(f"region {(y0, y1, x0, x1)} is not inside the {h}x{w} scan")
    return _Model(h, w, int(bands), int(seed)).render(y0, y1, x0, x1)
