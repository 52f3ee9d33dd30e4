"""Rendering a physical scene: layers per wavelength, then cameras, region by region.

Per pixel and wavelength ``l`` the paint stack is built bottom up with
:func:`~.km.layer`: the ground (a modelled white, lightly textured), the
carbon under-drawing (optical thickness proportional to the stroke's
coverage), the earlier composition, the top paint; then the varnish
(``R * exp(-2 alpha(l) d)``, ``alpha`` falling from the violet) and the
surface (cracks darken, canvas relief shades). The top paint's scattering
falls as ``(l / 550 nm)^-k`` (``K/S`` stays the measured one), so it thins
optically in the infrared and shows what lies below; the lower layers keep a
constant ``S``, so carbon stays as absorbing in the infrared as in the visible. The spectra are then integrated by the
visible camera (CIE 1931 under D65 to sRGB) and by each band's pass-band,
glints are added (spectrally flat, in every capture), and each capture goes
through its :class:`~.camera.Camera`.

Every pixel is a pure function of its coordinates, the scene's size and its
parameters, with exact arithmetic only, so a region renders exactly as it
does inside the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from tilex.synthetic.noise import value_noise
from tilex.synthetic.physical import km
from tilex.synthetic.physical.camera import HALO, expose, sample
from tilex.synthetic.physical.observer import band_name, band_weights, srgb_encode_u8, srgb_weights
from tilex.synthetic.physical.recipe import Region, Scene
from tilex.synthetic.physical.spectra import pigment_library, resample, spectral_grid, white
from tilex.synthetic.shapes import coverage

__all__ = ["RegionPlanes", "Spectra", "render_region"]


class RegionPlanes(NamedTuple):
    """A rendered region in on-disk types."""

    visible: np.ndarray  # uint8 [h, w, 3], sRGB
    bands: np.ndarray  # uint16 [N, h, w]
    mask: np.ndarray  # uint8 [h, w], 1 where hidden content lies under the top paint


@dataclass(frozen=True)
class Spectra:
    """A scene's per-wavelength scalars on its grid (computed once, shared by regions)."""

    nm: np.ndarray
    scatter: np.ndarray  # (l / 550)^-k
    ground: np.ndarray
    drawing_ab: tuple[np.ndarray, np.ndarray]
    composition_k: np.ndarray  # [regions, L], per unit lead-white scattering
    top_k: np.ndarray
    varnish: np.ndarray  # 2 * absorbance per unit varnish thickness
    rgb: np.ndarray  # [3, L]
    bands: np.ndarray  # [N, L]

    @classmethod
    def of(cls, scene: Scene) -> Spectra:
        nm = spectral_grid(list(scene.bands))
        lib = pigment_library()

        def ks(name: str) -> np.ndarray:
            return km.ks_from_reflectance(resample(lib.wavelength_nm, lib.spectrum(name), nm))

        ks_white = km.ks_from_reflectance(white("lead white", nm))

        def k_of(regions: tuple[Region, ...]) -> np.ndarray:
            rows = [
                (1.0 - r.white) * r.pigment.s_rel * ks(r.pigment.name) + r.white * ks_white
                for r in regions
            ]
            return np.array(rows).reshape(len(regions), len(nm))

        return cls(
            nm=nm,
            scatter=(nm / 550.0) ** -scene.scatter_exponent,
            ground=white(scene.ground, nm),
            drawing_ab=km.ab(ks(scene.drawing_pigment.name)),
            composition_k=k_of(scene.composition),
            top_k=k_of(scene.top),
            varnish=2.0 * scene.varnish * np.exp(-(nm - 380.0) / scene.varnish_decay_nm),
            rgb=srgb_weights(nm),
            bands=np.array([band_weights(nm, c, f) for c, f in scene.bands]),
        )


def _f32(v) -> np.float32:
    return np.float32(v)


def _coords(scene: Scene, y0: int, y1: int, x0: int, x1: int):
    s = scene.side
    ys = np.arange(y0, y1, dtype=np.float64)[:, None]
    xs = np.arange(x0, x1, dtype=np.float64)[None, :]
    X = ((xs + 0.5 - scene.width / 2.0) / s).astype(np.float32)
    Y = ((ys + 0.5 - scene.height / 2.0) / s).astype(np.float32)
    return ys.astype(np.float32), xs.astype(np.float32), X, Y


def _region_cover(region: Region, X, Y, edge, s: float) -> np.ndarray | float:
    if region.below is not None:
        y0, slope = region.below
        return coverage(_f32(y0) + _f32(slope) * X - Y + edge, 0.0, s)
    if region.shape is None:
        return 1.0
    box = (float(X.min()), float(X.max()), float(Y.min()), float(Y.max()))
    if not region.shape.may_touch(*box, region.half_width + 0.01 + 2.0 / s):
        return 0.0
    return region.shape.cover(X + edge, Y, region.half_width, s)


