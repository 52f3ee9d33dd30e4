"""Synthetic multispectral scans with a known hidden figure, streamed tile by tile.

:func:`synth` writes a scan folder that :func:`tilex.scan.open_scan` reads:
``scan.json``, a visible RGB BigTIFF, one uint16 BigTIFF per band, plus the
ground truth ``hidden_mask.tif`` (uint8, 1 where the hidden figure is) and
``synth.json`` (the generator's parameters). The manifest names only the
visible image and the bands; the mask is found by its file name.

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

from __future__ import annotations

import json
import math
import os
import queue
import random
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tilex._version import __version__
from tilex.errors import OutputExistsError

__all__ = [
    "MASK_FILE",
    "MAX_BANDS",
    "SynthRegion",
    "band_names",
    "parse_size",
    "render",
    "synth",
    "wavelengths",
]

MASK_FILE = "hidden_mask.tif"
"""File name of the ground-truth mask in a synthetic scan folder."""

PARAMS_FILE = "synth.json"
"""File name of the generator's parameters in a synthetic scan folder."""

MAX_BANDS = 254
"""Most bands a scan may have (the fused winner map is uint8, 0 = none)."""

_UV_NM, _IR_NM = 365.0, 1700.0
_U32 = 0xFFFFFFFF


# --------------------------------------------------------------------------
# parameters


def parse_size(text: str | int | tuple[int, int]) -> tuple[int, int]:
    """Parse a scan size: ``"HxW"``, ``"N"`` (square), an int or a pair.

    Raises :class:`ValueError` with the expected form when the text is not a
    size or a side is not a positive integer.

    Examples
    --------
    >>> parse_size("768x1024")
    (768, 1024)
    >>> parse_size("512")
    (512, 512)
    """
    if isinstance(text, tuple | list):
        parts = [str(v) for v in text]
    else:
        parts = re.split(r"\s*[xX×,]\s*", str(text).strip())
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ValueError(f"size {text!r} is not HxW or N (e.g. 4096x6144 or 4096)")
    h, w = (int(p) for p in parts)
    if h < 1 or w < 1:
        raise ValueError(f"size {text!r}: height and width must be at least 1")
    return h, w


def wavelengths(n_bands: int) -> list[int]:
    """Band centre wavelengths in nm, spread geometrically over 365..1700 nm.

    A single band sits at 1000 nm (infrared sees the most under the paint).
    Rounded wavelengths are distinct for every count up to :data:`MAX_BANDS`.

    Examples
    --------
    >>> wavelengths(4)
    [365, 610, 1018, 1700]
    """
    _check_bands(n_bands)
    if n_bands == 1:
        return [1000]
    ratio = (_IR_NM / _UV_NM) ** (1.0 / (n_bands - 1))
    return [round(_UV_NM * ratio**i) for i in range(n_bands)]


def band_names(n_bands: int) -> list[str]:
    """Band names ``uv365``, ``vis550``, ``ir1000``... from :func:`wavelengths`.

    Examples
    --------
    >>> band_names(3)
    ['uv365', 'vis788', 'ir1700']
    """
    return [_band_name(nm) for nm in wavelengths(n_bands)]


def _band_name(nm: int) -> str:
    prefix = "uv" if nm < 400 else "vis" if nm < 800 else "ir"
    return f"{prefix}{nm}"


def _check_bands(n_bands: int) -> None:
    if not isinstance(n_bands, int | np.integer) or not 1 <= n_bands <= MAX_BANDS:
        raise ValueError(f"bands must be an integer from 1 to {MAX_BANDS}, got {n_bands!r}")


def _check_size(h: int, w: int) -> None:
    # pixel indices are float32 in the renderer: exact below 2**24
    if max(h, w) > 2**24:
        raise ValueError(f"size {h}x{w}: sides up to {2**24} px are supported")


def _check_seed(seed: int) -> None:
    if not isinstance(seed, int | np.integer) or not 0 <= seed <= _U32:
        raise ValueError(f"seed must be an integer from 0 to {_U32}, got {seed!r}")


# --------------------------------------------------------------------------
# hash-based noise: pure functions of integer coordinates


