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
              help="Seed of the training scenes (seeds SEED*100000 + i) and of their order.")  # fmt: skip
@click.option("--scenes", type=click.IntRange(min=1), default=48, show_default=True,
              help="Training scenes rendered.")  # fmt: skip
@click.option("--size", type=click.IntRange(min=24), default=96, show_default=True,
              help="Side of each scene, px.")  # fmt: skip
@click.option("--steps", type=click.IntRange(min=1), default=400, show_default=True,
              help="Optimiser steps.")  # fmt: skip
@click.option("--batch", type=click.IntRange(min=1), default=2, show_default=True,
              help="Scenes per step.")  # fmt: skip
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3,
              show_default=True, help="Adam learning rate.")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="Torch CPU threads (fixed, so the result is reproducible).")  # fmt: skip
def command(
    out: str, seed: int, scenes: int, size: int, steps: int, batch: int, lr: float, threads: int
) -> None:
    """Train the Siamese encoder from the designed weights (see tilex.training).

    Deterministic: the same options give the same weights on the same machine
    and library versions. Prints the loss as it goes and writes FILE and its
    model card (recipe, seeds, losses, sha256).
    """
    from tqdm import tqdm

    from tilex.training import TrainSpec, train, training_scenes, write

    spec = TrainSpec(
        seed=seed, scenes=scenes, size=size, steps=steps, batch=batch, lr=lr, threads=threads
    )
    click.echo(f"rendering {scenes} training scenes of {size}x{size} px", err=True)
    data = training_scenes(spec)
    with tqdm(total=steps, desc="training", unit="step", leave=True) as bar:

        def progress(step: int, total: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")

        model = train(spec, data, progress=progress)
    path = write(spec, model, Path(out))
    click.echo(
        f"wrote {path} and {path.with_suffix('.json').name}: loss {model.losses[0]:.4f} -> "
        f"{sum(model.losses[-10:]) / len(model.losses[-10:]):.4f} in {model.seconds:.0f} s"
    )