def _paint_weights(regions, X, Y, edge, s, shape) -> list[np.ndarray]:
    """Painter's algorithm: each region's share of a pixel, later ones on top."""
    weights: list[np.ndarray] = []
    for region in regions:
        c = _region_cover(region, X, Y, edge, s)
        if isinstance(c, float):
            c = np.full(shape, c, np.float32)
        keep = np.float32(1.0) - c
        weights = [w * keep for w in weights]
        weights.append(np.broadcast_to(c, shape).astype(np.float32))
    return weights


def _drawing_cover(scene: Scene, X, Y, shape) -> tuple[np.ndarray, np.ndarray]:
    """Stroke coverage times pressure, and the strokes' plain coverage (for the mask)."""
    s, hw, wobble = scene.side, scene.line_half_width, 0.006
    box = (
        float(X.min()) - wobble,
        float(X.max()) + wobble,
        float(Y.min()) - wobble,
        float(Y.max()) + wobble,
    )
    near = [sh for sh in scene.drawing if sh.may_touch(*box, hw + 2.0 / s)]
    cover = np.zeros(shape, np.float32)
    geometric = np.zeros(shape, np.float32)
    if not near:
        return cover, geometric
    Xw = X + _f32(wobble) * (value_noise(X, Y, 0.05, scene.key("wobble_x")) - _f32(0.5))
    Yw = Y + _f32(wobble) * (value_noise(X, Y, 0.05, scene.key("wobble_y")) - _f32(0.5))
    for sh in near:
        c = sh.cover(Xw, Yw, hw, s)  # coverage times the stroke's pressure
        cover = np.maximum(cover, c)
        geometric = np.maximum(geometric, c / _f32(sh.density))
    return cover, geometric