def _mix32_int(h: int) -> int:
    """Python-int twin of :func:`_mix32` for scalar keys (no NumPy overflow warnings)."""
    h &= _U32
    h ^= h >> 16
    h = (h * 0x7FEB352D) & _U32
    h ^= h >> 15
    h = (h * 0x846CA68B) & _U32
    h ^= h >> 16
    return h


def _mix32(h: np.ndarray) -> np.ndarray:
    """Chris Wellons' ``lowbias32`` integer hash on uint32 arrays (wraps on purpose)."""
    h = h ^ (h >> np.uint32(16))
    h *= np.uint32(0x7FEB352D)
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x846CA68B)
    h ^= h >> np.uint32(16)
    return h


def _hash2(ix: np.ndarray, iy: np.ndarray, key: int) -> np.ndarray:
    """uint32 hash of integer lattice coordinates (broadcast) under ``key``."""
    hy = _mix32(iy.astype(np.int64).astype(np.uint32) ^ np.uint32(key))
    return _mix32(ix.astype(np.int64).astype(np.uint32) + hy)


def _unit(h: np.ndarray) -> np.ndarray:
    """uint32 hash -> float32 in [0, 1), exactly (24 bits)."""
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / 16777216.0)


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * (3.0 - 2.0 * t)


def _value_noise(x: np.ndarray, y: np.ndarray, cell: float, key: int) -> np.ndarray:
    """Smooth value noise in [0, 1) with lattice spacing ``cell`` (same units as x, y).

    Bilinear interpolation (smoothstep weights) of hashed lattice values. When
    ``x`` is a row ``[1, w]`` and ``y`` a column ``[h, 1]`` the lattice values
    are hashed once per lattice point and interpolated along x per lattice
    row first: the same numbers at a fraction of the cost.
    """
    fx, fy = x / cell, y / cell
    x0, y0 = np.floor(fx), np.floor(fy)
    tx, ty = _fade(fx - x0), _fade(fy - y0)
    if x.ndim == 2 and y.ndim == 2 and x.shape[0] == 1 and y.shape[1] == 1:
        # lattice rows that this region touches, interpolated along x once each
        rows = np.arange(y0.min(), y0.max() + 2, dtype=np.float32)[:, None]
        lo = _unit(_hash2(x0, rows, key))
        hi = _unit(_hash2(x0 + 1, rows, key))
        along = lo + (hi - lo) * tx  # [rows, w]
        j = (y0[:, 0] - rows[0, 0]).astype(np.intp)
        top, bottom = along[j], along[j + 1]
        return top + (bottom - top) * ty
    v00 = _unit(_hash2(x0, y0, key))
    v10 = _unit(_hash2(x0 + 1, y0, key))
    v01 = _unit(_hash2(x0, y0 + 1, key))
    v11 = _unit(_hash2(x0 + 1, y0 + 1, key))
    top = v00 + (v10 - v00) * tx
    bottom = v01 + (v11 - v01) * tx
    return top + (bottom - top) * ty


def _gauss_noise(ix: np.ndarray, iy: np.ndarray, key: int) -> np.ndarray:
    """Per-pixel standard normal-ish noise: Irwin-Hall sum of a hash's 4 bytes."""
    h = _hash2(ix, iy, key)
    total = (
        (h & np.uint32(255)).astype(np.float32)
        + ((h >> np.uint32(8)) & np.uint32(255)).astype(np.float32)
        + ((h >> np.uint32(16)) & np.uint32(255)).astype(np.float32)
        + (h >> np.uint32(24)).astype(np.float32)
    )
    # mean 4 * 127.5, variance 4 * (256**2 - 1) / 12
    return (total - np.float32(510.0)) * np.float32(1.0 / 147.8006)


# --------------------------------------------------------------------------
# shapes: distances in units of the image's shorter side


def _segment(px, py, ax, ay, bx, by) -> np.ndarray:
    dx, dy = bx - ax, by - ay
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    ex, ey = px - (ax + t * dx), py - (ay + t * dy)
    return np.sqrt(ex * ex + ey * ey)


def _ellipse_outline(px, py, cx, cy, a, b) -> np.ndarray:
    """Distance to an ellipse's outline, first order (|r - 1| / |grad r|)."""
    ux, uy = (px - cx) / a, (py - cy) / b
    r = np.sqrt(ux * ux + uy * uy)
    gx, gy = ux / a, uy / b
    grad = np.sqrt(gx * gx + gy * gy) / np.maximum(r, 1e-9)
    return np.abs(r - 1.0) / np.maximum(grad, 1e-9)


