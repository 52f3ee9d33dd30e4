"""Encoder throughput and the default weights' hidden-figure AUC.

Prints two tables (no asserts):

1. encoder throughput on one square tile holding the visible image and N
   bands: Mpx/s of scan positions (h * w per second; each position is 1 + N
   planes) and of planes (h * w * (1 + N) per second), for BN folded vs not,
   contiguous vs channels-last, on CPU fp32 (and CUDA precisions when a GPU
   is present);
2. ROC AUC of the fused score against the generator's hidden mask, default
   weights vs the pixel baseline ``|gray - band|``, on ``tilex synth`` scans
   (band normalisation by the 1st/99th percentiles, threshold 0.5), plus the
   AUC of the un-thresholded largest normalised dissimilarity.

Run: ``.venv/bin/python benchmarks/bench_encoder.py [--tile 1024] [--bands 8]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from tilex.kernels.reference import dissimilarity_reference

from tilex.encoder import build_encoder
from tilex.metrics import roc_auc, score_map
from tilex.synthetic import render


def throughput(tile: int, bands: int, repeats: int, configs: list[dict]) -> None:
    print(
        f"\n## encoder throughput: one {tile}x{tile} tile, visible + {bands} bands, "
        f"{torch.get_num_threads()} torch threads"
    )
    print(
        f"{'device':<8} {'precision':<9} {'BN':<9} {'memory':<14} {'s/tile':>8} "
        f"{'Mpx/s scan':>11} {'Mpx/s planes':>13}"
    )
    for cfg in configs:
        enc = build_encoder(**cfg)
        gen = torch.Generator().manual_seed(0)
        vis = torch.rand(3, tile, tile, generator=gen).to(enc.device)
        bnd = torch.rand(bands, tile, tile, generator=gen).to(enc.device)
        enc.encode(vis[:, :64, :64].contiguous(), bnd[:, :64, :64].contiguous())  # warm up
        best = float("inf")
        for _ in range(repeats):
            if enc.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            enc.encode(vis, bnd)
            if enc.device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
        px = tile * tile
        print(
            f"{enc.device.type:<8} {enc.precision:<9} {'folded' if cfg.get('fold', True) else 'unfolded':<9} "
            f"{'channels_last' if enc.channels_last else 'contiguous':<14} {best:8.3f} "
            f"{px / best / 1e6:11.2f} {px * (bands + 1) / best / 1e6:13.2f}"
        )


def aucs(cases: list[tuple[int, int]], bands: int) -> None:
    print(
        f"\n## hidden-figure ROC AUC on tilex synth scans ({bands} bands; q = 1/99 %, threshold 0.5)"
    )
    print(
        f"{'size':>10} {'seed':>5} {'mask %':>7} {'default':>8} {'pixels':>8} "
        f"{'default max-n':>14} {'pixels max-n':>13}"
    )
    enc = build_encoder()
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    for size, seed in cases:
        scan = render((size, size), bands=bands, seed=seed)
        visible = scan.visible.transpose(2, 0, 1).astype(np.float32) / 255.0
        planes = scan.bands.astype(np.float32) / 65535.0
        g, b = enc.encode(torch.from_numpy(visible), torch.from_numpy(planes))
        g, b = g.numpy(), b.numpy()
        gray = np.tensordot(weights, visible, axes=1)[None]
        row = []
        for gg, bb in ((g, b), (gray, planes[:, None])):
            row.append(roc_auc(score_map(gg, bb, q=(1, 99), threshold=0.5), scan.mask))
        for gg, bb in ((g, b), (gray, planes[:, None])):
            row.append(roc_auc(_max_normalised(gg, bb), scan.mask))
        print(
            f"{size:>5}x{size:<4} {seed:>5} {100 * scan.mask.mean():7.1f} "
            f"{row[0]:8.4f} {row[1]:8.4f} {row[2]:14.4f} {row[3]:13.4f}"
        )


def _max_normalised(g: np.ndarray, b: np.ndarray) -> np.ndarray:
    """max_i of (d_i - lo_i) / (hi_i - lo_i), without the clamp and threshold."""
    d = dissimilarity_reference(g, b).reshape(b.shape[0], -1)
    lo, hi = np.percentile(d, 1, axis=1)[:, None], np.percentile(d, 99, axis=1)[:, None]
    return ((d - lo) / (hi - lo + 1e-8)).max(axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=1024, help="side of the timed tile")
    parser.add_argument("--bands", type=int, default=8, help="bands per tile and per synth scan")
    parser.add_argument(
        "--repeats", type=int, default=2, help="timed runs per configuration (best kept)"
    )
    parser.add_argument("--skip-auc", action="store_true", help="only the throughput table")
    parser.add_argument(
        "--tune-allocator",
        action="store_true",
        help="keep freed buffers in the heap first, as tilex.run does on CPU "
        "(compare with a run without it, in a fresh process)",
    )
    args = parser.parse_args()
    if args.tune_allocator:
        from tilex.device import tune_host_allocator

        print(f"host allocator tuned: {tune_host_allocator()}")

    configs = [
        {"device": "cpu", "precision": "fp32"},
        {"device": "cpu", "precision": "fp32", "channels_last": True},
        {"device": "cpu", "precision": "fp32", "fold": False},
    ]
    if torch.cuda.is_available():
        configs += [
            {"device": "cuda", "precision": p, "channels_last": cl}
            for p in ("fp32", "tf32", "bf16", "fp16")
            for cl in (False, True)
        ]
        configs.append({"device": "cuda", "precision": "fp32", "fold": False})
    throughput(args.tile, args.bands, args.repeats, configs)
    if not args.skip_auc:
        aucs([(256, 0), (256, 1), (512, 2), (1024, 3)], args.bands)


if __name__ == "__main__":
    main()
