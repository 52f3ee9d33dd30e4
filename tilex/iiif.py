"""Export an output as static IIIF: Image API 3.0 level-0 tiles and a Presentation 3.0 manifest.

A museum drops the folder on any web server (no image server needed) and
opens it in Mirador, Universal Viewer or OpenSeadragon. ``DEST/`` holds:

``visible/``, ``overlay/``, ``collage/``
    One IIIF image each (:data:`IIIF_IMAGES`; ``visible`` in colour as the
    scan encodes it, or in grey for outputs written before tilex kept the
    colour image): ``info.json`` (``profile``
    ``level0``; ``tiles`` with one scale factor per pyramid level, ``2 ** k``
    for level ``k``, and the chunk as tile size) and the tiles at the paths a
    level-0 client asks for: ``{region}/{size}/0/default.{jpg|png}``, where
    ``region`` is ``x,y,w,h`` in full-resolution pixels (``full`` for a tile
    that covers the image) and ``size`` is ``w,h`` (``max`` for the full
    resolution). ``full/{w},{h}`` exists for every level whose longest side
    is at most :data:`FULL_MAX`, and ``full/max`` is the largest of those
    (``maxWidth``/``maxHeight`` say so when it is not the full resolution).
``manifest.json``
    One canvas of the scan's size whose painting annotations are the three
    images, as layers; the band legend, the threshold and where the result
    came from as ``metadata``.
``index.html``, ``iiif.js``, ``iiif.css``, ``openseadragon/``
    A page that shows the layers in the vendored OpenSeadragon (no network).
``tilex-iiif.json``, ``tilex.json``
    What was exported (read by the page), and the run's own manifest.

Tiles come from the output's pyramid levels as they are stored: a tile at
scale factor ``2 ** k`` is one chunk of level ``k``, read alone, so memory
holds a tile at a time (and one image of at most ``FULL_MAX`` pixels a side
for ``full``). The images are drawn by :class:`tilex.render.Pictures` at
the run's threshold or another one (``threshold``), without re-encoding.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tilex.errors import OutputError, OutputExistsError
from tilex.render import Pictures

__all__ = ["FULL_MAX", "IIIF_IMAGES", "IiifTile", "export_iiif", "iiif_tiles"]

IIIF_IMAGES = ("visible", "overlay", "collage")
"""The images of an IIIF export, bottom layer first."""

FULL_MAX = 2048
"""Longest side of the largest whole-image size written (``full/max``)."""

MARKER = "tilex-iiif.json"
_CONTEXT_IMAGE = "http://iiif.io/api/image/3/context.json"
_CONTEXT_PRESENTATION = "http://iiif.io/api/presentation/3/context.json"
_MEDIA = {"jpg": "image/jpeg", "png": "image/png"}
_DESCRIPTIONS = {
    "visible": "the visible image in colour, as the scan encodes it",
    "overlay": "the visible image in grey with the hidden areas in blue",
    "collage": "each flagged pixel in the colour of the band that wins there",
}
_GREY_VISIBLE = "the visible image in grey (recovered from the overlay: no colour image stored)"

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class IiifTile:
    """One tile of an image at one scale factor, and where a level-0 client looks for it."""

    level: int
    region: tuple[int, int, int, int]  # (y0, y1, x0, x1) in level pixels
    path: str  # "{region}/{size}", e.g. "0,0,1024,1024/512,512"


def iiif_tiles(shapes: list[tuple[int, int]], tile: int) -> Iterator[IiifTile]:
    """Every tile of a pyramid (``shapes``: each level's ``(h, w)``, level 0 first).

    Level ``k`` is scale factor ``2 ** k``; its tiles are ``tile`` level
    pixels square from the corner. Paths follow what a level-0 client
    (OpenSeadragon's IIIF tile source among them) asks for.

    Examples
    --------
    >>> [t.path for t in iiif_tiles([(600, 1000), (300, 500)], 512)]
    ['0,0,512,512/512,512', '512,0,488,512/488,512', '0,512,512,88/512,88', '512,512,488,88/488,88', 'full/500,300']
    """
    height, width = shapes[0]
    for level, (h, w) in enumerate(shapes):
        f = 2**level
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                x, y = x0 * f, y0 * f
                rw, rh = min(tile * f, width - x), min(tile * f, height - y)
                whole = (x, y, rw, rh) == (0, 0, width, height)
                region = "full" if whole else f"{x},{y},{rw},{rh}"
                size = "max" if (x1 - x0, y1 - y0) == (width, height) else f"{x1 - x0},{y1 - y0}"
                yield IiifTile(level, (y0, y1, x0, x1), f"{region}/{size}")


def _picture(pictures: Pictures, image: str, level: int, region: tuple[int, int, int, int]) -> Any:
    """A Pillow image of one region of ``image`` (:data:`IIIF_IMAGES`)."""
    from PIL import Image

    if image == "visible" and not pictures.has_colour:
        return Image.fromarray(pictures.grey(level, region), "L")
    if image == "visible":
        rgb = pictures.visible(level, region)
    elif image == "overlay":
        rgb = pictures.overlay(level, region)
    else:
        rgb = pictures.collage_rgb(level, region)
    return Image.fromarray(np.ascontiguousarray(np.moveaxis(rgb, 0, -1)), "RGB")


def _save(picture: Any, path: Path, fmt: str, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    if fmt == "jpg":
        picture.save(buffer, format="JPEG", quality=quality)
    else:
        picture.save(buffer, format="PNG", compress_level=6)
    path.write_bytes(buffer.getvalue())


def export_iiif(
    out: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    base_url: str | None = None,
    tile_format: Literal["jpg", "png"] = "jpg",
    quality: int = 90,
    threshold: float | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write the output ``out`` as a static IIIF folder ``dest`` (see the module docstring).

    Parameters
    ----------
    out : path-like
        A complete tilex output.
    dest : path-like
        The folder to write (made; must not exist unless ``overwrite``).
    base_url : str, optional
        The address ``dest`` will be served at: IIIF ids are absolute URLs.
        Default ``http://localhost:8000/<dest's name>``, what
        ``python -m http.server 8000`` in ``dest``'s parent serves.
    tile_format : {"jpg", "png"}
        Tile format (the whole-image ``full`` sizes are JPEG too, as level 0 asks).
    quality : int
        JPEG quality, 1 to 95.
    threshold : float, optional
        Draw the images at this threshold instead of the run's
        (:class:`tilex.render.Pictures`; the collage below the run's
        threshold marks the pixels whose band was not stored).
    overwrite : bool
        Replace ``dest`` when it is a previous IIIF export of tilex.
    progress : callable, optional
        ``progress(stage, done, total)`` in level pixels, per image.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    OutputError
        ``out`` is not a complete output, or a bad option.
    OutputExistsError
        ``dest`` exists (and ``overwrite`` is false or it is not a tilex export).

    Examples
    --------
    >>> export_iiif("/nonexistent", "iiif")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tilex.errors.OutputError: /nonexistent is not a tilex output: ...
    """
    from tilex.omezarr import open_output

    output = open_output(out)
    pictures = Pictures(output, threshold)
    if tile_format not in _MEDIA:
        raise OutputError(f"IIIF tile format must be 'jpg' or 'png', got {tile_format!r}")
    if not 1 <= quality <= 95:
        raise OutputError(f"JPEG quality must be 1 to 95, got {quality}")
    dest = Path(dest)
    _check_dest(dest, overwrite)
    base = (base_url or f"http://localhost:8000/{dest.resolve().name}").rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise OutputError(f"--base-url must be an http:// or https:// address, got {base!r}")

    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        levels = output["overlay"].levels
        shapes = [tuple(int(n) for n in a.shape[-2:]) for a in levels]
        tile = int(levels[0].chunks[-1])
        for image in IIIF_IMAGES:
            _write_image(
                pictures, image, partial / image, shapes, tile, tile_format, quality, progress
            )
            info = _info(f"{base}/{image}", shapes, tile, tile_format)
            (partial / image / "info.json").write_text(json.dumps(info, indent=1))
        record = _record(output, pictures, shapes, tile_format)
        (partial / MARKER).write_text(json.dumps(record, indent=1))
        (partial / "manifest.json").write_text(json.dumps(_manifest(base, record), indent=1))
        shutil.copyfile(output.path / "tilex.json", partial / "tilex.json")
        _copy_page(partial)
        _replace(partial, dest)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return dest


def _check_dest(dest: Path, overwrite: bool) -> None:
    if not dest.exists():
        return
    if not overwrite:
        raise OutputExistsError(f"{dest} already exists: pass --overwrite or choose another -o")
    if not (dest / MARKER).is_file():
        raise OutputExistsError(
            f"{dest} exists and is not an IIIF export of tilex (no {MARKER}): not replacing it"
        )


def _replace(partial: Path, dest: Path) -> None:
    old = dest.with_name(f".{dest.name}.old")
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
    os.replace(partial, dest)
    shutil.rmtree(old, ignore_errors=True)


def _write_image(
    pictures: Pictures,
    image: str,
    folder: Path,
    shapes: list[tuple[int, int]],
    tile: int,
    fmt: str,
    quality: int,
    progress: Progress | None,
) -> None:
    total = sum(h * w for h, w in shapes)
    done = 0
    for item in iiif_tiles(shapes, tile):
        picture = _picture(pictures, image, item.level, item.region)
        _save(picture, folder / item.path / "0" / f"default.{fmt}", fmt, quality)
        y0, y1, x0, x1 = item.region
        done += (y1 - y0) * (x1 - x0)
        if progress:
            progress(f"IIIF {image}", done, total)
    small = [k for k, (h, w) in enumerate(shapes) if max(h, w) <= FULL_MAX]
    for k in small:  # whole-image sizes: at most FULL_MAX pixels a side in memory
        h, w = shapes[k]
        picture = _picture(pictures, image, k, (0, h, 0, w))
        _save(picture, folder / "full" / f"{w},{h}" / "0" / "default.jpg", "jpg", quality)
        if k == small[0]:
            _save(picture, folder / "full" / "max" / "0" / "default.jpg", "jpg", quality)


def _info(service: str, shapes: list[tuple[int, int]], tile: int, fmt: str) -> dict[str, Any]:
    height, width = shapes[0]
    small = [(h, w) for h, w in shapes if max(h, w) <= FULL_MAX]
    info: dict[str, Any] = {
        "@context": _CONTEXT_IMAGE,
        "id": service,
        "type": "ImageService3",
        "protocol": "http://iiif.io/api/image",
        "profile": "level0",
        "width": width,
        "height": height,
    }
    if small and small[0] != (height, width):
        info["maxWidth"], info["maxHeight"] = small[0][1], small[0][0]
    info["sizes"] = [{"width": w, "height": h} for h, w in reversed(small)]
    info["tiles"] = [
        {"width": tile, "height": tile, "scaleFactors": [2**k for k in range(len(shapes))]}
    ]
    if fmt != "jpg":
        info["preferredFormats"] = [fmt]
        info["extraFormats"] = [fmt]
    return info


def _record(
    output: Any, pictures: Pictures, shapes: list[tuple[int, int]], fmt: str
) -> dict[str, Any]:
    from tilex._version import __version__

    found = output.manifest.get("found") or {}
    shares = {b.get("band"): b.get("fraction") for b in found.get("bands", [])}
    return {
        "tilex_version": __version__,
        "source": str(output.path),
        "width": shapes[0][1],
        "height": shapes[0][0],
        "full_max": next([w, h] for h, w in shapes if max(h, w) <= FULL_MAX),
        "pixel_size_um": output.manifest["output"].get("pixel_size_um"),
        "threshold": pictures.t,
        "run_threshold": pictures.run,
        "tile_format": fmt,
        "images": [{"name": n, "description": _description(n, pictures)} for n in IIIF_IMAGES],
        "bands": [
            {
                "index": i + 1,
                "name": band["name"],
                "wavelength_nm": band.get("wavelength_nm"),
                "colour": band.get("colour"),
                "share": shares.get(band["name"]),
            }
            for i, band in enumerate(output.bands)
        ],
        "unknown_band": list(pictures.describe()["unknown_band"]),
    }


def _description(image: str, pictures: Pictures) -> str:
    if image == "visible" and not pictures.has_colour:
        return _GREY_VISIBLE
    return _DESCRIPTIONS[image]


def _text(value: str) -> dict[str, list[str]]:
    return {"en": [value]}


def _manifest(base: str, record: dict[str, Any]) -> dict[str, Any]:
    """The Presentation 3.0 manifest: one canvas, the three images as its layers."""
    width, height = record["width"], record["height"]
    canvas = f"{base}/canvas/1"
    full_w, full_h = record["full_max"]
    annotations = [
        {
            "id": f"{canvas}/annotation/{image['name']}",
            "type": "Annotation",
            "motivation": "painting",
            "label": _text(f"{image['name']}: {image['description']}"),
            "body": {
                "id": f"{base}/{image['name']}/full/max/0/default.jpg",
                "type": "Image",
                "format": "image/jpeg",
                "width": full_w,
                "height": full_h,
                "service": [
                    {"id": f"{base}/{image['name']}", "type": "ImageService3", "profile": "level0"}
                ],
            },
            "target": canvas,
        }
        for image in record["images"]
    ]
    metadata = [
        {
            "label": _text("threshold"),
            "value": _text(
                f"{record['threshold']:g} (the run's: {record['run_threshold']:g}): a pixel is"
                " flagged where its evidence, the largest normalised dissimilarity over the"
                " bands, is above it"
            ),
        },
        {
            "label": _text("layers"),
            "value": _text("; ".join(f"{i['name']}: {i['description']}" for i in record["images"])),
        },
    ]
    for band in record["bands"]:
        wavelength = band["wavelength_nm"]
        share = band["share"]
        text = f"{band['name']}" + (f", {wavelength:g} nm" if wavelength is not None else "")
        text += f", colour #{band['colour']}" if band["colour"] else ""
        text += f", wins {100 * share:.1f} % of the pixels" if share is not None else ""
        metadata.append({"label": _text(f"band {band['index']}"), "value": _text(text)})
    if record["pixel_size_um"]:
        metadata.append(
            {"label": _text("pixel size"), "value": _text(f"{record['pixel_size_um']:g} µm")}
        )
    metadata.append({"label": _text("made by"), "value": _text(f"tilex {record['tilex_version']}")})
    return {
        "@context": _CONTEXT_PRESENTATION,
        "id": f"{base}/manifest.json",
        "type": "Manifest",
        "label": _text(f"tilex: hidden areas in {Path(record['source']).name}"),
        "summary": _text(
            "Where the multispectral bands differ from the visible image (hidden paint or"
            " under-drawing), found by tilex; three layers of one canvas."
        ),
        "metadata": metadata,
        "seeAlso": [
            {
                "id": f"{base}/tilex.json",
                "type": "Dataset",
                "format": "application/json",
                "label": _text("the tilex run's record"),
            }
        ],
        "items": [
            {
                "id": canvas,
                "type": "Canvas",
                "label": _text("scan"),
                "width": width,
                "height": height,
                "items": [
                    {"id": f"{canvas}/page/1", "type": "AnnotationPage", "items": annotations}
                ],
            }
        ],
    }


def _copy_page(dest: Path) -> None:
    """The OpenSeadragon page, with its vendored script and licence."""
    static = resources.files("tilex.viewer").joinpath("static")
    for name in ("index.html", "iiif.js", "iiif.css"):
        (dest / name).write_bytes(static.joinpath("iiif", name).read_bytes())
    (dest / "openseadragon").mkdir()
    for name in ("openseadragon.min.js", "LICENSE.txt", "VENDOR.md"):
        source = static.joinpath("vendor", "openseadragon", name)
        (dest / "openseadragon" / name).write_bytes(source.read_bytes())