def _ellipse_inside(px, py, cx, cy, a, b) -> np.ndarray:
    """Signed-ish distance, negative inside an ellipse (scaled by its smaller axis)."""
    ux, uy = (px - cx) / a, (py - cy) / b
    return (np.sqrt(ux * ux + uy * uy) - 1.0) * min(a, b)


def _coverage(dist: np.ndarray, half_width: float, px_per_unit: float) -> np.ndarray:
    """Anti-aliased (one pixel ramp) coverage of a stroke of ``half_width``."""
    return np.clip((half_width - dist) * px_per_unit + 0.5, 0.0, 1.0)


@dataclass(frozen=True)
class _Shape:
    """One element of the under-drawing, with its bounding box for culling.

    ``kind`` is ``"outline"`` (an ellipse's outline, ``args = cx, cy, a, b``),
    ``"segment"`` (``ax, ay, bx, by``) or ``"fill"`` (a filled ellipse).
    ``keep`` optionally restricts it to ``Y < k0 + k1 * X`` (``below=False``)
    or ``Y > k0 + k1 * X`` (``below=True``); ``density`` scales its coverage.
    """

    kind: str
    args: tuple[float, float, float, float]
    keep: tuple[float, float, bool] | None = None
    density: float = 1.0

    def may_touch(self, x_lo: float, x_hi: float, y_lo: float, y_hi: float, pad: float) -> bool:
        """Whether any point of the box can get coverage, stroke ``pad`` included.

        Conservative for the distances used by :meth:`cover`: a segment's
        distance is at least its box's; an ellipse's first-order distance is at
        least ``|r - 1| * min(a, b)``, and ``r`` (a norm) has its minimum over
        a box at the clamped centre and its maximum at a corner.
        """
        if self.kind == "segment":
            ax, ay, bx, by = self.args
            return (min(ax, bx) - pad <= x_hi and max(ax, bx) + pad >= x_lo
                    and min(ay, by) - pad <= y_hi and max(ay, by) + pad >= y_lo)
        cx, cy, a, b = self.args
        dx = (max(x_lo - cx, 0.0, cx - x_hi) / a) ** 2
        dy = (max(y_lo - cy, 0.0, cy - y_hi) / b) ** 2
        margin = pad / min(a, b)
        if math.sqrt(dx + dy) > 1.0 + margin:
            return False  # wholly outside
        if self.kind == "fill":
            return True
        far_x = max(abs(x_lo - cx), abs(x_hi - cx)) / a
        far_y = max(abs(y_lo - cy), abs(y_hi - cy)) / b
        return math.sqrt(far_x**2 + far_y**2) >= 1.0 - margin  # not wholly inside the outline

    def cover(self, X: np.ndarray, Y: np.ndarray, half_width: float, px: float) -> np.ndarray:
        if self.kind == "segment":
            c = _coverage(_segment(X, Y, *self.args), half_width, px)
        elif self.kind == "outline":
            c = _coverage(_ellipse_outline(X, Y, *self.args), half_width, px)
        else:
            c = _coverage(_ellipse_inside(X, Y, *self.args), 0.0, px)
        if self.keep is not None:
            k0, k1, below = self.keep
            line = k0 + k1 * X
            c = np.where(Y > line if below else Y < line, c, 0.0)
        return c * self.density if self.density != 1.0 else c


# --------------------------------------------------------------------------
# the model: scalar parameters from (size, bands, seed), pixels from render()


