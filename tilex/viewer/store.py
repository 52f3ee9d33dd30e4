"""Opening an output so that nothing outside its folder can be read through it.

``tilex view`` serves an output folder to a browser. Every file it reads,
the arrays' chunks and metadata included, goes through :class:`ContainedStore`,
a read-only zarr store that refuses any key whose real path (symlinks
resolved) leaves the output folder. :func:`open_inside` opens an output that
way; it is :func:`tilex.open_output` with that store.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import zarr
from zarr.storage import LocalStore

from tilex.errors import OutputError
from tilex.omezarr import Output, OutputImage
from tilex.omezarr.format import MANIFEST, read_manifest

__all__ = ["ContainedStore", "OutsideError", "inside", "open_inside"]


class OutsideError(PermissionError):
    """A path that leads outside the output folder (``..``, absolute, or a symlink out)."""


def inside(root: Path, relative: str | os.PathLike) -> Path:
    """The real path of ``root / relative``, refused unless it stays inside ``root``.

    ``root`` must be resolved already. ``relative`` must be relative; its
    symlinks are followed and the result must lie under ``root``.

    Raises
    ------
    OutsideError
        An absolute ``relative``, a ``..`` that climbs out, or a symlink out.

    Examples
    --------
    >>> inside(Path("/tmp"), "../etc/passwd")
    Traceback (most recent call last):
    ...
    tilex.viewer.store.OutsideError: '../etc/passwd' is not inside /tmp
    """
    if Path(relative).is_absolute():
        raise OutsideError(f"{str(relative)!r} is not inside {root}")
    real = (root / relative).resolve()
    if not real.is_relative_to(root):
        raise OutsideError(f"{str(relative)!r} is not inside {root}")
    return real


class ContainedStore(LocalStore):
    """A read-only :class:`zarr.storage.LocalStore` that reads nothing outside ``within``."""

    def __init__(self, root: Path, *, within: Path) -> None:
        super().__init__(root, read_only=True)
        self.within = within

    def _check(self, key: str) -> None:
        inside(self.within, (self.root / key).relative_to(self.within))

    async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
        self._check(key)
        return await super().get(key, prototype, byte_range)

    async def get_partial_values(
        self, prototype: Any, key_ranges: Iterable[tuple[str, Any]]
    ) -> list[Any]:
        key_ranges = list(key_ranges)
        for key, _ in key_ranges:
            self._check(key)
        return await super().get_partial_values(prototype, key_ranges)

    async def exists(self, key: str) -> bool:
        self._check(key)
        return await super().exists(key)


def open_inside(path: str | os.PathLike) -> Output:
    """Open a complete output, reading only inside its folder.

    Raises
    ------
    OutputError
        Not a complete tilex output, or one whose manifest or images lead
        outside the folder.
    """
    root = Path(path).resolve()
    try:
        inside(root, MANIFEST)
    except OutsideError:
        raise OutputError(f"{root / MANIFEST} leads outside {root}: refusing to serve it") from None
    manifest = read_manifest(root)
    if manifest.get("state") != "complete":
        raise OutputError(
            f"output {root} is incomplete (state {manifest.get('state')!r}): the run did not"
            " finish; continue it with --resume or rerun it"
        )
    layout = manifest["output"]
    version, zarr_format = str(layout["ome_zarr_version"]), int(layout["zarr_format"])
    images = {}
    for name, rel in layout["images"].items():
        try:
            images[name] = _open_image(name, root, str(rel), version, zarr_format)
        except OutsideError:
            raise OutputError(
                f"image {name!r} ({rel}) leads outside {root}: refusing to serve it"
            ) from None
    return Output(root, manifest, images)


def _open_image(name: str, root: Path, rel: str, version: str, zarr_format: int) -> OutputImage:
    path = root / rel
    inside(root, rel)
    try:
        store = ContainedStore(path, within=root)
        group = zarr.open_group(store=store, mode="r", zarr_format=zarr_format)  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError) as err:
        raise OutputError(f"cannot open image {name!r} at {path}: {err}") from None
    attrs = dict(group.attrs)
    if version == "0.5":
        attrs = dict(attrs.get("ome", {}))
    datasets = attrs["multiscales"][0]["datasets"]
    return OutputImage(name, path, tuple(group[d["path"]] for d in datasets), attrs)
