"""Surface structure seen in every capture: craquelure, canvas weave, glints.

Pure functions of coordinates and keys (hashed lattices from
:mod:`tilex.synthetic.noise`), built from exact operations only, so a
region renders as it does in the whole image.
"""

from __future__ import annotations

import numpy as np

from tilex.synthetic.noise import hash2, unit, value_noise

__all__ = ["cracks", "glints", "weave"]


def _smooth(t: np.ndarray) -> np.ndarray:
    return t * t * (np.float32(3.0) - np.float32(2.0) * t)


def cracks(X: np.ndarray, Y: np.ndarray, cell: float, width: float, key: int) -> np.ndarray:
    """Craquelure in [0, 1]: 1 on the crack network, a Voronoi diagram's edges.

    Cells of about ``cell`` (shorter-side units), one jittered seed point per
    lattice square, lightly warped by value noise; a crack is where the two
    nearest seeds are almost equidistant: ``(d2 - d1) / 2 < width``
    (``d1, d2`` the two smallest distances, in cell units), with a soft edge.
    """
    warp = np.float32(0.25 * cell)
    Xw = X + warp * (value_noise(X, Y, 2.0 * cell, key ^ 0x51A7) - np.float32(0.5))
    Yw = Y + warp * (value_noise(X, Y, 2.0 * cell, key ^ 0x2C0F) - np.float32(0.5))
    fx, fy = Xw / np.float32(cell), Yw / np.float32(cell)
    ix, iy = np.floor(fx), np.floor(fy)
    big = np.float32(1e9)
    d1 = np.full(np.broadcast_shapes(fx.shape, fy.shape), big, np.float32)
    d2 = d1.copy()
    for oy in (-1.0, 0.0, 1.0):
        for ox in (-1.0, 0.0, 1.0):
            cx, cy = ix + np.float32(ox), iy + np.float32(oy)
            px = cx + unit(hash2(cx, cy, key))
            py = cy + unit(hash2(cx, cy, key ^ 0x9E37))
            dx, dy = fx - px, fy - py
            d = np.sqrt(dx * dx + dy * dy)
            d2 = np.minimum(d2, np.maximum(d1, d))
            d1 = np.minimum(d1, d)
    edge = (d2 - d1) * np.float32(0.5)
    t = np.clip(np.float32(1.0) - edge / np.float32(width), 0.0, 1.0)
    return _smooth(t)


def weave(xs: np.ndarray, ys: np.ndarray, period: float, key: int) -> np.ndarray:
    """Canvas relief in [-0.5, 0.5]: a plain weave of threads ``period`` px apart.

    Each crossing shows the warp or the weft thread on top, alternating like
    a chequerboard; a thread's profile is a smooth bump and its thickness
    varies from thread to thread.
    """
    fx, fy = xs / np.float32(period), ys / np.float32(period)
    tx, ty = fx - np.floor(fx), fy - np.floor(fy)
    bump_x = np.float32(16.0) * tx * tx * (np.float32(1.0) - tx) ** 2  # across a warp thread
    bump_y = np.float32(16.0) * ty * ty * (np.float32(1.0) - ty) ** 2
    # thread-to-thread thickness: one hash per thread (a column or a row of the lattice)
    thick_x = np.float32(0.7) + np.float32(0.6) * unit(hash2(np.floor(fx), np.zeros_like(fx), key))
    thick_y = np.float32(0.7) + np.float32(0.6) * unit(
        hash2(np.zeros_like(fy), np.floor(fy), key ^ 0x7F4A)
    )
    parity = (np.floor(fx) + np.floor(fy)) * np.float32(0.5)
    warp_up = (parity - np.floor(parity)) == 0
    return np.where(warp_up, bump_x * thick_x, bump_y * thick_y) - np.float32(0.5)


def glints(
    X: np.ndarray, Y: np.ndarray, cell: float, threshold: float, lobe: tuple, key: int
) -> np.ndarray:
    """Specular glints in [0, 1]: brush-ridge-sized spots where relief faces the light.

    ``lobe = (x, y, radius)``: the light's mirror image, glints fading away
    from it as ``1 / (1 + d^2 / radius^2)``.
    """
    n = value_noise(X, Y, cell, key)
    spot = np.clip((n - np.float32(threshold)) / np.float32(1.0 - threshold), 0.0, 1.0)
    lx, ly, r = lobe
    dx, dy = X - np.float32(lx), Y - np.float32(ly)
    return spot * spot / (np.float32(1.0) + (dx * dx + dy * dy) * np.float32(1.0 / (r * r)))
