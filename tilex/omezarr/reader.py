"""Reading a tilex output back: its images, their pyramid levels, its manifest.

The writers are :class:`~tilex.omezarr.OmeZarrSink` and the workers of
:mod:`tilex.distributed`; this module only opens what they wrote, for
``tilex preview``, ``export``, ``validate`` and notebooks. The manifest is
read by :func:`~tilex.omezarr.format.read_manifest`, like everywhere else.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zarr

from tilex.errors import OutputError
from tilex.omezarr.format import read_manifest

__all__ = ["Output", "OutputImage", "chunk_digests", "open_output"]


@dataclass(frozen=True)
class OutputImage:
    """One image of an output: its levels (zarr arrays, level 0 first) and metadata."""

    name: str
    path: Path
    levels: tuple[Any, ...]
    attrs: dict[str, Any]  # OME attributes (unwrapped from "ome" in 0.5)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(a.shape) for a in self.levels]

    @property
    def channel_labels(self) -> list[str]:
        return [c.get("label", "") for c in self.attrs.get("omero", {}).get("channels", [])]

    def level_for(self, max_side: int) -> int:
        """The first (largest) level whose longest side is at most ``max_side``."""
        for k, shape in enumerate(self.shapes):
            if max(shape[-2:]) <= max_side:
                return k
        return len(self.levels) - 1


@dataclass(frozen=True)
class Output:
    """A tilex output folder opened for reading (see :func:`open_output`)."""

    path: Path
    manifest: dict[str, Any]
    images: dict[str, OutputImage]

    @property
    def state(self) -> str:
        return str(self.manifest.get("state", "unknown"))

    @property
    def version(self) -> str:
        return str(self.manifest["output"]["ome_zarr_version"])

    @property
    def bands(self) -> list[dict[str, Any]]:
        return list(self.manifest["output"].get("bands", []))

    def __getitem__(self, name: str) -> OutputImage:
        try:
            return self.images[name]
        except KeyError:
            raise OutputError(
                f"output {self.path} has no image {name!r} (it has {', '.join(self.images)})"
            ) from None


def chunk_digests(out: str | os.PathLike | Output) -> dict[str, str]:
    """``"image/level/cy.cx"`` -> sha256 of that chunk's decoded array (its dtype, shape, bytes).

    Pins the arrays an output holds, not its codec's bytes: two outputs with
    equal digests hold the same values in the same chunks (the golden tests and
    the benchmarks compare runs with it).
    """
    import hashlib

    output = out if isinstance(out, Output) else open_output(out)
    found = {}
    for name in sorted(output.images):
        for level, array in enumerate(output[name].levels):
            cy, cx = array.chunks[-2:]
            for y in range(0, array.shape[-2], cy):
                for x in range(0, array.shape[-1], cx):
                    block = array[..., y : y + cy, x : x + cx]
                    digest = hashlib.sha256(f"{block.dtype}{block.shape}".encode())
                    digest.update(block.tobytes())
                    found[f"{name}/{level}/{y // cy}.{x // cx}"] = digest.hexdigest()
    return found


def open_output(path: str | os.PathLike, *, require_complete: bool = True) -> Output:
    """Open a tilex output folder for reading.

    Parameters
    ----------
    path : path-like
        The output folder (or its ``tilex.json``).
    require_complete : bool
        Refuse an output whose run did not complete.

    Returns
    -------
    Output

    Raises
    ------
    OutputError
        Not a tilex output, or incomplete while ``require_complete``.

    Examples
    --------
    >>> open_output("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tilex.errors.OutputError: /nonexistent is not a tilex output: no tilex.json ...
    """
    manifest = read_manifest(path)
    path = Path(path)
    if path.is_file():  # the manifest itself: its folder is the output
        path = path.parent
    layout = manifest["output"]
    state = manifest.get("state")
    if require_complete and state != "complete":
        raise OutputError(
            f"output {path} is incomplete (state {state!r}): the run did not finish; continue it with --resume or rerun it"
        )
    version, zarr_format = str(layout["ome_zarr_version"]), int(layout["zarr_format"])
    images = {
        name: _open_image(name, path / rel, version, zarr_format, layout)
        for name, rel in layout["images"].items()
    }
    return Output(path, manifest, images)


def _open_image(name: str, path: Path, version: str, zarr_format: int, layout: dict) -> OutputImage:
    try:
        group = zarr.open_group(path, mode="r", zarr_format=zarr_format)  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError) as err:
        raise OutputError(f"cannot open image {name!r} at {path}: {err}") from None
    attrs = dict(group.attrs)
    if version == "0.5":
        attrs = dict(attrs.get("ome", {}))
    multiscales = attrs.get("multiscales")
    if multiscales:
        paths: Iterable[str] = [d["path"] for d in multiscales[0]["datasets"]]
    else:  # incomplete output: the levels the layout promised
        paths = [str(k) for k in range(len(layout["levels"]))]
    levels = tuple(group[p] for p in paths)
    return OutputImage(name, path, levels, attrs)
