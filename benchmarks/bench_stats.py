"""Error of the sampled statistics pass (``--stats-sample F``) against the full pass.

The scan is encoded once as a whole (the tiled engine gives the same features,
see ``tests/test_engine.py``); the statistics of each sampled fraction are then
taken from exactly the blocks that ``tilex.stats.sample_regions`` picks, as the
engine's statistics pass does. For each fraction it prints the relative error
of ``lo``/``hi`` against every pixel, the share of pixels whose winner changes,
the ROC AUC of the score against the hidden mask, and the cost of the pass as a
fraction of the main pass (``F`` times the halo overhead of the blocks).

    python benchmarks/bench_stats.py --size 2048 --bands 8
    python benchmarks/bench_stats.py --size 8192 --features pixels   # large scan, fast

``--features pixels`` replaces the encoder by the plain pixels (grey visible,
raw bands; no halo) so the sampling error can be seen on scans too large to
encode on a CPU; the sampling question is the same: how well a spread sample
of squares represents the whole painting.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from tilex import kernels
from tilex.colour import luminance
from tilex.encoder import build_encoder
from tilex.metrics import roc_auc
from tilex.scan import open_scan
from tilex.stats import StatsSpec, sample_regions
from tilex.synthetic import MASK_FILE, parse_size, synth


def histogram(g, b, regions):
    merged = None
    for y0, y1, x0, x1 in regions:
        h = kernels.dissimilarity_histogram(g[:, y0:y1, x0:x1], b[:, :, y0:y1, x0:x1])
        merged = h if merged is None else kernels.merge_histograms(merged, h)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2048", help="scan size HxW or N (default 2048)")
    parser.add_argument("--bands", type=int, default=8)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--clip", default="1,99")
    parser.add_argument("--fractions", default="0.01,0.02,0.05,0.1,0.25,0.5")
    parser.add_argument("--block", type=int, default=StatsSpec().block)
    parser.add_argument("--features", choices=["encoder", "pixels"], default="encoder")
    args = parser.parse_args()
    size = parse_size(args.size)
    q_lo, q_hi = (float(v) for v in args.clip.split(","))

    with tempfile.TemporaryDirectory() as tmp:
        manifest = synth(Path(tmp) / "scan", size=size, bands=args.bands, seed=args.seed)
        mask = tifffile.imread(manifest.parent / MASK_FILE)
        scan = open_scan(manifest)
        visible, bands = scan.read_region(0, size[0], 0, size[1])
    t0 = time.perf_counter()
    if args.features == "encoder":
        encoder = build_encoder(device="cpu", channels_last=True)
        g, b = encoder.encode(torch.from_numpy(visible), torch.from_numpy(bands))
        g, b, halo = g.numpy(), b.numpy(), encoder.radius
    else:
        g, b, halo = luminance(visible)[None], bands[:, None], 6
    encode_s = time.perf_counter() - t0

    every = [(0, size[0], 0, size[1])]
    full = histogram(g, b, every)
    lo_f = kernels.histogram_percentiles(full, q_lo)
    hi_f = kernels.histogram_percentiles(full, q_hi)
    ref = kernels.fuse(g, b, lo_f.astype(np.float32), hi_f.astype(np.float32))
    overhead = ((args.block + 2 * halo) / args.block) ** 2

    print(
        f"## --stats-sample error: synth {size[0]}x{size[1]}, {args.bands} bands, clip {args.clip}, "
        f"blocks {args.block} px; features: {args.features} "
        f"({size[0] * size[1] / 1e6 / encode_s:.2f} Mpx/s on CPU)"
    )
    print(
        f"{'F':>6} {'blocks':>7} {'max rel err lo':>15} {'max rel err hi':>15} "
        f"{'winner changed':>15} {'AUC':>7} {'pass cost':>10}"
    )
    print(
        f"{'1':>6} {'all':>7} {0:>15.4f} {0:>15.4f} {0:>14.4f}% {roc_auc(ref.score, mask):>7.4f} "
        f"{overhead:>9.2f}x"
    )
    for f in (float(v) for v in args.fractions.split(",")):
        regions = sample_regions(size, f, args.block)
        part = histogram(g, b, regions)
        lo = kernels.histogram_percentiles(part, q_lo)
        hi = kernels.histogram_percentiles(part, q_hi)
        fused = kernels.fuse(g, b, lo.astype(np.float32), hi.astype(np.float32))
        err_lo = np.max(np.abs(lo - lo_f) / np.maximum(np.abs(hi_f - lo_f), 1e-12))
        err_hi = np.max(np.abs(hi - hi_f) / np.maximum(np.abs(hi_f - lo_f), 1e-12))
        changed = 100 * np.mean(fused.winner != ref.winner)
        print(
            f"{f:>6g} {len(regions):>7} {err_lo:>15.4f} {err_hi:>15.4f} {changed:>14.4f}% "
            f"{roc_auc(fused.score, mask):>7.4f} {f * overhead:>9.3f}x"
        )
    print(
        "errors are relative to the full range hi - lo; 'pass cost' = encoder work of the "
        "statistics pass / encoder work of the main pass"
    )


if __name__ == "__main__":
    main()
