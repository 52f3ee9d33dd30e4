"""Lazy region reads from a huge tiled BigTIFF band: latency, memory, throughput.

Writes (or reuses) a SIZE x SIZE uint16 BigTIFF tiled TILE x TILE, then prints

- open + one REGION x REGION read: wall time and tracemalloc peak;
- throughput of many random REGION x REGION reads with 1 and N threads
  (Mpx/s of region pixels delivered).

``--content constant`` (default) makes every tile one value, so the file is a
few MB and decoding is cheap; ``--content noise`` cycles a few random 12-bit
tiles so zlib decoding costs what it costs on real data (the file is then
about 1.5 GB for 30000 x 30000, and writing it takes a while).

Run::

    .venv/bin/python benchmarks/bench_read.py --size 30000 --threads 8
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tifffile

from tilex.readers import open_source


def write_band(path: Path, size: int, tile: int, content: str, compression: str) -> None:
    per_row = -(-size // tile)
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 4096, (tile, tile), dtype=np.uint16) for _ in range(7)]

    def tiles():
        for i in range(per_row * per_row):
            if content == "noise":
                yield noise[i % len(noise)]
            else:
                yield np.full((tile, tile), i % 65536, np.uint16)

    tifffile.imwrite(
        path,
        tiles(),
        shape=(size, size),
        dtype="uint16",
        tile=(tile, tile),
        compression=None if compression == "none" else compression,
        bigtiff=True,
    )


def random_regions(
    size: int, region: int, count: int, seed: int = 1
) -> list[tuple[int, int, int, int]]:
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, size - region + 1, (count, 2))
    return [(int(y), int(y) + region, int(x), int(x) + region) for y, x in starts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=30000, help="image side in px")
    parser.add_argument("--tile", type=int, default=512, help="TIFF tile side in px")
    parser.add_argument("--region", type=int, default=512, help="read region side in px")
    parser.add_argument("--reads", type=int, default=400, help="random reads per throughput run")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="N for the threaded run"
    )
    parser.add_argument(
        "--content",
        choices=["constant", "noise"],
        default="constant",
        help="tile content (see module docstring)",
    )
    parser.add_argument(
        "--compression", choices=["zlib", "zstd", "none"], default="zlib", help="TIFF compression"
    )
    parser.add_argument(
        "--path",
        type=Path,
        default=None,
        help="BigTIFF to use or create (default: a temporary file)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.path or Path(tmp) / "band.tif"
        if not path.exists():
            start = time.perf_counter()
            write_band(path, args.size, args.tile, args.content, args.compression)
            print(
                f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) in "
                f"{time.perf_counter() - start:.1f} s"
            )
        rows = []

        tracemalloc.start()
        start = time.perf_counter()
        source = open_source(path)
        opened = time.perf_counter()
        y0 = x0 = (source.shape[0] // 2) - 100  # straddles tile borders
        source.read(y0, y0 + args.region, x0, x0 + args.region)
        done = time.perf_counter()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append(("open", f"{(opened - start) * 1e3:.1f} ms", "", ""))
        rows.append(
            (
                f"open + {args.region}x{args.region} read",
                f"{(done - start) * 1e3:.1f} ms",
                f"{peak / 2**20:.1f} MiB peak",
                "",
            )
        )

        regions = random_regions(source.shape[0], args.region, args.reads)
        source.read(*regions[0])  # warm the decoder
        for threads in sorted({1, args.threads}):
            start = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                for _ in pool.map(lambda r: source.read(*r), regions):
                    pass
            elapsed = time.perf_counter() - start
            mpx = args.reads * args.region**2 / 1e6
            rows.append(
                (
                    f"{args.reads} random reads, {threads} thread(s)",
                    f"{elapsed:.2f} s",
                    f"{mpx / elapsed:.0f} Mpx/s",
                    f"{elapsed / args.reads * 1e3:.2f} ms/read",
                )
            )
        source.close()

    print(
        f"\n{args.size}x{args.size} uint16 BigTIFF, tiles {args.tile}, {args.compression}, "
        f"{args.content} content"
    )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
