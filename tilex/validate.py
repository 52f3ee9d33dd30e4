"""Check a tilex output with independent OME-Zarr tools, and with tilex's own rules.

Each validator opens every image of the output (``collage`` with its
``labels/winner``, ``score``, ``overlay`` and, when kept, ``dissimilarity``):

``tilex-layout``
    tilex's own contract: the run is complete, every image has the levels of
    :func:`tilex.pyramid.level_shapes`, labels and images have as many levels,
    chunks (and shards in 0.5) have the documented shapes.
``ome-zarr-models``
    The pydantic models of the OME-Zarr spec (``ome_zarr_models.open_ome_zarr``).
``ngff-json-schema``
    The NGFF JSON schemas bundled with ``ngff-zarr``, checked with
    ``jsonschema`` (image, strict image and label schemas).
``yaozarrs``
    ``yaozarrs.validate_zarr_store``: metadata and storage structure.
``napari-ome-zarr``
    napari's OME-Zarr reader, its layers added to a Qt-free
    ``napari.components.ViewerModel``.

A validator whose package is not installed is reported as skipped, not failed.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tilex.omezarr import Output, open_output
from tilex.pyramid import level_shapes

__all__ = ["VALIDATORS", "ValidatorResult", "validate_output"]


@dataclass(frozen=True)
class ValidatorResult:
    """The verdict of one validator on one output."""

    name: str
    ok: bool
    message: str
    skipped: bool = False

    def __str__(self) -> str:
        verdict = "skipped" if self.skipped else ("ok" if self.ok else "FAILED")
        return f"{self.name}: {verdict}" + (f" ({self.message})" if self.message else "")


class _Skip(Exception):
    """Raised by a validator whose package is not installed."""


def _groups(out: Output) -> list[tuple[str, Path, bool]]:
    """``(name, path, is_label)`` of every image group of ``out``."""
    return [(name, img.path, name == "winner") for name, img in out.images.items()]


def _roots(out: Output) -> list[Path]:
    """The image roots (the ``*.ome.zarr`` folders) of ``out``."""
    return [img.path for name, img in out.images.items() if name != "winner"]


def _require(module: str, hint: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise _Skip(f"{hint} is not installed (pip install {hint})") from None


# --------------------------------------------------------------------------- validators


def _check_layout(out: Output) -> str:
    layout = out.manifest["output"]
    shape, chunk, unit = tuple(layout["shape"]), int(layout["chunk"]), int(layout["unit"])
    expected = level_shapes(shape, chunk)
    for name, img in out.images.items():
        got = [s[-2:] for s in img.shapes]
        if got != expected:
            raise AssertionError(f"{name}: level shapes {got}, expected {expected}")
        lead = () if name == "winner" else (1,)
        for k, array in enumerate(img.levels):
            if tuple(array.chunks) != (*lead, chunk, chunk):
                raise AssertionError(f"{name} level {k}: chunks {array.chunks}")
            shards = getattr(array, "shards", None)
            want = (*lead, unit, unit) if out.version == "0.5" else None
            if shards != want:
                raise AssertionError(f"{name} level {k}: shards {shards}, expected {want}")
        ms = img.attrs.get("multiscales") or []
        if len(ms) != 1 or len(ms[0]["datasets"]) != len(expected):
            raise AssertionError(f"{name}: multiscales metadata missing or wrong level count")
    return f"{len(out.images)} images, {len(expected)} levels"


def _check_models(out: Output) -> str:
    models = _require("ome_zarr_models", "ome-zarr-models")
    import zarr

    found = []
    for name, path, is_label in _groups(out):
        group = zarr.open_group(path, mode="r")
        model = models.open_ome_zarr(group)
        kind = type(model).__name__
        want = "ImageLabel" if is_label else "Image"
        if kind != want:
            raise AssertionError(f"{name}: parsed as {kind}, expected {want}")
        found.append(kind)
    return f"{len(found)} groups as {', '.join(sorted(set(found)))}"


def _schema_validators(version: str) -> dict[str, Any]:
    _require("jsonschema", "jsonschema")
    _require("ngff_zarr", "ngff-zarr")
    from importlib.resources import files

    from jsonschema.validators import validator_for
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    folder = files("ngff_zarr").joinpath("spec", version, "schemas")
    if not folder.is_dir():
        raise _Skip(f"ngff-zarr bundles no schemas for OME-Zarr {version}")
    schemas: dict[str, dict] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".schema"):
            schemas[entry.name.removesuffix(".schema")] = json.loads(entry.read_text())
    registry = Registry().with_resources(
        (s["$id"], Resource.from_contents(s, default_specification=DRAFT202012))
        for s in schemas.values()
        if "$id" in s
    )
    return {
        name: validator_for(schema)(schema, registry=registry) for name, schema in schemas.items()
    }


def _check_schemas(out: Output) -> str:
    import zarr

    validators = _schema_validators(out.version)
    checked = 0
    for name, path, is_label in _groups(out):
        attrs = dict(zarr.open_group(path, mode="r").attrs)
        kinds = ("label", "strict_label") if is_label else ("image", "strict_image")
        for kind in kinds:
            if kind not in validators:
                continue
            errors = sorted(validators[kind].iter_errors(attrs), key=lambda e: list(e.path))
            if errors:
                e = errors[0]
                where = "/".join(str(p) for p in e.absolute_path) or "(root)"
                raise AssertionError(f"{name} vs {kind}.schema at {where}: {e.message}")
            checked += 1
    return f"{checked} schema checks (OME-Zarr {out.version})"


def _check_yaozarrs(out: Output) -> str:
    yaozarrs = _require("yaozarrs", "yaozarrs")
    for root in _roots(out):
        yaozarrs.validate_zarr_store(str(root))
    return f"{len(_roots(out))} stores"


def _check_napari(out: Output) -> str:
    reader_mod = _require("napari_ome_zarr", "napari-ome-zarr")
    _require("napari", "napari")
    from napari.components import ViewerModel

    viewer = ViewerModel()
    for root in _roots(out):
        with contextlib.redirect_stdout(io.StringIO()):  # the reader prints its metadata
            reader = reader_mod.napari_get_reader(str(root))
            if reader is None:
                raise AssertionError(f"napari-ome-zarr does not recognise {root.name}")
            layer_data = reader(str(root))
        if not layer_data:
            raise AssertionError(f"napari-ome-zarr found no layers in {root.name}")
        for item in layer_data:
            viewer._add_layer_from_data(*item)
    kinds = [type(layer).__name__ for layer in viewer.layers]
    if "Labels" not in kinds:
        raise AssertionError("napari-ome-zarr did not read labels/winner as a Labels layer")
    n_levels = len(next(iter(out.images.values())).levels)
    for layer in viewer.layers:
        levels = len(layer.data) if layer.multiscale else 1
        if levels != n_levels:
            raise AssertionError(
                f"napari layer {layer.name!r} has {levels} levels, expected {n_levels}"
            )
    return f"{len(kinds)} layers ({', '.join(sorted(set(kinds)))})"


VALIDATORS: dict[str, Callable[[Output], str]] = {
    "tilex-layout": _check_layout,
    "ome-zarr-models": _check_models,
    "ngff-json-schema": _check_schemas,
    "yaozarrs": _check_yaozarrs,
    "napari-ome-zarr": _check_napari,
}
"""Every validator by name, in the order they run."""


def validate_output(path: str | Path) -> list[ValidatorResult]:
    """Run every validator on the tilex output at ``path``.

    Parameters
    ----------
    path : path-like
        A tilex output folder.

    Returns
    -------
    list of ValidatorResult
        One per validator; ``skipped`` ones were not installed.

    Raises
    ------
    OutputError
        ``path`` is not a complete tilex output.

    Examples
    --------
    >>> validate_output("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tilex.errors.OutputError: /nonexistent is not a tilex output: ...
    """
    out = open_output(path)
    results = []
    for name, check in VALIDATORS.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                message = check(out)
            except _Skip as skip:
                results.append(ValidatorResult(name, True, str(skip), skipped=True))
                continue
            except Exception as err:  # noqa: BLE001 - a validator's verdict, reported not raised
                text = str(err).splitlines()[0] if str(err) else ""
                results.append(ValidatorResult(name, False, f"{type(err).__name__}: {text}"[:500]))
                continue
        # deprecation notices are the libraries' own import-time noise, not a verdict
        notes = sorted(
            {
                str(w.message).splitlines()[0][:120]
                for w in caught
                if not issubclass(w.category, DeprecationWarning | PendingDeprecationWarning)
            }
        )
        if notes:
            message += f"; {len(notes)} warning(s): " + " | ".join(notes[:3])
        results.append(ValidatorResult(name, True, message))
    return results
