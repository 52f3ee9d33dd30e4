"""A camera per capture: optics (misregistration, blur), light fall-off, sensor.

A band camera turns the scene's band reflectance ``R`` into a value in [0, 1]:

    v = gain * light(x, y) * (k (*) R)(x, y) + offset + noise,
    light = (1 - vignetting * r^2) * (1 + gx X + gy Y),
    noise ~ sqrt(read^2 + v / full_well) * N(0, 1),

where ``k`` is a separable 5-tap kernel: a bilinear sub-pixel shift (the
band's misregistration against the visible image, up to 1 px) convolved with
``[b, 1 - 2b, b]`` (its blur). The visible camera has no shift (it defines
the pixel grid) and a white balance per channel. Values are clipped to
[0, 1] and quantised (uint16 bands, 8-bit sRGB visible). Noise comes from
:func:`tilex.synthetic.noise.gauss_noise` of the pixel's integer
coordinates, so every region renders as it does in the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tilex.synthetic.noise import gauss_noise

__all__ = ["HALO", "Camera", "expose", "kernel", "sample"]

HALO = 2
"""Pixels rendered around a region for the 5-tap kernels."""


@dataclass(frozen=True)
class Camera:
    """One capture's unknowns (see the module notes)."""

    gain: float = 1.0
    offset: float = 0.0
    vignetting: float = 0.0
    centre: tuple[float, float] = (0.0, 0.0)  # of the fall-off, in shorter-side units
    gradient: tuple[float, float] = (0.0, 0.0)
    read_noise: float = 0.0
    full_well: float = 0.0  # value 1 = this many electrons; 0: no shot noise
    shift: tuple[float, float] = (0.0, 0.0)  # (dy, dx) px
    blur: float = 0.0  # in [0, 0.25]
    glint: float = 1.0  # how strongly this capture sees the specular highlights
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)  # visible camera only

    def __post_init__(self) -> None:
        if not all(abs(s) <= 1.0 for s in self.shift):
            raise ValueError(f"camera shift {self.shift} px: at most 1 px each way")
        if not 0.0 <= self.blur <= 0.25:
            raise ValueError(f"camera blur {self.blur}: expected 0 to 0.25")


def kernel(shift: float, blur: float) -> np.ndarray:
    """5 taps (offsets -2..2) sampling at ``+shift`` px with a ``[b, 1-2b, b]`` blur.

    Examples
    --------
    >>> kernel(0.25, 0.0)
    array([0.  , 0.  , 0.75, 0.25, 0.  ])
    """
    lin = np.array([max(0.0, -shift), 1.0 - abs(shift), max(0.0, shift)])
    return np.convolve(lin, [blur, 1.0 - 2.0 * blur, blur])


def sample(plane: np.ndarray, camera: Camera) -> np.ndarray:
    """Apply the camera's kernel to ``plane`` rendered with a :data:`HALO`; the inner region.

    A fixed sum of scaled, shifted copies, in a fixed order: every output
    pixel is the same arithmetic on the same inputs wherever the region is.
    """
    h, w = plane.shape[0] - 2 * HALO, plane.shape[1] - 2 * HALO
    ky, kx = kernel(camera.shift[0], camera.blur), kernel(camera.shift[1], camera.blur)
    rows = np.zeros((plane.shape[0], w), np.float32)
    for j, c in enumerate(kx):
        if c:
            rows += np.float32(c) * plane[:, j : j + w]
    out = np.zeros((h, w), np.float32)
    for i, c in enumerate(ky):
        if c:
            out += np.float32(c) * rows[i : i + h]
    return out


def expose(
    value: np.ndarray,
    camera: Camera,
    X: np.ndarray,
    Y: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    key: int,
    *,
    aspect: tuple[float, float],
) -> np.ndarray:
    """Light fall-off, gain, offset and noise on a linear plane (float32, not clipped).

    ``X, Y`` are shorter-side coordinates (row, column broadcast), ``xs, ys``
    integer pixel coordinates for the noise, ``aspect`` the half extents of the
    image in those units (so the vignetting reaches ``r = 1`` in the corners).
    """
    cy, cx = camera.centre
    u, v = (
        (X - np.float32(cx)) / np.float32(aspect[1]),
        (Y - np.float32(cy)) / np.float32(aspect[0]),
    )
    light = (np.float32(1.0) - np.float32(camera.vignetting / 2.0) * (u * u + v * v)) * (
        np.float32(1.0) + np.float32(camera.gradient[1]) * X + np.float32(camera.gradient[0]) * Y
    )
    out = np.float32(camera.gain) * light * value + np.float32(camera.offset)
    if camera.read_noise or camera.full_well:
        var = np.float32(camera.read_noise**2) + (
            np.maximum(out, np.float32(0.0)) * np.float32(1.0 / camera.full_well)
            if camera.full_well
            else np.float32(0.0)
        )
        out = out + np.sqrt(var) * gauss_noise(xs, ys, key)
    return out.astype(np.float32, copy=False)