@dataclass(frozen=True)
class _Model:
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
        eye_dx, eye_y, eye_a, eye_b = j(0.065), cy - 0.03 + 0.02 * (rnd.random() - 0.5), j(0.035), j(0.016)
        mouth_y = cy + 0.08 + 0.01 * (rnd.random() - 0.5)
        sh_x, sh_y, sh_a, sh_b = 0.02 * (rnd.random() - 0.5), 0.46, j(0.40), j(0.25)
        shapes = [
            _Shape("outline", (cx, cy, ha, hb)),  # head
            *(_Shape("outline", (cx + sx * eye_dx, eye_y, eye_a, eye_b)) for sx in (-1, 1)),
            *(_Shape("fill", (cx + sx * eye_dx, eye_y, 0.012, 0.012)) for sx in (-1, 1)),
            _Shape("segment", (cx, cy - 0.08, cx + 0.018, cy)),  # nose
            _Shape("segment", (cx + 0.018, cy, cx - 0.022, cy + 0.012)),
            _Shape("outline", (cx, mouth_y, j(0.055), j(0.022)), keep=(mouth_y, 0.0, True)),
            *(_Shape("segment", (cx + sx * 0.06, cy + hb * 0.93, cx + sx * 0.075, cy + hb + 0.12))
              for sx in (-1, 1)),  # neck
            _Shape("outline", (sh_x, sh_y, sh_a, sh_b), keep=(sh_y, 0.0, False)),  # shoulders
            # hair: the top of the head, cut by a slanted parting, shaded densely
            _Shape("fill", (cx, cy - 0.05, ha * 1.08, hb * 0.95),
                   keep=(cy - 0.09 + 0.03 * cx / ha, -0.03 / ha, False), density=0.9),
        ]
        # shading hatches on the shadow side of the face: parallel strokes
        angle = math.radians(50 + 20 * rnd.random())
        ux, uy = math.cos(angle), math.sin(angle)  # along a stroke
        for k in range(5):
            length = j(0.08)
            hx0 = cx - 0.10 - 0.032 * k * uy + 0.004 * (rnd.random() - 0.5)
            hy0 = cy + 0.105 + 0.032 * k * ux
            hx, hy = 0.5 * length * ux, 0.5 * length * uy
            shapes.append(_Shape("segment", (hx0 - hx, hy0 - hy, hx0 + hx, hy0 + hy)))
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
        object.__setattr__(self, "_keys", {
            name: _mix32_int(self.seed * 0x9E3779B1 + _mix32_int(i + 1))
            for i, name in enumerate(
                ("wobble_x", "wobble_y", "ground", "stroke", "thick", "blotch", "vis_r",
                 "vis_g", "vis_b", "edge") + tuple(f"band{k}" for k in range(self.n_bands))
            )
        })

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
        lum = (0.299, 0.587, 0.114)
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
        box = (float(X.min()) - wobble, float(X.max()) + wobble,
               float(Y.min()) - wobble, float(Y.max()) + wobble)
        near = [sh for sh in self._shapes if sh.may_touch(*box, hw + 2.0 / s)]
        shape = np.broadcast_shapes(X.shape, Y.shape)
        if not near:
            return np.zeros(shape, dtype=np.float32)
        # a hand-drawn wobble: the drawing is displaced by smooth noise
        Xw = X + wobble * (_value_noise(X, Y, 0.05, k["wobble_x"]) - 0.5)
        Yw = Y + wobble * (_value_noise(X, Y, 0.05, k["wobble_y"]) - 0.5)
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
        blotch = _value_noise(X, Y, 0.25, k["blotch"]) - 0.5
        edge = 0.004 * (_value_noise(X, Y, 0.03, k["edge"]) - 0.5)
        in_table = _coverage(t["table_y"] - Y + edge, 0.0, s)
        bx, by, ba, bb = t["bowl"]
        in_bowl = _coverage(_ellipse_inside(X, Y, bx, by, ba, bb) + edge, 0.0, s)
        in_bowl = in_bowl * (Y > by - 0.25 * bb)
        in_fruit = np.zeros_like(X * Y)
        for fx, fy, fr in t["fruit"]:
            in_fruit = np.maximum(
                in_fruit, _coverage(_ellipse_inside(X, Y, bx + fx, fy, fr, fr) + edge, 0.0, s)
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
        stroke = _value_noise(u / 6.0, w, cell, k["stroke"]) - 0.5
        texture = 1.0 + 0.05 * stroke
        thick = _value_noise(X, Y, 0.08, k["thick"])
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
        ground = 0.86 + 0.02 * (_value_noise(X, Y, 0.1, k["ground"]) - 0.5)
        hidden = ground + (0.07 - ground) * cover  # carbon black on chalk
        (r, g, b), thick = self.top_colour(X, Y, ys, xs)
        vignetting = self.vignetting(X, Y)

        light = vignetting * self.gradient(self.n_bands, X, Y)
        visible = np.empty((h, w, 3), dtype=np.uint8)
        for c, (plane, key) in enumerate(zip((r, g, b), ("vis_r", "vis_g", "vis_b"), strict=True)):
            v = plane * light + self.visible_noise * _gauss_noise(xs, ys, k[key])
            visible[..., c] = _quantise(v, 255.0, np.uint8)

        bands = np.empty((self.n_bands, h, w), dtype=np.uint16)
        for i, nm in enumerate(self.band_wavelengths()):
            wr, wg, wb = self.spectral_weights(nm)
            top = wr * r + wg * g + wb * b
            t = self.transparency(nm) * (1.0 - 0.25 * thick)  # thick paint hides more
            value = (top + (hidden - top) * t) * (vignetting * self.gradient(i, X, Y))
            sigma = self.band_noise * (1.0 + 0.6 * max(0.0, (nm - 1000.0) / 700.0))
            value += sigma * _gauss_noise(xs, ys, k[f"band{i}"])
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
    _check_size(h, w)
    _check_bands(bands)
    _check_seed(seed)
    y0, y1, x0, x1 = region or (0, h, 0, w)
    if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
        raise ValueError(f"region {(y0, y1, x0, x1)} is not inside the {h}x{w} scan")
    return _Model(h, w, int(bands), int(seed)).render(y0, y1, x0, x1)


# --------------------------------------------------------------------------
# writing


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
    _check_size(h, w)
    _check_bands(bands)
    _check_seed(seed)
    if not isinstance(tile, int) or tile < 16 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile!r}")
    codec = {"zstd": "zstd", "zlib": "zlib", "none": None}
    if compression not in codec:
        raise ValueError(f"compression must be one of {sorted(codec)}, got {compression!r}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputExistsError(f"{out}: exists and is not empty; pass overwrite=True or choose another folder")
    out.mkdir(parents=True, exist_ok=True)

    model = _Model(h, w, int(bands), int(seed))
    names = band_names(bands)
    nms = model.band_wavelengths()
    files = ["visible.tif", *(f"{n}.tif" for n in names), MASK_FILE]
    common = {"bigtiff": True, "tile": (tile, tile), "compression": codec[compression],
              "maxworkers": 1, "metadata": None}
    specs = [
        dict(shape=(h, w, 3), dtype=np.uint8, photometric="rgb", planarconfig="contig", **common),
        *(dict(shape=(h, w), dtype=np.uint16, photometric="minisblack", **common) for _ in names),
        dict(shape=(h, w), dtype=np.uint8, photometric="minisblack", **common),
    ]

    def planes(region: SynthRegion) -> list[np.ndarray]:
        return [region.visible, *region.bands, region.mask]

    regions = [(y, min(y + tile, h), x, min(x + tile, w))
               for y in range(0, h, tile) for x in range(0, w, tile)]
    workers = workers or min(8, os.cpu_count() or 1)
    _write_streams(
        [out / f for f in files], specs, regions, lambda r: planes(model.render(*r)),
        workers=workers, progress=progress, total=h * w,
    )

    manifest = {
        "visible": "visible.tif",
        "bands": [{"name": n, "file": f"{n}.tif", "wavelength_nm": nm}
                  for n, nm in zip(names, nms, strict=True)],
        "pixel_size_um": round(600_000.0 / max(h, w), 4),  # a 60 cm painting
    }
    (out / "scan.json").write_text(json.dumps(manifest, indent=2) + "\n")
    params = {
        "generator": "tilex.synth", "tilex_version": __version__, "size": [h, w], "bands": int(bands), "seed": int(seed),
        "tile": tile, "compression": compression, "mask": MASK_FILE,
        "transparency": {n: round(model.transparency(nm), 4) for n, nm in zip(names, nms, strict=True)},
        "visible_noise": model.visible_noise, "band_noise": model.band_noise,
    }
    (out / PARAMS_FILE).write_text(json.dumps(params, indent=2) + "\n")
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

    threads = [threading.Thread(target=writer, args=a, daemon=True, name=f"tilex-synth-write-{i}")
               for i, a in enumerate(zip(paths, specs, queues, strict=True))]
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
