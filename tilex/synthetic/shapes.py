"""Shapes of the under-drawing: distances in units of the image's shorter side.

Each shape gives, for points ``(X, Y)``, a distance to its stroke (or to its
inside), turned into an anti-aliased coverage in [0, 1]; :class:`Shape`
also tells whether a box of points can be touched at all, so a region
renders only the shapes near it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Shape", "coverage", "ellipse_inside"]


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


def ellipse_inside(px, py, cx, cy, a, b) -> np.ndarray:
    """Signed-ish distance, negative inside an ellipse (scaled by its smaller axis)."""
    ux, uy = (px - cx) / a, (py - cy) / b
    return (np.sqrt(ux * ux + uy * uy) - 1.0) * min(a, b)


def coverage(dist: np.ndarray, half_width: float, px_per_unit: float) -> np.ndarray:
    """Anti-aliased (one pixel ramp) coverage of a stroke of ``half_width``."""
    return np.clip((half_width - dist) * px_per_unit + 0.5, 0.0, 1.0)


@dataclass(frozen=True)
class Shape:
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
            return (
                min(ax, bx) - pad <= x_hi
                and max(ax, bx) + pad >= x_lo
                and min(ay, by) - pad <= y_hi
                and max(ay, by) + pad >= y_lo
            )
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
            c = coverage(_segment(X, Y, *self.args), half_width, px)
        elif self.kind == "outline":
            c = coverage(_ellipse_outline(X, Y, *self.args), half_width, px)
        else:
            c = coverage(ellipse_inside(X, Y, *self.args), 0.0, px)
        if self.keep is not None:
            k0, k1, below = self.keep
            line = k0 + k1 * X
            c = np.where(Y > line if below else Y < line, c, 0.0)
        return c * self.density if self.density != 1.0 else c
