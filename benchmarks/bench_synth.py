"""Throughput and peak memory of ``tilex synth`` at growing sizes.

Each size runs in a fresh Python process that reports its own peak resident
set size (``resource.getrusage``), so the table shows whether memory stays
bounded as the scan grows (it should stay flat: tiles are streamed).

Run: ``.venv/bin/python benchmarks/bench_synth.py [--sizes 4096 8192] [--bands 8]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

_CHILD = r"""
import json, resource, shutil, sys, time
from pathlib import Path
from tilex.synthetic import synth
size, bands, tile, compression, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
start = time.perf_counter()
manifest = synth(out, size=(size, size), bands=bands, tile=tile, compression=compression)
seconds = time.perf_counter() - start
nbytes = sum(p.stat().st_size for p in out.iterdir())
shutil.rmtree(out)
print(json.dumps({"seconds": seconds, "bytes": nbytes,
                  "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1024, 4096, 8192], help="square sides"
    )
    parser.add_argument("--bands", type=int, default=8, help="number of bands")
    parser.add_argument("--tile", type=int, default=512, help="TIFF tile side")
    parser.add_argument("--compression", default="zstd", help="zstd, zlib or none")
    args = parser.parse_args()

    print(f"## tilex synth: {args.bands} bands, tile {args.tile}, {args.compression}")
    print(
        f"{'size':>12} {'Mpx':>8} {'seconds':>8} {'Mpx/s':>7} {'MB written':>11} {'peak RSS MB':>12}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            out = f"{tmp}/scan{size}"
            run = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _CHILD,
                    str(size),
                    str(args.bands),
                    str(args.tile),
                    args.compression,
                    out,
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            r = json.loads(run.stdout.strip().splitlines()[-1])
            mpx = size * size / 1e6
            print(
                f"{size:>6}x{size:<5} {mpx:8.1f} {r['seconds']:8.2f} {mpx / r['seconds']:7.2f} "
                f"{r['bytes'] / 1e6:11.1f} {r['peak_rss_kib'] / 1024:12.0f}"
            )


if __name__ == "__main__":
    main()
