"""Agreement of reduced encoder precisions with fp32, end to end.

Runs the whole job (statistics pass and fusion) on a synthetic scan once in
fp32 and once per other precision available on the device, and prints the
share of pixels whose winner agrees with fp32, the largest score difference,
and the ROC AUC against the hidden mask. On CPU only bf16 (autocast) exists;
on CUDA: tf32, bf16 and fp16 (autocast, channels_last).

    python benchmarks/bench_precision.py --size 768 --device cpu
    python benchmarks/bench_precision.py --size 4096 --device cuda
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

import tilex
from tilex.metrics import roc_auc
from tilex.synthetic import MASK_FILE, parse_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="768")
    parser.add_argument("--bands", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile", type=int, default=None)
    args = parser.parse_args()
    size = parse_size(args.size)
    cuda = args.device.startswith("cuda")
    precisions = ["fp32", "tf32", "bf16", "fp16"] if cuda else ["fp32", "bf16"]
    with tempfile.TemporaryDirectory() as tmp:
        manifest = tilex.synth(Path(tmp) / "scan", size=size, bands=args.bands, seed=7)
        mask = tifffile.imread(manifest.parent / MASK_FILE)
        results = {}
        for precision in precisions:
            start = time.perf_counter()
            report = tilex.run(
                manifest,
                None,
                device=args.device,
                precision=precision,
                tile=args.tile,
                stats_sample=1.0,
            )
            results[precision] = (report.sink, time.perf_counter() - start)
    ref = results["fp32"][0]
    print(
        f"## precision vs fp32: synth {size[0]}x{size[1]}, {args.bands} bands, device {args.device}"
    )
    print(
        f"{'precision':>9} {'winner agree':>13} {'max |score diff|':>17} {'AUC':>7} {'seconds':>8}"
    )
    for precision, (sink, seconds) in results.items():
        agree = 100 * np.mean(sink.winner == ref.winner)
        both = sink.winner == ref.winner
        diff = float(np.max(np.abs(sink.score - ref.score)[both])) if both.any() else float("nan")
        print(
            f"{precision:>9} {agree:>12.3f}% {diff:>17.2e} {roc_auc(sink.score, mask):>7.4f} {seconds:>8.1f}"
        )
    print(
        "score difference taken where the winners agree; statistics measured on every pixel per precision"
    )


if __name__ == "__main__":
    main()
