"""NGFF (OME-Zarr) metadata of an output's images, and their display windows.

Every image group gets ``multiscales``: axes ``c, y, x`` (labels ``y, x``),
in micrometres when the pixel size is known, and per level ``k`` the scale
``2**k`` and translation ``(2**k - 1) / 2`` (pixel centres, level-0 pixel
units, times the pixel size; :func:`tilex.pyramid.level_transform`). Images
get ``omero`` channels (label, colour, display window); the label image gets
``image-label`` (a colour and the band's name and wavelength per label).
OME-Zarr 0.5 nests all of it under ``"ome"`` (:func:`wrap`), 0.4 puts a
``"version"`` in each.

The group metadata is written last (:meth:`tilex.omezarr.OutputLayout.finish`),
so an interrupted output never looks like a complete image to a viewer.

Display windows
---------------
``omero`` windows are robust percentiles (:data:`WINDOW_PERCENTILES`) of a
sample of each channel within its exact extrema. The sample is a fixed pixel
lattice anchored at scan pixel (0, 0) (:func:`window_stride`), taken per
level-0 unit when the unit is written and journaled with it
(:func:`window_sample`), and merged at the end (:func:`windows`). So the
windows do not depend on the order units were written in, on resuming, or on
which worker wrote what, and the data are never read back for them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tilex._version import __version__
from tilex.grid import Region
from tilex.omezarr.format import ImageSpec, Version, band_colours
from tilex.pyramid import level_transform
from tilex.sink import RunInfo

__all__ = [
    "WINDOW_PERCENTILES",
    "WINDOW_SAMPLES",
    "axes",
    "image_attrs",
    "image_label",
    "labels_attrs",
    "multiscales",
    "omero",
    "window_sample",
    "window_stride",
    "windows",
    "wrap",
]

WINDOW_PERCENTILES = (0.5, 99.5)
"""Robust percentiles of each channel used as its ``omero`` display window."""

WINDOW_SAMPLES = 1 << 16
"""About how many pixels per channel the display windows are estimated from."""

Window = dict[str, float]


# --------------------------------------------------------------------------- documents


def axes(spec: ImageSpec, pixel_size_um: float | None) -> list[dict[str, str]]:
    """The ``axes`` of an image: ``c, y, x``, or ``y, x`` for a label image."""
    space: dict[str, str] = {"type": "space"}
    if pixel_size_um is not None:
        space["unit"] = "micrometer"
    yx = [{"name": "y", **space}, {"name": "x", **space}]
    return yx if spec.is_label else [{"name": "c", "type": "channel"}, *yx]


def multiscales(
    spec: ImageSpec, n_levels: int, pixel_size_um: float | None, version: Version
) -> dict:
    """One ``multiscales`` entry: the levels ``0 .. n_levels - 1`` with their transforms.

    Examples
    --------
    >>> from tilex.omezarr.format import output_images
    >>> score = output_images(RunInfo((8, 8), ("ir",), (None,), 1))[2]
    >>> ms = multiscales(score, 2, None, "0.5")
    >>> ms["datasets"][1]["coordinateTransformations"]
    [{'type': 'scale', 'scale': [1.0, 2.0, 2.0]}, {'type': 'translation', 'translation': [0.0, 0.5, 0.5]}]
    """
    lead = [] if spec.is_label else [1.0]
    datasets = []
    for k in range(n_levels):
        scale, shift = level_transform(k, pixel_size_um or 1.0)
        datasets.append(
            {
                "path": str(k),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [*lead, scale, scale]},
                    {"type": "translation", "translation": [*[0.0] * len(lead), shift, shift]},
                ],
            }
        )
    ms: dict[str, Any] = {
        "name": spec.name,
        "axes": axes(spec, pixel_size_um),
        "datasets": datasets,
        "type": spec.method,
        "metadata": {
            "method": f"tilex.pyramid.{spec.reduce.__name__}",
            "description": "2x2 reduction per level, sizes ceil(n/2), pixel-centre transforms",
            "version": __version__,
        },
    }
    return {"version": "0.4", **ms} if version == "0.4" else ms


def omero(spec: ImageSpec, channel_windows: Sequence[Window], version: Version) -> dict:
    """The ``omero`` rendering settings: one channel per window, the first one (all for RGB) on."""
    channels = [
        {
            "label": label,
            "color": colour,
            "window": window,
            "active": spec.name == "overlay" or c == 0,
            "coefficient": 1.0,
            "family": "linear",
            "inverted": False,
        }
        for c, (label, colour, window) in enumerate(
            zip(spec.channel_labels, spec.channel_colours, channel_windows, strict=True)
        )
    ]
    doc: dict[str, Any] = {
        "name": spec.name,
        "channels": channels,
        "rdefs": {
            "model": "color" if spec.name == "overlay" else "greyscale",
            "defaultZ": 0,
            "defaultT": 0,
        },
    }
    return {"version": "0.4", **doc} if version == "0.4" else doc


def image_label(info: RunInfo, version: Version) -> dict:
    """The ``image-label`` of the winner labels: colour, band and wavelength of each value."""
    colours = [
        {"label-value": i + 1, "rgba": [*rgb, 255]}
        for i, rgb in enumerate(band_colours(info.n_bands))
    ]
    properties = [
        {"label-value": i + 1, "band": name, "wavelength_nm": w}
        for i, (name, w) in enumerate(zip(info.band_names, info.wavelengths, strict=True))
    ]
    label: dict[str, Any] = {
        "colors": colours,
        "properties": properties,
        "source": {"image": "../../"},
    }
    return {"version": "0.4", **label} if version == "0.4" else label


def wrap(version: Version, attrs: dict) -> dict:
    """Group attributes for ``version``: 0.5 nests them under ``"ome"``.

    Examples
    --------
    >>> wrap("0.5", {"labels": ["winner"]})
    {'ome': {'version': '0.5', 'labels': ['winner']}}
    """
    return {"ome": {"version": "0.5", **attrs}} if version == "0.5" else attrs


def image_attrs(
    spec: ImageSpec,
    info: RunInfo,
    n_levels: int,
    version: Version,
    channel_windows: Sequence[Window] | None = None,
) -> dict:
    """The whole group attributes of one image (wrapped for ``version``).

    ``channel_windows`` are the measured windows of a float image; uint8
    images (the overlay) show their full range.
    """
    attrs: dict[str, Any] = {
        "multiscales": [multiscales(spec, n_levels, info.pixel_size_um, version)]
    }
    if spec.is_label:
        attrs["image-label"] = image_label(info, version)
    else:
        full = {"min": 0.0, "max": 255.0, "start": 0.0, "end": 255.0}
        attrs["omero"] = omero(spec, channel_windows or [full] * int(spec.channels or 1), version)
    return wrap(version, attrs)


def labels_attrs(names: Sequence[str], version: Version) -> dict:
    """The attributes of a ``labels`` group listing its label images."""
    return wrap(version, {"labels": list(names)})


# --------------------------------------------------------------------------- windows


def window_stride(shape: tuple[int, int], samples: int = WINDOW_SAMPLES) -> int:
    """Side of the pixel lattice sampled for display windows (1: every pixel).

    Examples
    --------
    >>> window_stride((256, 256)), window_stride((4096, 4096))
    (1, 16)
    """
    h, w = shape
    return max(1, math.ceil(math.sqrt(h * w / samples)))


def window_sample(data: np.ndarray, region: Region, stride: int) -> dict[str, np.ndarray]:
    """One unit's share of the display-window sample: the lattice pixels and exact extrema.

    ``data`` is ``[C, h, w]`` over ``region`` (level-0 pixels). The lattice is
    anchored at scan pixel (0, 0), so the union of the units' samples does
    not depend on which units were written when, or by whom.

    Examples
    --------
    >>> part = window_sample(np.arange(16, dtype=np.float32).reshape(1, 4, 4), (0, 4, 0, 4), 2)
    >>> part["sample"].tolist(), part["lo"].tolist(), part["hi"].tolist()
    ([[0.0, 2.0, 8.0, 10.0]], [0.0], [15.0])
    """
    y0, _, x0, _ = region
    channels = data.shape[0]
    flat = data.reshape(channels, -1)
    lattice = data[:, (-y0) % stride :: stride, (-x0) % stride :: stride]
    return {
        "sample": lattice.reshape(channels, -1).astype(np.float32),
        # fmin/fmax skip NaN (normalised dissimilarity keeps it) without a masked copy
        "lo": np.fmin.reduce(flat, axis=1).astype(np.float64),
        "hi": np.fmax.reduce(flat, axis=1).astype(np.float64),
    }


def windows(channels: int, parts: Sequence[dict[str, np.ndarray]]) -> list[Window]:
    """``omero`` windows from the units' samples: robust percentiles within exact extrema.

    Examples
    --------
    >>> windows(1, [])
    [{'min': 0.0, 'max': 1.0, 'start': 0.0, 'end': 1.0}]
    """
    flat = {"min": 0.0, "max": 1.0, "start": 0.0, "end": 1.0}
    if not parts:
        return [dict(flat) for _ in range(channels)]
    sample = np.concatenate([p["sample"] for p in parts], axis=1)
    lows = np.fmin.reduce(np.stack([p["lo"] for p in parts]), axis=0)
    highs = np.fmax.reduce(np.stack([p["hi"] for p in parts]), axis=0)
    out = []
    for c in range(channels):
        values = sample[c][np.isfinite(sample[c])]
        if values.size == 0:
            out.append(dict(flat))
            continue
        start, end = (float(v) for v in np.percentile(values, WINDOW_PERCENTILES))
        lo, hi = float(lows[c]), float(highs[c])
        lo, hi = (lo if np.isfinite(lo) else start), (hi if np.isfinite(hi) else end)
        if end <= start:  # a flat channel: widen so viewers get a usable range
            end = start + 1.0
        out.append({"min": min(lo, start), "max": max(hi, end), "start": start, "end": end})
    return out
