"""Detection measured: tilex against classical baselines on scans with a known hidden mask.

Scenes: ``tilex synth`` seeds (by default 101..104, which no test uses; 512x512,
8 bands) and physically based scenes with held-out settings (``tilex synth
--model physical --holdout``; seeds 9000.. which training never uses, two of
them with nothing hidden). Each is run on the CPU with ``stats_sample=1`` in
the modes of :data:`METHODS`: tilex's default (the trained weights,
calibrated, scored over the noise floor), the same with the designed
weights, the calibration's simpler models, and ArtExtract's fusion with the
designed weights (``calibrate="none", norm="band"``), and
measured with :func:`tilex.evaluate.evaluate_output` (ROC AUC and AP of the
stored score from 65536-bin histograms; flagged % and F1 of ``winner > 0`` at
the run's threshold). On the same planes, in memory, the classical baselines
are scored by the exact ROC AUC (:func:`tilex.metrics.roc_auc`) and step-wise
AP against the mask:

- ``max|gray-band|``: ``max_i |gray - band_i|``, gray the BT.601 luminance
  of the visible image (:func:`tilex.colour.luminance`), planes scaled to 0..1;
- ``calibrated residual``: ``max_i |band_i - pred_i| / floor_i``, the
  calibration and noise floors of a run without any encoder (its flagged %
  is of ``> 1``);
- ``|PC1|``: the first principal component of the standardised planes
  (visible R, G, B and every band, each to mean 0 and variance 1);
- ``best |PCk|, k<=3``: the best of the top three components by AUC, named in
  the notes; it is chosen *with* the mask, an upper bound no user could pick.

The real scan ``../shared/data/cave-oil-painting`` (CAVE "oil_painting", 8
bands, 560..700 nm) has no hidden truth: only each mode's flagged % and the share
of the flagged pixels each band wins are reported (skipped with a message
when the folder is absent). Baselines have no threshold, so no flagged % or F1.

Run (about 3 minutes on 2 CPU cores)::

    .venv/bin/python benchmarks/bench_detection.py
    .venv/bin/python benchmarks/bench_detection.py --seeds 101,102 --size 1024 --bands 8
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name, parse_size, print_table, section  # noqa: E402

import tilex  # noqa: E402
from tilex.colour import luminance  # noqa: E402
from tilex.evaluate import evaluate_output  # noqa: E402
from tilex.metrics import average_precision, roc_auc  # noqa: E402
from tilex.scan import open_scan  # noqa: E402
from tilex.synthetic import MASK_FILE  # noqa: E402

REAL_SCAN = Path(__file__).resolve().parents[2] / "shared" / "data" / "cave-oil-painting"
HEADER = ["scene", "method", "AUC", "AP", "flagged %", "F1", "notes"]


def principal_components(planes: np.ndarray, k: int = 3) -> list[np.ndarray]:
    """The top ``k`` principal component images of standardised ``planes [P, H, W]``."""
    x = planes.reshape(planes.shape[0], -1).astype(np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    x /= np.maximum(x.std(axis=1, keepdims=True), 1e-12)
    values, vectors = np.linalg.eigh(x @ x.T / x.shape[1])
    top = np.argsort(values)[::-1][:k]
    return [(vectors[:, i] @ x).reshape(planes.shape[1:]) for i in top]


def baselines(scene: str, manifest: Path, hidden: np.ndarray) -> list[list]:
    """Rows of the classical baselines, scored against ``hidden`` in memory."""
    scan = open_scan(manifest)
    visible, bands = scan.read_region(0, scan.shape[0], 0, scan.shape[1])
    raw = np.abs(luminance(visible)[None] - bands).max(axis=0)
    rows = [[scene, "max|gray-band|", roc_auc(raw, hidden), average_precision(raw, hidden)]]
    residual = calibrated_residual(visible, bands)
    rows.append(
        [
            scene,
            "calibrated residual",
            roc_auc(residual, hidden),
            average_precision(residual, hidden),
            100 * float((residual > 1).mean()),
        ]
    )
    components = [np.abs(pc) for pc in principal_components(np.concatenate([visible, bands]))]
    aucs = [roc_auc(pc, hidden) for pc in components]
    rows.append([scene, "|PC1|", aucs[0], average_precision(components[0], hidden)])
    best = int(np.argmax(aucs))
    rows.append(
        [
            scene,
            "best |PCk|, k<=3",
            aucs[best],
            average_precision(components[best], hidden),
            None,
            None,
            f"PC{best + 1}, chosen with the mask",
        ]
    )
    return [row + [None] * (len(HEADER) - len(row)) for row in rows]


METHODS = {
    "tilex default": {},  # trained weights, calibrated (registered), scored over the noise floor
    "designed weights": {"weights": "designed"},  # the same, with the weights it was trained from
    "calibrate colour": {"calibrate": "colour"},  # without the registration terms
    "calibrate flat": {"calibrate": "flat"},  # without the colour table
    "calibrate affine": {"calibrate": "affine"},  # without the lighting surface (session 3)
    "ArtExtract (designed weights, calibrate none, norm band)": {
        "calibrate": "none",
        "norm": "band",
        "weights": "designed",
    },
}
"""tilex's modes in the table: today's default, its designed weights, its calibration's
simpler models, and the fusion and weights it had before issue 13."""


def run_tilex(manifest: Path, out: Path, options: dict) -> tuple[Any, float]:
    """``tilex run`` with ``options`` on the CPU; the opened output and the seconds it took."""
    start = time.perf_counter()
    tilex.run(manifest, out, device="cpu", stats_sample=1, **options)
    return tilex.open_output(out), time.perf_counter() - start


def calibrated_residual(visible: np.ndarray, bands: np.ndarray) -> np.ndarray:
    """``max_i |band_i - pred_i| / floor_i``: the calibration's residual without any encoder.

    The model is fitted as a run fits it (:func:`tilex.calibration.fit_image`)
    and the floors are a run's (:func:`tilex.stats.noise_floor` of the
    residual's exact histogram).
    """
    from tilex import kernels
    from tilex.calibration import CalibrationSpec, fit_image
    from tilex.stats import noise_floor

    predicted = fit_image(visible, bands, CalibrationSpec()).predict(visible)
    residual = np.abs(bands - predicted)
    zeros = np.zeros((1, *bands.shape[1:]), np.float32)
    _, _, floor = noise_floor(kernels.dissimilarity_histogram(zeros, residual[:, None]))
    return (residual / floor[:, None, None]).max(axis=0)


def winner_shares(output: Any) -> str:
    """Each band's share of the flagged pixels, in percent."""
    winner = np.asarray(output["winner"].levels[0][...])
    counts = np.bincount(winner.ravel(), minlength=len(output.bands) + 1)[1:]
    flagged = max(int(counts.sum()), 1)
    return ", ".join(
        f"{band['name']} {100 * n / flagged:.0f}"
        for band, n in zip(output.bands, counts, strict=True)
    )


