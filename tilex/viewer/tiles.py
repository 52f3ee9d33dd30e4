"""What the viewer's browser side asks for: the output's description, tiles of fields, one pixel.

A *tile* is one chunk of one pyramid level (``tile x tile`` level pixels,
smaller at the right and bottom edges), so a tile costs one chunk read per
field on any output size. Its *fields* are the arrays the browser draws
from (it applies the threshold, the band filter and the layers itself):

``visible``
    uint8 ``[3, h, w]``: the visible image in colour, as the scan encodes it
    (:meth:`tilex.render.Pictures.visible`; the grey in all three channels
    for outputs without the colour image: the description's ``visible`` says
    which).
``grey``
    uint8 ``[h, w]``: the visible image in grey, the overlay's background
    (:meth:`tilex.render.Pictures.grey`).
``overlay``
    uint8 ``[3, h, w]``: the stored overlay.
``evidence``
    float32 ``[h, w]``: the evidence (the score on outputs without one).
``score``
    float32 ``[h, w]``: the stored score.
``winner``
    uint8 ``[h, w]``: the stored winning band.
``collage``
    float32 ``[h, w]``: the mean of the collage features.
``band:K``
    float32 ``[h, w]``: band ``K``'s normalised dissimilarity (when kept).

:func:`pack` puts fields in one binary body: ``b"TLXT"``, a little-endian
uint32 header length, the JSON header (``{"fields": {name: {"dtype",
"shape", "offset"}}, ...}``, padded with spaces so that it ends on a multiple
of 8 bytes), then each array's bytes, little-endian, at its ``offset`` from
the end of the header, a multiple of 8 (so the browser views them without
copying).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilex.render import Pictures

__all__ = ["MAGIC", "LevelGrid", "describe", "pack", "pixel", "read_field"]

MAGIC = b"TLXT"
_FIELDS = ("visible", "grey", "overlay", "evidence", "score", "winner", "collage")
_BAND = re.compile(r"band:(\d+)")


@dataclass(frozen=True)
class LevelGrid:
    """The tiles of every level: level ``k`` is cut into ``tile x tile`` squares from its corner."""

    shapes: tuple[tuple[int, int], ...]  # (h, w) of each level
    tile: int

    @classmethod
    def of(cls, pictures: Pictures) -> LevelGrid:
        levels = pictures.output["overlay"].levels
        return cls(tuple(tuple(a.shape[-2:]) for a in levels), int(levels[0].chunks[-1]))

    def region(self, level: int, ty: int, tx: int) -> tuple[int, int, int, int] | None:
        """The level pixels ``(y0, y1, x0, x1)`` of a tile, or None when there is no such tile."""
        if not 0 <= level < len(self.shapes):
            return None
        h, w = self.shapes[level]
        if not (0 <= ty < math.ceil(h / self.tile) and 0 <= tx < math.ceil(w / self.tile)):
            return None
        y0, x0 = ty * self.tile, tx * self.tile
        return y0, min(y0 + self.tile, h), x0, min(x0 + self.tile, w)


def read_field(pictures: Pictures, name: str, level: int, region: tuple[int, ...]) -> np.ndarray:
    """One field of one region (see the module's list); KeyError for an unknown field."""
    y0, y1, x0, x1 = region
    if name == "visible":
        return pictures.visible(level, region)
    if name == "grey":
        return pictures.grey(level, region)
    if name == "overlay":
        return pictures.read("overlay", level, region)
    if name == "evidence":
        return pictures.evidence(level, region)
    if name == "score":
        return pictures.read("score", level, region)[0]
    if name == "winner":
        return pictures.read("winner", level, region)
    if name == "collage":
        collage = pictures.read("collage", level, region)
        return np.nan_to_num(collage.mean(axis=0, dtype=np.float32))
    match = _BAND.fullmatch(name)
    images = pictures.output.images
    if match and "dissimilarity" in images:
        band = int(match.group(1))
        levels = images["dissimilarity"].levels
        if band < levels[0].shape[0]:
            return np.asarray(levels[level][band, y0:y1, x0:x1], np.float32)
    raise KeyError(name)


def pack(arrays: dict[str, np.ndarray], **extra: Any) -> bytes:
    """Arrays in one binary body (see the module docstring); ``extra`` goes into the header.

    Examples
    --------
    >>> body = pack({"a": np.arange(3, dtype=np.uint8)}, level=0)
    >>> body[:4], len(body) % 8
    (b'TLXT', 0)
    """
    parts, offset, fields = [], 0, {}
    for name, array in arrays.items():
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        fields[name] = {"dtype": data.dtype.name, "shape": list(data.shape), "offset": offset}
        raw = data.tobytes()
        parts.append(raw + b"\0" * (-len(raw) % 8))
        offset += len(parts[-1])
    header = json.dumps({"fields": fields, **extra}).encode()
    start = len(MAGIC) + 4 + len(header)
    header += b" " * (-start % 8)
    return b"".join([MAGIC, len(header).to_bytes(4, "little"), header, *parts])


def pixel(pictures: Pictures, x: int, y: int) -> dict[str, Any] | None:
    """Level-0 values at pixel ``(x, y)``: score, evidence, winner, each band's map (when kept)."""
    h, w = pictures.output["score"].shapes[0][-2:]
    if not (0 <= x < w and 0 <= y < h):
        return None
    region = (y, y + 1, x, x + 1)
    winner = int(pictures.read("winner", 0, region)[0, 0])
    found: dict[str, Any] = {
        "x": x,
        "y": y,
        "score": _number(pictures.read("score", 0, region)[0, 0, 0]),
        "evidence": _number(pictures.evidence(0, region)[0, 0]),
        "winner": winner,
    }
    if "dissimilarity" in pictures.output.images:
        maps = pictures.read("dissimilarity", 0, region)[:, 0, 0]
        found["bands"] = [_number(v) for v in maps]
    return found


def _number(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def describe(pictures: Pictures, grid: LevelGrid) -> dict[str, Any]:
    """The output as the browser needs it (JSON-ready): sizes, bands, thresholds, scales."""
    from tilex.kernels.reference import ALPHA

    output = pictures.output
    manifest = output.manifest
    found = manifest.get("found") or {}
    shares = {b.get("band"): b.get("fraction") for b in found.get("bands", [])}
    bands = [
        {
            "index": i + 1,
            "name": band["name"],
            "wavelength_nm": band.get("wavelength_nm"),
            "colour": band.get("colour", "FFFFFF"),
            "share": shares.get(band["name"]),
        }
        for i, band in enumerate(output.bands)
    ]
    return {
        "name": output.path.name,
        "path": str(output.path),
        "tilex_version": manifest.get("tilex_version"),
        "shape": list(grid.shapes[0]),
        "levels": [list(s) for s in grid.shapes],
        "tile": grid.tile,
        "pixel_size_um": manifest["output"].get("pixel_size_um"),
        "bands": bands,
        "threshold": pictures.describe(),
        "flagged_fraction": found.get("flagged_fraction"),
        "band_maps": "dissimilarity" in output.images,
        "visible": "colour" if pictures.has_colour else "grey",
        "collage_range": list(pictures.collage_range),
        "alpha": float(ALPHA),
        "fields": [*_FIELDS, *(["band:K"] if "dissimilarity" in output.images else [])],
    }
