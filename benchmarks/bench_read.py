"""Lazy region reads from a huge tiled BigTIFF band: latency, memory, throughput.

Writes (or reuses) a SIZE x SIZE uint16 BigTIFF tiled TILE x TILE, then prints

- open + one REGION x REGION read: wall time and tracemalloc peak;
- throughput of many random REGION x REGION reads with 1 and N threads
  (Mpx/s of region pixels delivered).

``--content constant`` (default) makes every tile one value, so the file is a
few MB and decoding is cheap; ``--content noise`` cycles a few random 12-bit
tiles so zlib decoding costs what it costs on real data (the file is then
about 1.5 GB for 30000 x 30000, and writing it takes a while).

``--formats`` instead asks what reading costs next to the encoder for scans
as scanners and slide software write them. A synthetic scan of ``--scan-size``
(default 2048x2048, 8 bands) is written as: tilex synth's own files (zstd,
512 px tiles), libvips pyramids (``vips tiffsave --pyramid``: the visible
image JPEG at libvips' default quality 75, the 16-bit bands LZW; 256 px tiles
with the levels as pages, or 512 px with the levels in SubIFDs), a QuPath-like
OME-TIFF (JPEG YCbCr visible, LZW bands, 512 px, SubIFDs) and one sharded
OME-Zarr 0.5 (uint16, 512 px chunks in 2048 px shards, zstd). For each it
reads, on one thread, every tile the engine reads (512 px cores + the 6 px
halo) and the statistics' default sample (5 % in 64 px squares + halo), and
prints CPU seconds per Mpx (``time.process_time``, every thread of the
process: zarr decodes on its own threads; CPU time is robust on a shared
machine) next to the default encoder's (each band and its prediction: 2N
band-path planes, as ``tilex run`` builds it, allocator tuned as the command
does) and the reader's share.

Run::

    .venv/bin/python benchmarks/bench_read.py --size 30000 --threads 8
    .venv/bin/python benchmarks/bench_read.py --formats --scan-size 2048
"""

from __future__ import annotations

import argparse
import math
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


# --------------------------------------------------------------------------- --formats


def _vips(src: Path, dst: Path, *options: str) -> Path:
    import subprocess

    command = ["vips", "tiffsave", str(src), str(dst), "--pyramid", "--tile", "--bigtiff"]
    subprocess.run([*command, *options], check=True, capture_output=True)
    return dst


def _pyramid_tiff(path: Path, data: np.ndarray, tile: int, compression: str, **options) -> Path:
    """A pyramid as QuPath writes it: OME-TIFF, the levels in SubIFDs of page 0."""
    rgb = data.ndim == 3
    opts = {
        "tile": (tile, tile),
        "compression": compression,
        "photometric": options.get("photometric") or ("rgb" if rgb else "minisblack"),
    }
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(data, subifds=3, metadata={"axes": "YXS" if rgb else "YX"}, **opts)
        for _ in range(3):
            data = data[::2, ::2]
            tif.write(data, subfiletype=1, metadata=None, **opts)
    return path


def _sharded_ome_zarr(path: Path, data: np.ndarray, names: list[str]) -> Path:
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    array = group.create_array(
        "0",
        shape=data.shape,
        dtype=data.dtype,
        chunks=(1, 512, 512),
        shards=(1, 2048, 2048),
        compressors=zarr.codecs.ZstdCodec(level=3),
        dimension_names=["c", "y", "x"],
    )
    array[...] = data
    axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"}]
    axes.append({"name": "x", "type": "space"})
    scale = [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]}
        ],
        "omero": {"channels": [{"label": n} for n in ["R", "G", "B", *names]]},
    }
    return path


def write_formats(root: Path, size: int, bands: int) -> dict[str, Path]:
    """The same synthetic scan as each input kind; ``{label: scan path}``."""
    import json
    import shutil

    from tilex.synthetic import band_names, synth

    names = band_names(bands)
    base = synth(root / "synth", size=(size, size), bands=bands)  # zstd, 512 px tiles
    scans = {"tilex synth: zstd, 512 px tiles, no pyramid": base}
    src = base.parent

    def manifest(folder: Path, visible: str, files: list[str]) -> Path:
        record = json.loads(base.read_text())
        record["visible"] = visible
        for band, name in zip(record["bands"], files, strict=True):
            band["file"] = name
        (folder / "scan.json").write_text(json.dumps(record))
        return folder / "scan.json"

    if shutil.which("vips"):
        for tile, layout in ((256, "pages"), (512, "subifds")):
            folder = root / f"vips-{tile}-{layout}"
            folder.mkdir()
            extra = ["--tile-width", str(tile), "--tile-height", str(tile)]
            extra += ["--subifd"] if layout == "subifds" else []
            _vips(src / "visible.tif", folder / "visible.tif", "--compression", "jpeg", *extra)
            for n in names:
                _vips(src / f"{n}.tif", folder / f"{n}.tif", "--compression", "lzw", *extra)
            label = f"libvips: JPEG Q75 visible, LZW bands, {tile} px tiles, levels as {layout}"
            scans[label] = manifest(folder, "visible.tif", [f"{n}.tif" for n in names])
    else:
        print("libvips' vips command is not installed: its rows are skipped")
    folder = root / "qupath"
    folder.mkdir()
    visible = tifffile.imread(src / "visible.tif")
    _pyramid_tiff(folder / "visible.ome.tif", visible, 512, "jpeg", photometric="ycbcr")
    planes = []
    for n in names:
        planes.append(tifffile.imread(src / f"{n}.tif"))
        _pyramid_tiff(folder / f"{n}.ome.tif", planes[-1], 512, "lzw")
    label = "QuPath-like OME-TIFF: JPEG YCbCr visible, LZW bands, 512 px, SubIFDs"
    scans[label] = manifest(folder, "visible.ome.tif", [f"{n}.ome.tif" for n in names])
    data = np.concatenate([np.moveaxis(visible, -1, 0).astype(np.uint16) * 257, np.stack(planes)])
    scans["OME-Zarr 0.5, one uint16 array: 512 px chunks in 2048 px shards, zstd"] = (
        _sharded_ome_zarr(root / "scan.ome.zarr", data, names)
    )
    return scans