def scene_rows(scene: str, manifest: Path, work: Path) -> list[list]:
    """tilex's modes and the baselines on one scene with a truth mask (possibly empty)."""
    mask_path = manifest.parent / MASK_FILE
    hidden = tifffile.imread(mask_path) != 0
    rows = []
    for k, (method, options) in enumerate(METHODS.items()):
        output, seconds = run_tilex(manifest, work / f"{manifest.parent.name}-out{k}", options)
        d = evaluate_output(output, mask_path)
        notes = f"hidden {100 * d.hidden / d.pixels:.1f} %, {seconds:.0f} s"
        if not hidden.any():
            rows.append([scene, method, None, None, 100 * d.flagged_fraction, None, notes])
        else:
            rows.append(
                [scene, method, d.auc, d.average_precision, 100 * d.flagged_fraction, d.f1, notes]
            )
    if not hidden.any():
        scan = open_scan(manifest)
        visible, bands = scan.read_region(0, scan.shape[0], 0, scan.shape[1])
        residual = calibrated_residual(visible, bands)
        flagged = 100 * float((residual > 1).mean())
        return rows + [[scene, "calibrated residual", None, None, flagged, None, ""]]
    return rows + baselines(scene, manifest, hidden)


def synthetic_rows(seed: int, size: tuple[int, int], bands: int, work: Path) -> list[list]:
    manifest = tilex.synth(work / f"scan{seed}", size=size, bands=bands, seed=seed)
    return scene_rows(f"synth seed {seed}", manifest, work)


