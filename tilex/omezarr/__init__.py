"""The tilex output folder: a streaming, pyramidal OME-Zarr writer and its reader.

One module per concept:

:mod:`~tilex.omezarr.format`
    What the folder holds (images, layout, manifest) and the one reader of
    ``tilex.json``.
:mod:`~tilex.omezarr.ngff`
    The NGFF metadata of each image and its display windows.
:mod:`~tilex.omezarr.units`
    Write units: the geometry of every level, and assembling a unit in memory.
:mod:`~tilex.omezarr.layout`
    The arrays and metadata on disk, shared by every writer.
:mod:`~tilex.omezarr.journal`
    Crash safety: durable writes and the journal of finished units.
:mod:`~tilex.omezarr.stream`
    The in-process pyramid: tiles in, units of every level out.
:mod:`~tilex.omezarr.sink`
    :class:`OmeZarrSink`, the output's lifecycle, and :class:`UnitSink` for
    cluster workers.
:mod:`~tilex.omezarr.reader`
    Opening an output to read it.

The resume guard is :mod:`tilex.resume`. The names below resolve on first
use (PEP 562), so the zarr-free modules (``format``, ``ngff``, ``units``,
``journal``) import without zarr.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Compression": "tilex.omezarr.format",
    "ImageSpec": "tilex.omezarr.format",
    "Journal": "tilex.omezarr.journal",
    "LayoutSpec": "tilex.omezarr.format",
    "OmeZarrSink": "tilex.omezarr.sink",
    "Output": "tilex.omezarr.reader",
    "OutputImage": "tilex.omezarr.reader",
    "OutputLayout": "tilex.omezarr.layout",
    "SinkState": "tilex.omezarr.sink",
    "UnitSink": "tilex.omezarr.sink",
    "band_colours": "tilex.omezarr.format",
    "check_layout_matches": "tilex.resume",
    "chunk_digests": "tilex.omezarr.reader",
    "open_output": "tilex.omezarr.reader",
    "os_errors_name": "tilex.omezarr.journal",
    "output_images": "tilex.omezarr.format",
    "read_manifest": "tilex.omezarr.format",
    "tile_field": "tilex.omezarr.format",
    "window_stride": "tilex.omezarr.ngff",
    "write_atomic": "tilex.omezarr.journal",
    "write_json_atomic": "tilex.omezarr.journal",
}

__all__ = [
    "Compression",
    "ImageSpec",
    "Journal",
    "LayoutSpec",
    "OmeZarrSink",
    "Output",
    "OutputImage",
    "OutputLayout",
    "SinkState",
    "UnitSink",
    "band_colours",
    "check_layout_matches",
    "chunk_digests",
    "open_output",
    "os_errors_name",
    "output_images",
    "read_manifest",
    "tile_field",
    "window_stride",
    "write_atomic",
    "write_json_atomic",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tilex.omezarr' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
