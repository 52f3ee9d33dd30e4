"""``tilex validate``: check an output with independent OME-Zarr tools."""

from __future__ import annotations

import click


@click.command("validate")
@click.argument("out", type=click.Path(file_okay=False))
def command(out: str) -> None:
    """Check the tilex output OUT with tilex's layout rules, ome-zarr-models,
    the NGFF JSON schemas (from ngff-zarr), yaozarrs and napari-ome-zarr.

    Prints one line per validator (skipped when not installed); exits with
    status 2 if any fails.
    """
    from tilex.errors import OutputError
    from tilex.validate import validate_output

    results = validate_output(out)
    for result in results:
        click.echo(str(result))
    failed = [r for r in results if not r.ok]
    if failed:
        names = ", ".join(r.name for r in failed)
        raise OutputError(f"{out} failed validation by {names}: {failed[0].message}")
    ran = sum(not r.skipped for r in results)
    click.echo(f"{out}: valid ({ran} of {len(results)} validators ran)")