def physical_rows(seed: int, recipe: str, size: tuple[int, int], work: Path) -> list[list]:
    from tilex.synthetic.physical import synth_physical

    manifest = synth_physical(
        work / f"phys{seed}", size=size, seed=seed, recipe=recipe, holdout=True
    )
    return scene_rows(f"physical {recipe} {seed} (held out)", manifest, work)


def real_rows(folder: Path, work: Path) -> list[list]:
    bands = sorted(folder.glob("oil_painting_ms_*.png"))
    manifest = work / "cave" / "scan.json"
    manifest.parent.mkdir()
    entries = []
    for path in bands:
        nm = 400 + 10 * (int(path.stem.rsplit("_", 1)[1]) - 1)
        entries.append({"name": f"ms{nm}", "file": str(path.resolve()), "wavelength_nm": nm})
    visible = str((folder / "oil_painting_RGB.bmp").resolve())
    manifest.write_text(json.dumps({"visible": visible, "bands": entries}))
    rows = []
    for k, (method, options) in enumerate(METHODS.items()):
        output, seconds = run_tilex(manifest, work / f"cave-out{k}", options)
        winner = np.asarray(output["winner"].levels[0][...])
        notes = f"no truth; winner shares %: {winner_shares(output)}; {seconds:.0f} s"
        flagged = 100 * float((winner > 0).mean())
        rows.append(["cave oil_painting", method, None, None, flagged, None, notes])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", default="101,102,103,104", help="tilex synth seeds (comma-separated)"
    )
    parser.add_argument("--size", default="512", help="synthetic scan size HxW or N (default 512)")
    parser.add_argument("--bands", type=int, default=8, help="synthetic bands (default 8)")
    parser.add_argument(
        "--physical",
        default="9000:underdrawing,9001:composition,9002:mixed,9003:nothing,"
        "9004:underdrawing,9005:composition,9006:mixed,9007:nothing",
        help="held-out physical scenes SEED:RECIPE (comma-separated; none trained on them)",
    )
    parser.add_argument("--physical-size", default="384", help="physical scene size (default 384)")
    parser.add_argument("--real", type=Path, default=REAL_SCAN, help="the CAVE oil_painting folder")
    args = parser.parse_args()
    size = parse_size(args.size)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    print(f"# detection on {cpu_name()}; synth {size[0]}x{size[1]}, {args.bands} bands")
    rows: list[list] = []
    with tempfile.TemporaryDirectory(prefix="tilex-bench-detection-") as tmp:
        work = Path(tmp)
        for seed in seeds:
            with section(f"synth seed {seed}"):
                rows += synthetic_rows(seed, size, args.bands, work)
        for item in (p for p in args.physical.split(",") if p):
            seed, recipe = item.split(":")
            with section(f"physical {recipe} {seed}"):
                rows += physical_rows(int(seed), recipe, parse_size(args.physical_size), work)
        if args.real.is_dir():
            with section(f"real scan {args.real}"):
                rows += real_rows(args.real, work)
        else:
            print(f"\n(skipped the real scan: {args.real} is absent)")
    print()
    print_table(HEADER, [[*row[:2], *(_cell(v) for v in row[2:6]), row[6] or ""] for row in rows])


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
