"""Encoder throughput and the shipped weights' hidden-figure AUC.

Prints two tables (no asserts):

1. encoder throughput on one square tile holding the visible image and N
   bands: Mpx/s of scan positions (h * w per second; each position is 1 + N
   planes) and of planes (h * w * (1 + N) per second), for BN folded vs not,
   contiguous vs channels-last, on CPU fp32 (and CUDA precisions when a GPU
   is present);
   With ``--compile-cpu fp32:cl,bf16:cl`` it also times ``torch.compile``
   (inductor) on the CPU, each next to its eager twin: throughput, the
   compile time (the first call, in ``warm s``) and whether the compiled
   features are bit-identical to eager's on the timed tile (``vs eager``).
   ``--default-work`` times what a default (calibrated) run encodes: each
   band and its prediction, 2N planes through the band path;
2. ROC AUC of the fused score against the generator's hidden mask, the
   trained default and the designed weights vs the pixel baseline
   ``|gray - band|``, uncalibrated (ArtExtract's fusion), on ``tilex synth`` scans
   (band normalisation by the 1st/99th percentiles, threshold 0.5), plus the
   AUC of the un-thresholded largest normalised dissimilarity.

Run: ``.venv/bin/python benchmarks/bench_encoder.py [--tile 1024] [--bands 8]``, or for
compiled CPU rows as the engine runs them (a 512 px tile + 6 px halo)::

    .venv/bin/python benchmarks/bench_encoder.py --tile 524 --default-work --skip-auc \
        --tune-allocator --compile-cpu fp32:cl,bf16:cl

Compare compiled and eager CPU rows with ``--tune-allocator`` (what ``tilex
run`` does): without it eager pays page faults on its intermediate buffers
that a compiled graph, with fewer of them, avoids (compiled fp32 was 1.20x
eager without it and 1.00x with it, on the 2-core VM: docs/gigapixel.md).
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


def _run(enc, vis, bnd, default_work: bool):
    """One encode of the tile: ``(g, b)``, or the calibrated comparison's ``b`` of 2N planes."""
    if default_work:
        return (enc.encode_bands(torch.cat([bnd, bnd.flip(-1)])),)
    return enc.encode(vis, bnd)


def _vs_eager(cfg: dict, got: tuple, vis, bnd, default_work: bool) -> str:
    """``identical`` when the compiled encoder's features equal its eager twin's, bit for bit."""
    eager = build_encoder(**cfg)
    want = _run(eager, vis, bnd, default_work)
    diff = max(float((a - b).abs().max()) for a, b in zip(got, want, strict=True))
    same = all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    return "identical" if same else f"max |d| {diff:.1e}"


def throughput(
    tile: int,
    bands: int,
    repeats: int,
    configs: list[dict],
    deadline: float | None = None,
    default_work: bool = False,
) -> list[dict]:
    """Time each configuration; returns the rows (also printed).

    A configuration is ``build_encoder`` keywords plus optional ``compile_mode``
    (``torch.compile`` of both paths with that mode, outside ``build_encoder``)
    and ``band_batch`` (bands per forward pass; None: the encoder's automatic
    chunking). CUDA timings: warm-up on the full tile (cuDNN autotuning,
    compilation), then the median of ``repeats`` synchronised runs.
    """
    work = (
        f"{2 * bands} planes (each band and its prediction)"
        if default_work
        else (f"visible + {bands} bands")
    )
    planes = 2 * bands if default_work else bands + 1
    print(
        f"\n## encoder throughput: one {tile}x{tile} tile, {work}, "
        f"{torch.get_num_threads()} torch threads"
    )
    print(
        f"{'device':<6} {'precision':<9} {'BN':<8} {'memory':<13} {'batch':>5} {'compile':<26} "
        f"{'s/tile':>8} {'Mpx/s scan':>11} {'Mpx/s planes':>13} {'warm s':>7} {'vs eager':<16}"
    )
    rows = []
    start_all = time.perf_counter()
    for cfg in configs:
        cfg = dict(cfg)
        mode = cfg.pop("compile_mode", None)
        batch = cfg.pop("band_batch", None)
        if deadline is not None and time.perf_counter() - start_all > deadline:
            print(f"skipped (past --deadline): {cfg} compile={mode} batch={batch}")
            continue
        try:
            enc = build_encoder(**cfg)
            if batch is not None:
                enc.band_batch = batch
            if mode is not None:
                enc.visible_path = torch.compile(enc.visible_path, mode=mode)
                enc.band_path = torch.compile(enc.band_path, mode=mode)
            cuda = enc.device.type == "cuda"
            gen = torch.Generator().manual_seed(0)
            vis = torch.rand(3, tile, tile, generator=gen).to(enc.device)
            bnd = torch.rand(bands, tile, tile, generator=gen).to(enc.device)
            t0 = time.perf_counter()
            if cuda or mode is not None:  # the full tile: cuDNN autotunes, compile sees the shape
                for _ in range(2 if cuda else 1):
                    _run(enc, vis, bnd, default_work)
                if cuda:
                    torch.cuda.synchronize()
            else:
                enc.encode(vis[:, :64, :64].contiguous(), bnd[:, :64, :64].contiguous())
            warm = time.perf_counter() - t0
            times = []
            for _ in range(repeats):
                if cuda:
                    torch.cuda.synchronize()
                t1 = time.perf_counter()
                out = _run(enc, vis, bnd, default_work)
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t1)
            same = _vs_eager(cfg, out, vis, bnd, default_work) if mode is not None else "-"
        except Exception as err:  # a variant this device or torch cannot run: report, go on
            print(f"failed: {cfg} compile={mode}: {type(err).__name__}: {str(err)[:200]}")
            continue
        best = float(np.median(times)) if cuda else min(times)
        px = tile * tile
        row = dict(
            device=enc.device.type,
            precision=enc.precision,
            fold=cfg.get("fold", True),
            channels_last=enc.channels_last,
            band_batch=batch or "auto",
            compile=mode or "eager",
            s_per_tile=best,
            mpx_s=px / best / 1e6,
            mpx_s_planes=px * planes / best / 1e6,
            warm_s=warm,
            vs_eager=same,
        )
        rows.append(row)
        print(
            f"{row['device']:<6} {row['precision']:<9} "
            f"{'folded' if row['fold'] else 'unfolded':<8} "
            f"{'channels_last' if row['channels_last'] else 'contiguous':<13} "
            f"{str(row['band_batch']):>5} {row['compile']:<26} {best:8.4f} "
            f"{row['mpx_s']:11.2f} {row['mpx_s_planes']:13.2f} {warm:7.1f} {same:<16}",
            flush=True,
        )
        del enc
        if cuda:
            torch.cuda.empty_cache()
    return rows