def render_region(
    scene: Scene, spectra: Spectra, y0: int, y1: int, x0: int, x1: int
) -> RegionPlanes:
    """Render rows ``y0:y1`` and columns ``x0:x1`` of ``scene`` (on-disk types)."""
    from tilex.synthetic.physical.textures import cracks, glints, weave

    h, w, s, H = y1 - y0, x1 - x0, scene.side, HALO
    ys, xs, X, Y = _coords(scene, y0 - H, y1 + H, x0 - H, x1 + H)
    shape = (h + 2 * H, w + 2 * H)
    inner = (slice(H, H + h), slice(H, H + w))
    key = scene.key

    # --- geometry, the same at every wavelength
    ground = _f32(1.0) + _f32(2.0 * scene.ground_texture) * (
        value_noise(X, Y, 0.05, key("ground")) - _f32(0.5)
    )
    ground = np.broadcast_to(ground, shape)
    relief = weave(xs, ys, scene.weave_period, key("weave"))
    edge = _f32(0.004) * (value_noise(X, Y, 0.03, key("edge")) - _f32(0.5))

    draw_cover, draw_geom = _drawing_cover(scene, X, Y, shape)
    draw_tau = _f32(scene.drawing_tau) * draw_cover

    comp_w = _paint_weights(scene.composition, X, Y, edge, s, shape)
    comp_s = np.zeros(shape, np.float32)
    for wgt, region in zip(comp_w, scene.composition, strict=True):
        comp_s += wgt * _f32((1.0 - region.white) * region.pigment.s_rel + region.white)
    comp_cover = sum(comp_w, np.zeros(shape, np.float32))
    comp_inv_s = _f32(1.0) / np.maximum(comp_s, _f32(1e-6))
    comp_tau = _f32(scene.composition_tau) * comp_s

    top_w = _paint_weights(scene.top, X, Y, edge, s, shape)
    top_s = np.zeros(shape, np.float32)
    top_thick = np.zeros(shape, np.float32)
    for wgt, region in zip(top_w, scene.top, strict=True):
        top_s += wgt * _f32((1.0 - region.white) * region.pigment.s_rel + region.white)
        top_thick += wgt * _f32(region.thickness)
    ca, sa = _f32(np.cos(scene.stroke_angle)), _f32(np.sin(scene.stroke_angle))
    u, v = xs * ca + ys * sa, ys * ca - xs * sa
    stroke = value_noise(u / _f32(6.0), v, max(2.0, s / 300.0), key("stroke")) - _f32(0.5)
    thickness = (
        _f32(scene.top_tau)
        * (
            _f32(1.0)
            + _f32(2.0 * scene.top_variation) * (value_noise(X, Y, 0.12, key("thick")) - _f32(0.5))
        )
        * (_f32(1.0) + _f32(0.3) * stroke)
        * (_f32(1.0) - _f32(2.0 * scene.weave_relief) * relief)  # paint pools between threads
        * top_thick
    )
    top_tau = top_s * np.maximum(thickness, _f32(0.02 * scene.top_tau))
    top_inv_s = _f32(1.0) / np.maximum(top_s, _f32(1e-6))

    varnish = _f32(1.0) + _f32(0.6) * (value_noise(X, Y, 0.2, key("varnish")) - _f32(0.5))
    if scene.cleaned is not None:
        cx0, cy0, cx1, cy1 = scene.cleaned
        inside = (X >= cx0) & (X < cx1) & (Y >= cy0) & (Y < cy1)
        varnish = np.where(inside, varnish * _f32(0.15), varnish)
    surface = _f32(1.0) + _f32(scene.weave_relief) * relief
    if scene.crack_depth:
        width = scene.crack_width / (scene.crack_cell * s)  # px -> cell units
        crack = cracks(X, Y, scene.crack_cell, width, key("cracks"))
        surface = surface * (_f32(1.0) - _f32(scene.crack_depth) * crack)
    surface = np.broadcast_to(surface, shape)

    # --- spectra, wavelength by wavelength
    rgb = np.zeros((3, h, w), np.float32)
    bands = np.zeros((len(scene.bands), *shape), np.float32)
    da, db = spectra.drawing_ab
    for i in range(len(spectra.nm)):
        f = _f32(spectra.scatter[i])
        r = _f32(spectra.ground[i]) * ground
        if scene.drawing:
            r = km.layer(_f32(da[i]), _f32(db[i]), draw_tau, r)
        if scene.composition:
            k = np.zeros(shape, np.float32)
            for wgt, kk in zip(comp_w, spectra.composition_k[:, i], strict=True):
                k += wgt * _f32(kk)
            a, b = km.ab(k * comp_inv_s)
            r = km.layer(a, b, comp_tau, r)
        k = np.zeros(shape, np.float32)
        for wgt, kk in zip(top_w, spectra.top_k[:, i], strict=True):
            k += wgt * _f32(kk)
        a, b = km.ab(k * top_inv_s)
        r = km.layer(a, b, f * top_tau, r)
        if scene.varnish:
            r = r * km.exp_neg(_f32(spectra.varnish[i]) * varnish)
        r = r * surface
        for c in range(3):
            if spectra.rgb[c, i]:
                rgb[c] += _f32(spectra.rgb[c, i]) * r[inner]
        for j in range(len(scene.bands)):
            if spectra.bands[j, i]:
                bands[j] += _f32(spectra.bands[j, i]) * r

    # --- glints and cameras
    glint = np.zeros(shape, np.float32)
    if scene.glint_strength:
        glint = _f32(scene.glint_strength) * glints(
            X, Y, max(3.0, s / 200.0) / s, 0.75, scene.glint_lobe, key("glints")
        )
        glint = np.broadcast_to(glint, shape)
    aspect = (scene.height / (2.0 * s), scene.width / (2.0 * s))
    Xi, Yi, xi, yi = X[:, H : H + w], Y[H : H + h], xs[:, H : H + w], ys[H : H + h]
    out_bands = np.empty((len(scene.bands), h, w), np.uint16)
    for j, cam in enumerate(scene.cameras):
        plane = sample(bands[j] + _f32(cam.glint) * glint, cam)
        value = expose(plane, cam, Xi, Yi, xi, yi, key(f"noise{j}"), aspect=aspect)
        out_bands[j] = np.floor(np.clip(value, 0.0, 1.0) * _f32(65535.0) + _f32(0.5)).astype(
            np.uint16
        )
    cam = scene.visible_camera
    visible = np.empty((h, w, 3), np.uint8)
    for c in range(3):
        lin = (rgb[c] + _f32(cam.glint) * glint[inner]) * _f32(cam.white_balance[c])
        lin = expose(lin, cam, Xi, Yi, xi, yi, key(f"visible{c}"), aspect=aspect)
        visible[..., c] = srgb_encode_u8(np.clip(lin, 0.0, 1.0))
    hidden = (draw_geom[inner] >= 0.5) | (comp_cover[inner] >= 0.5)
    return RegionPlanes(visible, out_bands, hidden.astype(np.uint8))


def names(scene: Scene) -> list[str]:
    """Band names of a scene (``vis550``, ``ir1000``...)."""
    return [band_name(c) for c, _ in scene.bands]