def encoder_cpu_s_per_mpx(bands: int, tile: int = 512, halo: int = 6) -> float:
    """CPU seconds per core Mpx of the default run's comparison: 2N planes through the band path."""
    import torch

    from tilex.encoder import build_encoder

    encoder = build_encoder(device="cpu", channels_last=True)  # as tilex.run builds it
    planes = torch.rand(2 * bands, tile + 2 * halo, tile + 2 * halo)
    encoder.encode_bands(planes)  # warm-up
    best = math.inf
    for _ in range(2):
        start = time.process_time()
        encoder.encode_bands(planes)
        best = min(best, time.process_time() - start)
    return best / (tile * tile / 1e6)


def formats_main(args: argparse.Namespace) -> None:
    from tilex.device import tune_host_allocator
    from tilex.engine.statistics import _nearby_first
    from tilex.grid import TileGrid, region_with_halo
    from tilex.scan import open_scan
    from tilex.stats import AUTO_FRACTION, sample_regions

    tune_host_allocator()  # as the tilex command does
    size, halo = args.scan_size, 6
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        scans = write_formats(Path(tmp), size, args.bands)
        print(f"wrote {len(scans)} scans of {size}x{size} in {time.perf_counter() - start:.0f} s")
        encode = encoder_cpu_s_per_mpx(args.bands)
        squares = [  # in the order the statistics pass reads them
            region_with_halo(r, halo, (size, size))
            for r in sorted(sample_regions((size, size), AUTO_FRACTION), key=_nearby_first)
        ]
        sampled = sum((r[1] - r[0]) * (r[3] - r[2]) for r in sample_regions((size, size), 0.05))
        rows = []
        for label, path in scans.items():
            scan = open_scan(path)
            folder = Path(path).parent if Path(path).suffix == ".json" else Path(path)
            disk = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            tiles = [t.read for t in TileGrid((size, size), 512, halo).tiles()]
            scan.read_region(*tiles[0])  # warm the decoders
            t0 = time.process_time()
            for region in tiles:
                scan.read_region(*region)
            main_s = (time.process_time() - t0) / (size * size / 1e6)
            scan.close()
            scan = open_scan(path)  # the sample on its own: no segment the main pass decoded
            scan.read_region(*squares[-1])  # warm the decoders (one square, last in order)
            t0 = time.process_time()
            for region in squares:
                scan.read_region(*region)
            sample_s = (time.process_time() - t0) / (sampled / 1e6)
            rows.append(
                (
                    label,
                    f"{disk / 1e6:.0f}",
                    f"{main_s:.3f}",
                    f"{100 * main_s / (main_s + encode):.1f} %",
                    f"{sample_s:.3f}",
                    f"{sample_s / main_s:.1f}x",
                    f"{100 * sample_s / (sample_s + encode):.1f} %",
                )
            )
            scan.close()
    header = (
        "input",
        "MB",
        "read CPU s/Mpx (main pass)",
        "reader share, main pass",
        "read CPU s/sampled Mpx (statistics)",
        "vs main",
        "reader share, sample",
    )
    print(
        f"\n{size}x{size}, {args.bands} bands, reads from one thread, CPU seconds of the whole "
        f"process; the default encoder (2N planes): "
        f"{encode:.2f} CPU s/Mpx; share = read / (read + encode)"
    )
    rows.insert(0, header)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


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
    parser.add_argument(
        "--formats",
        action="store_true",
        help="instead: read cost of realistic inputs next to the encoder (see module docstring)",
    )
    parser.add_argument("--scan-size", type=int, default=2048, help="--formats: scan side in px")
    parser.add_argument("--bands", type=int, default=8, help="--formats: bands")
    args = parser.parse_args()
    if args.formats:
        formats_main(args)
        return

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