def aucs(cases: list[tuple[int, int]], bands: int) -> None:
    print(
        f"\n## hidden-figure ROC AUC on tilex synth scans ({bands} bands; q = 1/99 %, threshold 0.5)"
    )
    print(
        f"{'size':>10} {'seed':>5} {'mask %':>7} {'trained':>8} {'designed':>9} {'pixels':>8} "
        f"{'trained max-n':>14} {'designed max-n':>15} {'pixels max-n':>13}"
    )
    encoders = [build_encoder("trained"), build_encoder("designed")]
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    for size, seed in cases:
        scan = render((size, size), bands=bands, seed=seed)
        visible = scan.visible.transpose(2, 0, 1).astype(np.float32) / 255.0
        planes = scan.bands.astype(np.float32) / 65535.0
        pairs = []
        for enc in encoders:
            g, b = enc.encode(torch.from_numpy(visible), torch.from_numpy(planes))
            pairs.append((g.numpy(), b.numpy()))
        pairs.append((np.tensordot(weights, visible, axes=1)[None], planes[:, None]))
        row = [roc_auc(score_map(gg, bb, q=(1, 99), threshold=0.5), scan.mask) for gg, bb in pairs]
        row += [roc_auc(_max_normalised(gg, bb), scan.mask) for gg, bb in pairs]
        print(
            f"{size:>5}x{size:<4} {seed:>5} {100 * scan.mask.mean():7.1f} "
            f"{row[0]:8.4f} {row[1]:9.4f} {row[2]:8.4f} {row[3]:14.4f} {row[4]:15.4f} {row[5]:13.4f}"
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
    parser.add_argument("--no-cpu", action="store_true", help="no CPU rows (a GPU-only table)")
    parser.add_argument(
        "--compile",
        default="",
        help="comma list of PRECISION[:channels_last] to also time compiled on CUDA, "
        "e.g. fp16:cl,bf16:cl (each compiles for about 25 s)",
    )
    parser.add_argument(
        "--compile-mode", default="max-autotune-no-cudagraphs", help="torch.compile mode on CUDA"
    )
    parser.add_argument(
        "--compile-cpu",
        default="",
        help="comma list of PRECISION[:cl] to time with torch.compile on the CPU next to eager, "
        "e.g. fp32:cl,bf16:cl (inductor; compiles on the first call, mode --compile-mode-cpu); "
        "add --tune-allocator to compare them as tilex run runs",
    )
    parser.add_argument(
        "--compile-mode-cpu", default="default", help="torch.compile mode on the CPU"
    )
    parser.add_argument(
        "--default-work",
        action="store_true",
        help="time the default run's comparison: 2N planes through the band path",
    )
    parser.add_argument(
        "--deadline", type=float, default=None, help="seconds after which variants are skipped"
    )
    parser.add_argument("--json", default=None, help="also write the throughput rows here")
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

    configs: list[dict] = []
    if not args.no_cpu:
        configs += [
            {"device": "cpu", "precision": "fp32"},
            {"device": "cpu", "precision": "fp32", "channels_last": True},
            {"device": "cpu", "precision": "fp32", "fold": False},
        ]
    for item in filter(None, (c.strip() for c in args.compile_cpu.split(","))):
        precision, _, memory = item.partition(":")
        cfg = {
            "device": "cpu",
            "precision": precision,
            "channels_last": memory in ("cl", "channels_last"),
        }
        if cfg not in configs:
            configs.append(dict(cfg))  # its eager twin
        configs.append({**cfg, "compile_mode": args.compile_mode_cpu})
    if torch.cuda.is_available():
        configs += [
            {"device": "cuda", "precision": p, "channels_last": cl}
            for p in ("fp32", "tf32", "bf16", "fp16")
            for cl in (False, True)
        ]
        configs.append({"device": "cuda", "precision": "fp32", "fold": False})
        # every band in one forward pass (the encoder chunks by a 2 GiB activation budget)
        configs += [
            {"device": "cuda", "precision": p, "channels_last": True, "band_batch": args.bands}
            for p in ("bf16", "fp16")
        ]
        for item in filter(None, (c.strip() for c in args.compile.split(","))):
            precision, _, memory = item.partition(":")
            configs.append(
                {
                    "device": "cuda",
                    "precision": precision,
                    "channels_last": memory in ("cl", "channels_last"),
                    "band_batch": args.bands,
                    "compile_mode": args.compile_mode,
                }
            )
    rows = throughput(
        args.tile, args.bands, args.repeats, configs, args.deadline, args.default_work
    )
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump({"tile": args.tile, "bands": args.bands, "rows": rows}, f, indent=2)
    if not args.skip_auc:
        aucs([(256, 0), (256, 1), (512, 2), (1024, 3)], args.bands)


if __name__ == "__main__":
    main()
