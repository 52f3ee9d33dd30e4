"""``tilex evaluate``: how well an output finds a known hidden mask."""

from __future__ import annotations

import json

import click

from tilex.evaluate import DEFAULT_BINS


@click.command("evaluate")
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--truth",
    "truth",
    required=True,
    metavar="MASK",
    help="Single-plane image of OUT's size; nonzero pixels are hidden (e.g. hidden_mask.tif).",
)
@click.option(
    "--bins",
    type=click.IntRange(min=2, max=2**24),
    default=DEFAULT_BINS,
    show_default=True,
    help="Bins of the score histograms over [0, 1] behind the AUC and AP.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the measures as JSON.")
def command(out: str, truth: str, bins: int, as_json: bool) -> None:
    """Measure the complete output OUT against the truth mask MASK.

    Streams level 0 of OUT's score and winner chunk row by chunk row and
    prints the ROC AUC and average precision of the score, and the flagged
    fraction, precision, recall, F1 and IoU of the flagged pixels (winner > 0,
    at the run's threshold).
    """
    from tilex.evaluate import evaluate_output

    detection = evaluate_output(out, truth, bins=bins)
    if as_json:
        click.echo(json.dumps(detection.to_dict(), indent=2))
    else:
        click.echo("\n".join(detection.lines()))
