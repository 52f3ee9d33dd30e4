"""``tilex export``: one image of an output as a pyramidal OME-TIFF."""

from __future__ import annotations

import click

from tilex.export import EXPORT_IMAGES


@click.command("export")
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["ome-tiff"]),
    default="ome-tiff",
    show_default=True,
    help="File format to write (pyramidal, tiled OME-TIFF with SubIFDs).",
)
@click.option(
    "--image",
    type=click.Choice(EXPORT_IMAGES),
    default="overlay",
    show_default=True,
    help="Which image of the output to export (dissimilarity only if the run kept it).",
)
@click.option(
    "-o",
    "--output",
    "dest",
    type=click.Path(dir_okay=False),
    default=None,
    help="File to write (default OUT/<image>.ome.tif).",
)
@click.option(
    "--compression",
    type=click.Choice(["zlib", "zstd", "lzw", "none"]),
    default="zlib",
    show_default=True,
    help="TIFF tile compression (zlib is read by every tool).",
)
@click.option("--overwrite", is_flag=True, help="Replace the file if it exists.")
def command(
    out: str, fmt: str, image: str, dest: str | None, compression: str, overwrite: bool
) -> None:
    """Export an image of the tilex output OUT with all its pyramid levels.

    The OME-TIFF opens in QuPath, Fiji/Bio-Formats and napari; its levels
    are the OME-Zarr pyramid's, as SubIFDs of 512x512 tiles.
    """
    from tilex.export import export_ome_tiff

    path = export_ome_tiff(out, dest, image=image, compression=compression, overwrite=overwrite)
    click.echo(f"wrote {path}")
