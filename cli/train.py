"""``tilex train``: fit the encoder's weights on physically based scenes with known hidden masks."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("train")
@click.option(
    "-o", "--out", "out", required=True, metavar="FILE",
    help="Weights file to write (.safetensors); the model card goes beside it (.json).",
)  # fmt: skip
@click.option("--seed", type=click.IntRange(0, 20_000), default=0, show_default=True,
              help="Seed of the training scenes (seeds SEED*100000 + i), crops and order.")  # fmt: skip
@click.option("--scenes", type=click.IntRange(min=1), default=40, show_default=True,
              help="Training scenes rendered.")  # fmt: skip
@click.option("--size", type=click.IntRange(min=24), default=384, show_default=True,
              help="Side of each scene, px.")  # fmt: skip
@click.option("--crop", type=click.IntRange(min=24), default=256, show_default=True,
              help="Side of the crop of a scene each step sees, px.")  # fmt: skip
@click.option("--steps", type=click.IntRange(min=1), default=150, show_default=True,
              help="Optimiser steps.")  # fmt: skip
@click.option("--batch", type=click.IntRange(min=1), default=4, show_default=True,
              help="Crops per step.")  # fmt: skip
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-2,
              show_default=True, help="Adam's learning rate (cosine to 1/20 of it).")  # fmt: skip
@click.option("--false-flags", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Weight of the soft false-flag share against the ranking term.")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="Torch CPU threads (fixed, so the result is reproducible).")  # fmt: skip
@click.option("--synthetic", type=click.IntRange(min=0), default=8, show_default=True,
              help="tilex synth scans added to the physical training scenes.")  # fmt: skip
@click.option("--synthetic-size", type=click.IntRange(min=24), default=1024, show_default=True,
              help="Side of each tilex synth scan, px.")  # fmt: skip
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="Measure the designed and the trained weights on the 20 held-out "
              "validation scenes (seeds 8000-8019) into the model card.")  # fmt: skip
def command(
    out: str,
    seed: int,
    scenes: int,
    size: int,
    crop: int,
    steps: int,
    batch: int,
    lr: float,
    false_flags: float,
    threads: int,
    synthetic: int,
    synthetic_size: int,
    validate: bool,
) -> None:
    """Train the Siamese encoder from the designed weights (see tilex.training).

    Deterministic: the same options give the same weights on the same machine
    and library versions. Prints the loss as it goes and writes FILE and its
    model card (recipe, seeds, losses, validation metrics, sha256).
    """
    from tqdm import tqdm

    from tilex.encoder.network import designed_network
    from tilex.errors import UsageError
    from tilex.training import TrainSpec, train, training_scenes, validate_all, write

    try:
        spec = TrainSpec(
            seed=seed, scenes=scenes, size=size, crop=crop, steps=steps, batch=batch, lr=lr,
            false_flags=false_flags, threads=threads, synthetic=synthetic,
            synthetic_size=synthetic_size,
        )  # fmt: skip
    except ValueError as err:
        raise UsageError(str(err)) from None
    click.echo(
        f"rendering {scenes} physical training scenes of {size}x{size} px and {synthetic} "
        f"tilex synth scans of {synthetic_size}x{synthetic_size} px",
        err=True,
    )
    data = training_scenes(spec)
    with tqdm(total=steps, desc="training", unit="step", leave=True) as bar:

        def progress(step: int, total: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")

        model = train(spec, data, progress=progress)
    metrics = None
    if validate:
        click.echo("measuring on the held-out validation scenes", err=True)
        metrics = validate_all({"designed": designed_network(), "trained": model.network})
    path = write(spec, model, Path(out), metrics)
    click.echo(
        f"wrote {path} and {path.with_suffix('.json').name}: loss {model.losses[0]:.4f} -> "
        f"{sum(model.losses[-10:]) / len(model.losses[-10:]):.4f} in {model.seconds:.0f} s"
    )
    for name, m in (metrics or {}).get("networks", {}).items():
        click.echo(
            f"  {name}: held-out mean ROC AUC {m['auc_mean']:.4f} (min {m['auc_min']:.3f}); "
            f"nothing hidden: flagged {100 * m['flagged_mean']:.2f} % mean, "
            f"{100 * m['flagged_max']:.2f} % max"
        )
