"""Scale-out benchmark: one process, then 1 and 2 local dask workers, on one synthetic scan.

Synthesises a scan (``tilex.synth``, not timed), then runs the whole job
(``tilex.run``: statistics pass, level-0 units, pyramid, metadata) into an
OME-Zarr folder three ways on this machine, in this run:

1. ``single``: one process (the streaming :class:`tilex.omezarr.OmeZarrSink`);
2. ``dask xN cold``: ``tilex.run(..., workers=N)`` (``tilex run --workers N``):
   tilex starts a LocalCluster of N worker processes and stops it after;
3. ``dask xN warm``: a LocalCluster of N workers already started, that ran a
   small job first (workers have imported torch and built the encoder), used
   through ``scheduler=`` (``tilex run --scheduler ADDRESS``).

Throughput is scan Mpx/s (H*W per second).  ``total`` includes starting the
cluster; ``work`` is statistics + level 0 + pyramid only (for cold runs it
still includes the workers' imports and encoder builds, which happen in the
first tasks).  The outputs are checked to
be identical byte for byte.  Timings are printed, never asserted.

Run::

    .venv/bin/python benchmarks/bench_distributed.py                     # 4096x4096, minutes on CPU
    .venv/bin/python benchmarks/bench_distributed.py --size 2048x2048 --unit 512
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import describe_device, parse_size, print_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="4096x4096", help="scan HxW (default 4096x4096)")
    parser.add_argument("--bands", type=int, default=4, help="bands of the synthetic scan")
    parser.add_argument("--tile", type=int, default=512, help="tile core px")
    parser.add_argument("--unit", type=int, default=1024, help="write unit / shard px")
    parser.add_argument("--chunk", type=int, default=256, help="chunk px")
    parser.add_argument("--workers", default="1,2", help="local worker counts to try")
    parser.add_argument(
        "--no-warm", action="store_true", help="skip the runs on an already started cluster"
    )
    args = parser.parse_args()

    import tilex
    from tilex.omezarr import open_output

    h, w = parse_size(args.size)
    mpx = h * w / 1e6
    root = Path(tempfile.mkdtemp(prefix="tilex-bench-dist-"))
    print(f"device: {describe_device('cpu')}; cores available: {len(os.sched_getaffinity(0))}")
    print(
        f"scan {h}x{w} ({mpx:.1f} Mpx), {args.bands} bands, tile {args.tile}, unit {args.unit}, "
        f"chunk {args.chunk}; outputs in {root}"
    )
    scan = tilex.synth(root / "scan", size=(h, w), bands=args.bands, seed=1)
    layout = {"tile": args.tile, "unit": args.unit, "chunk": args.chunk}

    rows, outs = [], {}

    def timed(name: str, **options: object) -> None:
        out = root / name.replace(" ", "_").replace(",", "")
        start = time.perf_counter()
        report = tilex.run(scan, out, device="cpu", **layout, **options)  # type: ignore[arg-type]
        total = time.perf_counter() - start
        t = report.timings
        phases = [t.get("stats_s", 0.0), t.get("tiles_s", 0.0), t.get("pyramid_s", 0.0)]
        work = sum(phases)
        rows.append(
            [
                name,
                f"{total:.1f}",
                f"{mpx / total:.3f}",
                f"{work:.1f}",
                f"{mpx / work:.3f}" if work else "-",
                *(f"{p:.1f}" for p in phases),
            ]
        )
        outs[name] = out
        print(f"  {name}: {total:.1f} s", flush=True)

    timed("single")
    counts = [int(n) for n in args.workers.split(",")]
    for n in counts:  # tilex starts and stops the cluster: what `tilex run --workers N` costs
        timed(f"dask x{n} cold", workers=n)
    if not args.no_warm:
        from distributed import Client, LocalCluster

        warmup = tilex.synth(root / "warmup", size=(256, 256), bands=args.bands, seed=2)
        for n in counts:  # a running cluster whose workers already built the encoder
            with (
                LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
                ) as cluster,
                Client(cluster) as client,
            ):
                client.run(_set_torch_threads, max(1, len(os.sched_getaffinity(0)) // n))
                tilex.run(
                    warmup,
                    root / f"warmup-{n}",
                    device="cpu",
                    scheduler=cluster.scheduler_address,
                    **{**layout, "unit": 256, "chunk": 128, "tile": 256},
                )
                timed(f"dask x{n} warm", scheduler=cluster.scheduler_address)

    print_table(
        [
            "run",
            "total s",
            "total Mpx/s",
            "work s",
            "work Mpx/s",
            "stats s",
            "level0 s",
            "pyramid s",
        ],
        rows,
    )
    ref = open_output(outs["single"])
    for name, out in outs.items():
        other = open_output(out)
        same = all(
            np.array_equal(a[...], b[...])
            for img in ref.images
            for a, b in zip(ref[img].levels, other[img].levels, strict=True)
        )
        print(f"{name}: {'identical to' if same else 'DIFFERS from'} single")
    print(
        "(single: 'work' is statistics + fusing with the streamed pyramid (level0 column); dask: "
        "statistics + level-0 units + pyramid stage. cold: tilex starts the cluster, whose workers "
        "import torch and build the encoder inside the timed stages; warm: an already started "
        "cluster that ran a small job first)"
    )


def _set_torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


if __name__ == "__main__":
    main()
