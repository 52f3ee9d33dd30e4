"""``tilex info``: what a scan holds and how its files are laid out on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from tilex.cli.options import scan_from_options, scan_options


@click.command("info")
@scan_options
@click.option("--json", "as_json", is_flag=True, help="Print the full description as JSON.")
def command(
    scan: str | None,
    visible: str | None,
    band: tuple[str, ...],
    input_range: tuple[float, float] | None,
    as_json: bool,
) -> None:
    """Show SCAN's size, bands, wavelengths, dtypes, file formats and tiling.

    SCAN is a scan.json, a folder holding one, or a multi-channel
    OME-TIFF/OME-Zarr/Zarr; or give --visible FILE --band NAME[@NM]=FILE ...
    Reads file headers and one tile per TIFF; PNG/BMP/JPEG files and float
    files up to 64 Mpx are read whole (the latter to refuse NaN/infinity and
    show their value range); larger float files are sampled in 64 places.
    """
    with scan_from_options(scan, visible, band, input_range) as opened:
        description = opened.describe()
    if as_json:
        click.echo(json.dumps(description, indent=2))
    else:
        click.echo("\n".join(format_description(description)))


def format_description(info: dict[str, Any]) -> list[str]:
    """The lines ``tilex info`` prints for a :meth:`tilex.scan.Scan.describe` dict."""
    height, width = info["shape"]
    size = info["pixel_size_um"]
    lines = [
        f"scan     {info['origin'] or '(from --visible/--band)'}",
        f"size     {height} x {width} px (H x W), "
        + (f"pixel size {size:g} um" if size else "pixel size unknown"),
        f"visible  {info['visible']['path']} (channels {info['visible']['channels']}), "
        f"{_scaling(info['visible'])}",
        f"bands    {len(info['bands'])}",
    ]
    rows = [["#", "name", "wavelength", "file", "channel", "scaled to 0..1", "values"]]
    for i, band in enumerate(info["bands"], 1):
        wavelength = band["wavelength_nm"]
        rows.append(
            [
                str(i),
                band["name"],
                f"{wavelength:g} nm" if wavelength else "-",
                Path(band["path"]).name,
                str(band["channel"]),
                _range(band["input_range"]),
                _values(band["values"]),
            ]
        )
    lines += _table(rows)
    lines.append("inputs")
    rows = [["file", "format", "dtype", "HxWxC", "on-disk tiling", "compression"]]
    for item in info["inputs"]:
        rows.append(
            [
                item["path"],
                item["format"],
                item["dtype"],
                "x".join(map(str, [*item["shape"], item["channels"]])),
                _tiling(item["tiling"]),
                item["compression"],
            ]
        )
    lines += _table(rows)
    return lines


def _scaling(plane: dict[str, Any]) -> str:
    text = f"{_range(plane['input_range'])} scaled to 0..1"
    return text + (f", values {_values(plane['values'])}" if plane["values"] else "")


def _range(pair: list[float]) -> str:
    return f"{pair[0]:g}..{pair[1]:g}"


def _values(values: dict[str, Any] | None) -> str:
    """A float plane's measured values (integers are not read for this: '-')."""
    if not values:
        return "-"
    return f"{values['min']:.4g}..{values['max']:.4g}" + (" (sampled)" if values["sampled"] else "")


def _tiling(tiling: dict[str, Any]) -> str:
    if "tile" in tiling:
        return "tiles " + "x".join(map(str, tiling["tile"]))
    if "rows_per_strip" in tiling:
        return f"strips of {tiling['rows_per_strip']} rows"
    if "chunks" in tiling:
        text = (
            "chunks " + "x".join(map(str, tiling["chunks"])) + " (" + ",".join(tiling["axes"]) + ")"
        )
        if "shards" in tiling:
            text += " in shards " + "x".join(map(str, tiling["shards"]))
        return text
    return "whole image"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
