"""Write throughput and peak memory of the OME-Zarr output stage (no asserts).

Writes a synthetic ``SIZE x SIZE`` result (level 0 + pyramid) with
:class:`tilex.omezarr.OmeZarrSink`, tiles delivered in the engine's order
(units in Morton order), and, for comparison, the collage array alone with
ngff-zarr's ``to_ngff_zarr`` (dask bin-shrink pyramid, same chunks and
shards) when ngff-zarr is installed.  Each case runs in its own process so
its peak RSS (``ru_maxrss``) is its own.

tilex writes more than ngff-zarr does here (collage + score + overlay +
winner labels, ``4 * C + 8`` bytes per pixel, against ``4 * C`` for the
collage alone), so the table gives raw MB/s next to Mpx/s; compare MB/s.

Run::

    .venv/bin/python benchmarks/bench_write.py --size 8192 --channels 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TILE = 1024
UNIT = 4096


def _field(y0: int, y1: int, x0: int, x1: int, channels: int) -> dict[str, np.ndarray]:
    """Deterministic, tile-independent, moderately compressible synthetic fields."""
    yy = np.arange(y0, y1, dtype=np.float32)[:, None]
    xx = np.arange(x0, x1, dtype=np.float32)[None, :]
    base = np.sin(yy / 97.0) * np.cos(xx / 131.0)
    rng = np.random.default_rng(y0 * 1_000_003 + x0)
    noise = rng.normal(0, 0.05, base.shape).astype(np.float32)
    score = np.clip(base + noise, 0, 1).astype(np.float32)
    collage = np.stack([base * (c + 1) + noise for c in range(channels)]).astype(np.float32)
    winner = np.where(score > 0.5, 1 + (score * 7).astype(np.uint8) % 4, 0).astype(np.uint8)
    gray = (base * 0.4 + 0.5).astype(np.float32)
    overlay = np.clip(np.stack([gray, gray, gray + 0.3 * score]) * 255, 0, 255).astype(np.uint8)
    return {"winner": winner, "score": score, "collage": collage, "overlay": overlay}


def _morton(uy: int, ux: int) -> int:
    key = 0
    for bit in range(16):
        key |= ((ux >> bit) & 1) << (2 * bit) | ((uy >> bit) & 1) << (2 * bit + 1)
    return key


def run_tilex(path: Path, size: int, channels: int, version: str) -> dict:
    from tilex.omezarr import OmeZarrSink
    from tilex.sink import RunInfo, TileResult

    info = RunInfo(
        shape=(size, size),
        band_names=("a", "b", "c", "d"),
        wavelengths=(400.0, 700.0, 1000.0, None),
        channels=channels,
    )
    units = sorted(
        ((uy, ux) for uy in range(-(-size // UNIT)) for ux in range(-(-size // UNIT))),
        key=lambda u: _morton(*u),
    )
    regions = [
        (y0, min(y0 + TILE, size), x0, min(x0 + TILE, size))
        for uy, ux in units
        for y0 in range(uy * UNIT, min(size, (uy + 1) * UNIT), TILE)
        for x0 in range(ux * UNIT, min(size, (ux + 1) * UNIT), TILE)
    ]
    sink = OmeZarrSink(path, version=version, overwrite=True, unit=UNIT, chunk=512)
    t0 = time.perf_counter()
    sink.open(info)
    gen_time = 0.0  # the benchmark times the sink, not the synthetic generator
    for region in regions:
        g0 = time.perf_counter()
        f = _field(*region, channels)
        gen_time += time.perf_counter() - g0
        sink.write(TileResult(region, f["winner"], f["score"], f["collage"], f["overlay"]))
    sink.close()
    total = time.perf_counter() - t0 - gen_time
    return {"seconds": total, "bytes_per_px": 4 * channels + 4 + 3 + 1}


def run_ngff(path: Path, size: int, channels: int, version: str) -> dict:
    import dask.array as da
    import ngff_zarr as nz

    def block(block_info=None):
        (c0, c1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
        return _field(y0, y1, x0, x1, channels)["collage"][c0:c1]

    data = da.map_blocks(
        block,
        dtype=np.float32,
        chunks=((channels,), (TILE,) * (size // TILE), (TILE,) * (size // TILE)),
    )
    levels = []
    factor = 2
    while size // factor >= 512:
        levels.append(factor)
        factor *= 2
    t0 = time.perf_counter()
    image = nz.to_ngff_image(data, dims=["c", "y", "x"], name="collage")
    ms = nz.to_multiscales(
        image,
        scale_factors=levels,
        method=nz.Methods.DASK_BIN_SHRINK,
        chunks={"c": 1, "y": 512, "x": 512},
    )
    kwargs = (
        {"chunks_per_shard": {"c": 1, "y": UNIT // 512, "x": UNIT // 512}}
        if version == "0.5"
        else {}
    )
    nz.to_ngff_zarr(str(path), ms, version=version, **kwargs)
    # ngff-zarr computes the field inside dask: subtract an estimate of its generation time
    gen = 0.0
    n = 4
    for i in range(n):
        g0 = time.perf_counter()
        _field(i * TILE, (i + 1) * TILE, 0, TILE, channels)
        gen += time.perf_counter() - g0
    gen_total = gen / n * (size // TILE) ** 2
    return {"seconds": time.perf_counter() - t0 - gen_total, "bytes_per_px": 4 * channels}


def child(case: str, size: int, channels: int, version: str, tmp: str | None) -> None:
    path = Path(tempfile.mkdtemp(prefix=f"tilex-bench-{case}-", dir=tmp))
    try:
        fn = run_tilex if case == "tilex" else run_ngff
        out = fn(path / "OUT", size, channels, version)
        out["disk_mb"] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
    finally:
        shutil.rmtree(path, ignore_errors=True)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--version", choices=["0.5", "0.4"], default="0.5")
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs per writer; the fastest is shown"
    )
    parser.add_argument("--tmp", default=None, help="folder to write in (default: the system temp)")
    parser.add_argument("--child", choices=["tilex", "ngff-zarr"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.size, args.channels, args.version, args.tmp)
        return
    import psutil

    cpu = platform.processor() or platform.machine()
    print(
        f"machine: {platform.node()} {cpu}, {psutil.cpu_count(logical=True)} logical CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, Python {platform.python_version()}"
    )
    print(
        f"image {args.size}x{args.size}, collage channels {args.channels}, "
        f"OME-Zarr {args.version}, best of {args.repeat}, "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )
    rows = {}
    for case in ("tilex", "ngff-zarr"):
        if case == "ngff-zarr":
            try:
                import ngff_zarr  # noqa: F401
            except ImportError:
                print("ngff-zarr: skipped (not installed)")
                continue
        cmd = [sys.executable, __file__, "--child", case, "--size", str(args.size)]
        cmd += ["--channels", str(args.channels), "--version", args.version]
        if args.tmp:
            cmd += ["--tmp", args.tmp]
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        for _ in range(max(1, args.repeat)):
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if proc.returncode:
                print(f"{case}: failed\n{proc.stderr[-2000:]}")
                break
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            if case not in rows or row["seconds"] < rows[case]["seconds"]:
                rows[case] = row
    mpx = args.size * args.size / 1e6
    print(f"\n{'writer':<34}{'s':>8}{'Mpx/s':>9}{'MB/s raw':>10}{'peak RSS MB':>13}{'disk MB':>9}")
    labels = {
        "tilex": "tilex OmeZarrSink (all images)",
        "ngff-zarr": "ngff-zarr to_ngff_zarr (collage)",
    }
    for case, r in rows.items():
        rate = mpx / r["seconds"]
        raw = rate * r["bytes_per_px"]
        print(
            f"{labels[case]:<34}{r['seconds']:>8.1f}{rate:>9.2f}{raw:>10.1f}"
            f"{r['peak_rss_mb']:>13.0f}{r['disk_mb']:>9.0f}"
        )
    if len(rows) == 2:
        t, n = rows["tilex"], rows["ngff-zarr"]
        print(
            f"ratio tilex / ngff-zarr: {n['seconds'] / t['seconds']:.2f}x Mpx/s, "
            f"{(t['bytes_per_px'] / t['seconds']) / (n['bytes_per_px'] / n['seconds']):.2f}x raw MB/s, "
            f"{t['peak_rss_mb'] / n['peak_rss_mb']:.2f}x peak RSS"
        )


if __name__ == "__main__":
    main()
