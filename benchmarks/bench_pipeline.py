"""The engine's benchmark: encoder ceiling, each stage alone, end to end, and peers.

One entry point for the issues "out-of-core engine" and "GPU batch
throughput". It synthesises a scan (``tilex.synth``: compressed tiled TIFFs
on disk; synthesis is not timed), then measures on the same machine in the
same run, in scan Mpx/s (scan pixels H*W per second):

1. encoder-only ceiling: the encoder on exactly the engine's tiles
   (``TileGrid(shape, tile, encoder.radius)``), inputs read beforehand and
   already on the device, synchronised timing, per precision and memory
   format (CPU: fp32 contiguous and channels_last; GPU: fp32/tf32/bf16/fp16
   x contiguous/channels_last, plus torch.compile with ``--compile``). The
   *reference* is the variant the engine runs (``--precision``, contiguous):
   every "vs encoder" ratio is against it;
2. each stage alone: read (``Scan.read_region`` over all tiles on the reader
   thread pool), fuse (``tilex.kernels.fuse`` + ``overlay`` + download on the
   reference's features), write (``OmeZarrSink`` fed the results in the
   engine's unit order), statistics (``tilex.engine.measure_statistics``, default
   sample); the slowest stage is named;
3. end to end: ``tilex.job.run`` into OME-Zarr on disk, ``--norm band`` (with
   the statistics pass) and ``--norm pixel`` (without), both ``--calibrate
   none`` like the ceiling; EFFICIENCY = e2e / encoder-only (goal >= 0.85 on
   CPU, >= 0.9 on GPU); and the default run (calibrated: 2N band planes and
   the fit), labelled as such;
4. peers on the same encoder, scan and precision: MONAI
   ``sliding_window_inference`` (overlap 0.25, roi = tile, the image held in
   memory as one tensor; on CPU a top-left crop, labelled) and a plain dask
   ``map_overlap`` (depth = halo, ``boundary="none"``, chunks = tile) of the
   encoder + pixel-mode fusion stored with ``.to_zarr``; each skipped with a
   message when its package is absent;
5. one final table: Mpx/s, ratio vs encoder-only, peak host RSS of this
   process during the row (MB), peak GPU memory (MB; torch allocator peak +
   CuPy pool), device.

Run::

    .venv/bin/python benchmarks/bench_pipeline.py                      # CPU defaults, a few minutes
    .venv/bin/python benchmarks/bench_pipeline.py --device cuda --compile
    .venv/bin/python benchmarks/bench_pipeline.py --only encoder,e2e --size 2048x2048

Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    Measure,
    Row,
    RssSampler,
    describe_device,
    fmt,
    parse_size,
    print_table,
    section,
    synth_scan,
)

SECTIONS = ("encoder", "stages", "e2e", "profile", "peers")
GOAL = {"cpu": 0.85, "cuda": 0.9}
DEFAULTS = {  # sized so the whole suite takes a few minutes on each kind of machine
    "cpu": {"size": "1536x1536", "monai_crop": 1024},
    "cuda": {"size": "8192x8192", "monai_crop": 0},
}


# --------------------------------------------------------------------------
# set-up


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--size", default=None, help="scan HxW (default 1536x1536 on CPU, 8192x8192 on GPU)"
    )
    p.add_argument("--bands", type=int, default=8, help="number of bands (default 8)")
    p.add_argument(
        "--tile",
        type=int,
        default=None,
        help="tile core in px (default: the engine's, 512 CPU / 2048 GPU)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:<i> (default auto)")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "tf32", "bf16", "fp16"],
        help="precision of the engine, the reference encoder and the peers (default fp32)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile'd encoder variants (slow to compile)",
    )
    p.add_argument(
        "--monai-crop",
        type=int,
        default=None,
        help="side of the top-left crop MONAI runs on; 0 = whole scan (default 1024 CPU, 0 GPU)",
    )
    p.add_argument(
        "--out-dir",
        default=None,
        help="folder for the scan and outputs (default: a temporary folder)",
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the scan and outputs (a kept scan is reused)"
    )
    p.add_argument("--skip-peers", action="store_true", help="skip MONAI and dask")
    p.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma list of sections: {','.join(SECTIONS)}"
    )
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="seconds from start after which the sections not yet begun are skipped",
    )
    args = p.parse_args(argv)
    args.only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = args.only - set(SECTIONS)
    if unknown:
        p.error(f"--only: unknown section(s) {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    if args.skip_peers:
        args.only.discard("peers")
    return args


def make_scan(work: Path, size: tuple[int, int], bands: int) -> Path:
    """Synthesise the scan (not timed), or reuse a kept one of the same size and bands."""
    scan_dir = work / "scan"
    params = scan_dir / "synth.json"
    if params.is_file():
        old = json.loads(params.read_text())
        if tuple(old.get("size", ())) == tuple(size) and old.get("bands") == bands:
            print(f"reusing the scan in {scan_dir}")
            return scan_dir / "scan.json"
    start = time.perf_counter()
    manifest = synth_scan(scan_dir, size, bands, overwrite=True)
    mb = sum(f.stat().st_size for f in scan_dir.iterdir()) / 1e6
    print(
        f"synthesised {size[0]}x{size[1]} + {bands} bands in {time.perf_counter() - start:.1f} s "
        f"({mb:.0f} MB on disk, not timed)"
    )
    return manifest


# --------------------------------------------------------------------------
# 1. encoder-only ceiling


def engine_encoder(work: Path, backend: Any, tile: int, precision: str, bands: int) -> dict:
    """The ``build_encoder`` arguments ``tilex.job.run`` uses, seen on a tiny run.

    The reference variant must be the one the engine really runs, whatever
    ``tilex.job`` chooses today, so it is observed rather than assumed.
    """
    import tilex.encoder
    from tilex.job import run

    seen: dict = {}
    original = tilex.encoder.build_encoder

    def spy(*args: Any, **kwargs: Any) -> Any:
        encoder = original(*args, **kwargs)
        seen.update(kwargs, precision=encoder.precision, channels_last=encoder.channels_last)
        return encoder

    tiny = synth_scan(work / "probe-scan", (64, 64), bands, overwrite=True)
    tilex.encoder.build_encoder = spy
    try:
        run(tiny, None, device=backend.name, tile=tile, precision=precision, norm="pixel")
    finally:
        tilex.encoder.build_encoder = original
    return {
        "precision": seen.get("precision", precision),
        "channels_last": bool(seen.get("channels_last", False)),
        "compile": bool(seen.get("compile", False)),
    }


def encoder_variants(
    device: str, precision: str, compile_: bool, ref: tuple[str, bool, bool]
) -> list[tuple[str, bool, bool]]:
    """``(precision, channels_last, compile)``; the reference (the engine's) first."""
    if device.startswith("cuda"):
        variants = [
            (p, cl, False) for p in ("fp32", "tf32", "bf16", "fp16") for cl in (False, True)
        ]
        if compile_:
            variants += [("fp16", True, True), ("bf16", True, True)]
    else:
        precisions = ["fp32"] + ([precision] if precision != "fp32" else [])
        variants = [(p, cl, False) for p in precisions for cl in (False, True)]
        if compile_:
            variants.append((precision, True, True))
    return [ref] + [v for v in variants if v != ref]


def variant_name(precision: str, channels_last: bool, compiled: bool) -> str:
    name = f"encoder {precision} {'channels_last' if channels_last else 'contiguous'}"
    return name + (" compiled" if compiled else "")


def preread(scan: Any, tiles: list, backend: Any, readers: int) -> tuple[list, list]:
    """Every tile's read region on the device, and its core's grey for the overlay (not timed)."""
    from tilex.colour import luminance

    def one(t: Any) -> tuple[Any, Any, Any]:
        visible, bands = scan.read_region(*t.read)
        sy, sx = t.crop
        return visible, bands, luminance(visible[:, sy, sx])

    inputs, gray = [], []
    with ThreadPoolExecutor(readers) as pool:
        for visible, bands, grey in pool.map(one, tiles):
            inputs.append((backend.upload(visible), backend.upload(bands)))
            gray.append(backend.to_kernel(backend.upload(grey)))
    return inputs, gray


def as_engine(fn: Any, items: list, backend: Any, split: bool = False) -> list:
    """``fn(*item)`` for every item, as the engine encodes tiles: on the CPU each of torch's
    threads takes a tile of its own, one torch thread each (``tilex.device.tile_workers``);
    ``split``: one tile at a time, its convolutions split across torch's threads."""
    from tilex.device import tile_workers

    if split:
        return [fn(*item) for item in items]
    with tile_workers(backend) as n:
        if n <= 1:
            return [fn(*item) for item in items]
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(lambda item: fn(*item), items))


def time_encoder(
    enc: Any,
    inputs: list,
    tiles: list,
    backend: Any,
    rss: RssSampler,
    warm_all: bool,
    split: bool = False,
) -> tuple[Measure, list]:
    """One synchronised pass over all tiles; returns the measure and the raw outputs."""
    # warm-up (cuDNN, compile per shape; on the CPU every thread's first tile)
    as_engine(enc.encode, inputs if warm_all else inputs[:2], backend, split)
    with Measure(backend.name, rss) as m:
        outputs = as_engine(enc.encode, inputs, backend, split)
    return m, outputs


def bench_encoder(
    args, backend, tiles, rss, rows, pixels, inputs, ref, save
) -> tuple[Any, list | None]:
    """Rows for each variant; returns the reference encoder and its cropped features."""
    import torch

    from tilex.encoder import build_encoder

    device = backend.name
    ref_enc, ref_feats = None, None
    for precision, cl, comp in encoder_variants(device, args.precision, args.compile, ref):
        name = variant_name(precision, cl, comp)
        try:
            enc = build_encoder(device=device, precision=precision, channels_last=cl, compile=comp)
            m, outputs = time_encoder(
                enc, inputs, tiles, backend, rss, warm_all=comp or device != "cpu"
            )
        except Exception as err:  # a variant the device or this torch cannot run: report, go on
            print(f"   {name}: skipped ({type(err).__name__}: {str(err).splitlines()[0][:120]})")
            continue
        note = "reference (the engine's)" if ref_enc is None else ""
        rows.append(Row.of(name, pixels, m, note))
        print(f"   {name:<44} {rows[-1].mpx_s:8.3f} Mpx/s  ({m.seconds:.2f} s)", flush=True)
        if ref_enc is None and not backend.is_cuda and torch.get_num_threads() > 1:
            # what the engine did before: one tile at a time, split across the threads
            split, _ = time_encoder(enc, inputs, tiles, backend, rss, warm_all=False, split=True)
            rows.append(Row.of(f"{name}, tiles split", pixels, split, "each tile on all threads"))
            print(f"   {rows[-1].name:<44} {rows[-1].mpx_s:8.3f} Mpx/s  ({split.seconds:.2f} s)")
        if ref_enc is None:
            ref_enc = enc
            ref_feats = [
                crop_features(backend, t, g, b) for t, (g, b) in zip(tiles, outputs, strict=True)
            ]
        del outputs
        save()
    if ref_enc is not None:  # the default run's planes: each band and its prediction
        planes = [(torch.cat([b, b]),) for _, b in inputs]
        as_engine(ref_enc.encode_bands, planes[:2], backend)  # warm-up
        with Measure(device, rss) as m:
            as_engine(ref_enc.encode_bands, planes, backend)
        del planes
        rows.append(Row.of(CALIBRATED_CEILING, pixels, m, "ceiling of the default run"))
        print(f"   {CALIBRATED_CEILING:<44} {rows[-1].mpx_s:8.3f} Mpx/s  ({m.seconds:.2f} s)")
        save()
    return ref_enc, ref_feats


CALIBRATED_CEILING = "encoder, reference, 2N band planes"
"""The ceiling of the default (calibrated) run: it encodes each band and its prediction
through the band path, 2N planes a tile, where ``--calibrate none`` encodes N + 1."""


def crop_features(backend: Any, tile: Any, g: Any, b: Any) -> tuple[Any, Any]:
    """The core of a tile's features as kernel arrays, as ``Engine._encode`` hands them on."""
    sy, sx = tile.crop
    return backend.to_kernel(g[:, sy, sx]), backend.to_kernel(b[:, :, sy, sx])


# --------------------------------------------------------------------------
# 2. stages alone


def readers_default() -> int:
    return max(2, min(8, os.cpu_count() or 2))  # what tilex.job.run uses


def bench_read(scan, tiles, readers: int, depth: int, device: str, rss) -> Measure:
    """All tiles' read regions on ``readers`` threads, ``depth`` ahead, results dropped."""
    it = iter(tiles)
    with Measure(device, rss) as m, ThreadPoolExecutor(readers) as pool:
        pending: deque = deque()
        for t in it:
            pending.append(pool.submit(scan.read_region, *t.read))
            if len(pending) >= depth:
                pending.popleft().result()
        while pending:
            pending.popleft().result()
    return m


def bench_stats(scan, enc, backend, tile: int, readers: int, rss) -> tuple[Measure, Any, dict]:
    from tilex.engine import Engine, measure_statistics
    from tilex.plan import TilingSpec
    from tilex.stats import StatsSpec

    engine = Engine(scan, enc, backend, tiling=TilingSpec(tile=tile, readers=readers))
    spec = StatsSpec()
    with Measure(backend.name, rss) as m:
        stats = measure_statistics(engine, spec)
    return m, stats, dict(engine.timings, sample=spec.fraction_for(tuple(scan.shape)))


def bench_fuse(feats, gray, tiles, stats, backend, rss) -> tuple[Measure, dict]:
    from tilex import kernels
    from tilex.sink import TileResult

    lo, hi = (backend.to_kernel(backend.upload(a)) for a in stats.arrays())
    g0, b0 = feats[0]
    kernels.overlay(
        gray[0][:16, :16], kernels.fuse(g0[:, :16, :16], b0[..., :16, :16], lo, hi).score
    )  # JIT
    get = backend.download
    results = {}
    with Measure(backend.name, rss) as m:
        for t, (g, b), gr in zip(tiles, feats, gray, strict=True):
            fused = kernels.fuse(g, b, lo, hi, norm="band", threshold=0.5)
            over = kernels.overlay(gr, fused.score)
            results[t.core] = TileResult(
                t.core, get(fused.winner), get(fused.score), get(fused.collage), get(over), None
            )
    return m, results


def bench_write(path: Path, scan, enc, results: dict, grid, device: str, rss) -> Measure:
    from tilex.omezarr import OmeZarrSink
    from tilex.sink import RunInfo

    info = RunInfo(
        shape=tuple(scan.shape),
        band_names=tuple(scan.band_names),
        wavelengths=tuple(scan.wavelengths),
        channels=enc.channels,
        pixel_size_um=scan.pixel_size_um,
        provenance={"benchmark": "write stage alone"},
    )
    sink = OmeZarrSink(path, overwrite=True)
    order = list(grid.tiles(sink.write_unit))
    with Measure(device, rss) as m:
        sink.open(info)
        for t in order:
            sink.write(results[t.core])
        sink.close()
    return m


# --------------------------------------------------------------------------
# 3. end to end


def bench_e2e(
    manifest,
    out: Path,
    backend,
    tile: int,
    precision: str,
    options: dict,
    rss,
) -> tuple[Measure, dict]:
    from tilex.job import run

    with Measure(backend.name, rss) as m:
        report = run(
            manifest,
            out,
            device=backend.name,
            tile=tile,
            precision=precision,
            overwrite=True,
            **options,
        )
    return m, report.timings


class StageProbes:
    """Per-stage busy time of one end-to-end run, by patching the stage functions (class level).

    Each probe synchronises the device after its call (CUDA: torch's stream and
    CuPy's), so a stage's time is its own; this serialises the overlapped
    pipeline, so the run's own Mpx/s is lower than the plain run's. Stages:
    read (``Scan.read_region``, reader threads), h2d (``Backend.upload``),
    encode (``Encoder.encode``, or ``encode_bands`` when calibrated), fuse (``kernels.fuse`` + ``kernels.overlay``),
    d2h (``Backend.download``), write (``OmeZarrSink.write``: assemble units,
    writer thread; includes the two below when they run inline), pyramid
    (``OutputLayout.reduce``), commit (``OutputLayout.commit_unit``: compress +
    store, writer pool) and close (``OmeZarrSink.close``: last levels + metadata).
    Busy seconds are summed over threads.
    """

    def __init__(self, cuda: bool) -> None:
        import threading

        self.cuda = cuda
        self.lock = threading.Lock()
        self.busy: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.bytes: dict[str, int] = {}
        self.threads: dict[str, set] = {}
        self._undo: list = []
        self._active = threading.local()

    def _sync(self) -> None:
        if not self.cuda:
            return
        import torch

        torch.cuda.current_stream().synchronize()
        cupy = sys.modules.get("cupy")
        if cupy is not None:
            cupy.cuda.get_current_stream().synchronize()

    def _wrap(self, owner: Any, attr: str, stage: str, sync: bool, nbytes: Any = None) -> None:
        import threading

        original = getattr(owner, attr)
        probes = self

        def probe(*args: Any, **kwargs: Any) -> Any:
            active = probes._active.__dict__.setdefault("stages", set())
            if stage in active:  # nested (encode -> encode_bands): the outer call counts
                return original(*args, **kwargs)
            active.add(stage)
            try:
                return timed(*args, **kwargs)
            finally:
                active.discard(stage)

        def timed(*args: Any, **kwargs: Any) -> Any:
            if sync:
                probes._sync()
            t0 = time.perf_counter()
            out = original(*args, **kwargs)
            if sync:
                probes._sync()
            dt = time.perf_counter() - t0
            with probes.lock:
                probes.busy[stage] = probes.busy.get(stage, 0.0) + dt
                probes.calls[stage] = probes.calls.get(stage, 0) + 1
                probes.threads.setdefault(stage, set()).add(threading.get_ident())
                if nbytes is not None:
                    probes.bytes[stage] = probes.bytes.get(stage, 0) + int(nbytes(args, out))
            return out

        setattr(owner, attr, probe)
        self._undo.append((owner, attr, original))

    def __enter__(self) -> StageProbes:
        import tilex.kernels

        from tilex.device import Backend
        from tilex.encoder.runtime import Encoder
        from tilex.omezarr.layout import OutputLayout
        from tilex.omezarr.sink import OmeZarrSink
        from tilex.scan.scan import Scan

        def up_bytes(args: tuple, out: Any) -> int:
            return getattr(args[1], "nbytes", 0)

        def down_bytes(args: tuple, out: Any) -> int:
            return getattr(out, "nbytes", 0)

        self._wrap(Scan, "read_region", "read", False)
        self._wrap(Backend, "upload", "h2d", True, up_bytes)
        self._wrap(Encoder, "encode", "encode", True)
        self._wrap(Encoder, "encode_bands", "encode", True)  # the calibrated comparison
        self._wrap(tilex.kernels, "fuse", "fuse", True)
        self._wrap(tilex.kernels, "overlay", "fuse", True)
        self._wrap(Backend, "download", "d2h", True, down_bytes)
        self._wrap(OmeZarrSink, "write", "write", False)
        self._wrap(OutputLayout, "reduce", "pyramid", False)
        self._wrap(OutputLayout, "commit_unit", "commit", False)
        self._wrap(OmeZarrSink, "close", "close", False)
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()

    def summary(self, pixels: int, wall: float) -> list[dict]:
        order = ["read", "h2d", "encode", "fuse", "d2h", "write", "pyramid", "commit", "close"]
        rows = []
        for stage in order:
            if stage not in self.busy:
                continue
            busy = self.busy[stage]
            nb = self.bytes.get(stage)
            rows.append(
                dict(
                    stage=stage,
                    busy_s=busy,
                    calls=self.calls[stage],
                    threads=len(self.threads[stage]),
                    mpx_s_busy=pixels / busy / 1e6 if busy else float("inf"),
                    share_of_wall=busy / wall if wall else float("nan"),
                    gb_s=(nb / busy / 1e9) if nb and busy else None,
                )
            )
        return rows


def bench_e2e_profiled(
    manifest, out: Path, backend, tile: int, precision: str, rss
) -> tuple[Measure, list[dict], dict]:
    """``tilex.job.run`` (norm pixel, no statistics pass) under :class:`StageProbes`."""
    from tilex.job import run

    with StageProbes(backend.is_cuda) as probes, Measure(backend.name, rss) as m:
        report = run(
            manifest,
            out,
            device=backend.name,
            tile=tile,
            precision=precision,
            norm="pixel",
            calibrate="none",
            overwrite=True,
        )
    h, w = report.shape
    return m, probes.summary(h * w, m.seconds), dict(report.timings)


def print_stages(rows: list[dict], wall: float, pixels: int) -> None:
    print(
        f"   per-stage busy time (synchronised probes; wall {wall:.2f} s, "
        f"{pixels / wall / 1e6:.1f} Mpx/s under probes)"
    )
    print(
        f"   {'stage':<8} {'busy s':>8} {'calls':>6} {'thr':>4} {'Mpx/s busy':>11} "
        f"{'% wall':>7} {'GB/s':>7}"
    )
    for r in rows:
        gb = f"{r['gb_s']:7.2f}" if r["gb_s"] else "      -"
        print(
            f"   {r['stage']:<8} {r['busy_s']:8.2f} {r['calls']:6d} {r['threads']:4d} "
            f"{r['mpx_s_busy']:11.1f} {100 * r['share_of_wall']:6.0f}% {gb}"
        )
    main_thread = [r for r in rows if r["stage"] in ("h2d", "encode", "fuse", "d2h")]
    if main_thread:
        slow = max(main_thread, key=lambda r: r["busy_s"])
        print(f"   slowest main-thread stage: {slow['stage']} ({slow['busy_s']:.2f} s busy)")


def e2e_cases(shape: tuple[int, int]) -> list[tuple[str, dict]]:
    """``(row name, run options)``.

    The ``norm band`` and ``norm pixel`` rows are uncalibrated, so they encode
    what the encoder-only ceiling encodes (the visible image and N bands); the
    default row calibrates (each band and its prediction: 2N planes, and the
    fit) and scores over the noise floor. On a small scan, also the large-scan
    statistics sample.
    """
    from tilex.stats import AUTO_FRACTION, StatsSpec

    cases = [
        ("tilex end to end, norm band", {"norm": "band", "calibrate": "none"}),
        ("tilex end to end, norm pixel", {"norm": "pixel", "calibrate": "none"}),
        ("tilex end to end, default (calibrated, norm noise, 2N planes)", {}),
    ]
    if StatsSpec().fraction_for(shape) == 1.0:  # small scan: the default measures every pixel
        cases.append(
            (
                f"tilex end to end, norm band, stats sample {AUTO_FRACTION:g}",
                {"norm": "band", "calibrate": "none", "stats_sample": AUTO_FRACTION},
            )
        )
    return cases


# --------------------------------------------------------------------------
# 4. peers


def bench_monai(scan, enc, backend, tile: int, crop: int, rss) -> tuple[Measure, int, str]:
    import torch
    from monai.inferers import sliding_window_inference

    h, w = scan.shape
    ch, cw = (min(crop, h), min(crop, w)) if crop else (h, w)
    image = backend.upload(read_whole(scan, ch, cw, tile, readers_default()))[
        None
    ]  # [1, 3+N, H, W]

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        out = []
        for item in batch:  # visible path on channels 0:3, band path on the rest
            g, b = enc.encode(item[:3].contiguous(), item[3:].contiguous())
            out.append(torch.cat([g, b.flatten(0, 1)]))
        return torch.stack(out)  # [B, C * (1 + N), h, w]

    with Measure(backend.name, rss) as m, torch.inference_mode():
        features = sliding_window_inference(
            image, roi_size=(tile, tile), sw_batch_size=1, predictor=predictor, overlap=0.25
        )
    assert features.shape[-2:] == (ch, cw)
    label = "whole scan" if (ch, cw) == (h, w) else f"top-left crop {ch}x{cw}"
    return m, ch * cw, label


def read_whole(scan: Any, h: int, w: int, block: int, readers: int) -> np.ndarray:
    """The top-left ``h x w`` of the scan as one ``[3 + N, h, w]`` array, read block by block in parallel."""
    whole = np.empty((3 + scan.n_bands, h, w), np.float32)

    def one(yx: tuple[int, int]) -> None:
        y, x = yx
        y1, x1 = min(y + block, h), min(x + block, w)
        visible, bands = scan.read_region(y, y1, x, x1)
        whole[:3, y:y1, x:x1] = visible
        whole[3:, y:y1, x:x1] = bands

    with ThreadPoolExecutor(readers) as pool:
        list(pool.map(one, [(y, x) for y in range(0, h, block) for x in range(0, w, block)]))
    return whole


class ScanArray:
    """A lazy ``[3 + N, H, W]`` float32 view of a scan for ``dask.array.from_array``."""

    def __init__(self, scan: Any) -> None:
        self.scan = scan
        self.shape = (3 + scan.n_bands, *scan.shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = 3

    def __getitem__(self, key: tuple) -> np.ndarray:
        key = key + (slice(None),) * (3 - len(key))
        ys = key[1].indices(self.shape[1])
        xs = key[2].indices(self.shape[2])
        visible, bands = self.scan.read_region(ys[0], ys[1], xs[0], xs[1])
        return np.concatenate([visible, bands])[key[0]]


def bench_dask(scan, enc, backend, tile: int, path: Path, rss) -> tuple[Measure, str]:
    import dask
    import dask.array as da

    from tilex import kernels

    workers = os.cpu_count() or 1
    if backend.is_cuda:
        workers = min(workers, 4)  # each thread holds a tile's activations on the GPU
    x = da.from_array(
        ScanArray(scan),
        chunks=(3 + scan.n_bands, tile, tile),
        asarray=False,
        lock=False,
        fancy=False,
        meta=np.empty((0, 0, 0), np.float32),
    )

    def score(block: np.ndarray) -> np.ndarray:
        g, b = enc.encode(backend.upload(block[:3]), backend.upload(block[3:]))
        fused = kernels.fuse(backend.to_kernel(g), backend.to_kernel(b), norm="pixel")
        return backend.download(fused.score)

    r = enc.radius
    y = x.map_overlap(
        score,
        depth=(0, r, r),
        boundary="none",
        drop_axis=0,
        dtype=np.float32,
        meta=np.empty((0, 0), np.float32),
    )
    with Measure(backend.name, rss) as m, dask.config.set(scheduler="threads", num_workers=workers):
        y.to_zarr(str(path), overwrite=True)
    return m, f"threads={workers}, zarr default codec"


# --------------------------------------------------------------------------
# main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from tilex.device import resolve_device
    from tilex.encoder import build_encoder
    from tilex.grid import TileGrid
    from tilex.plan import DEFAULT_TILE, TilingSpec
    from tilex.scan import open_scan

    backend = resolve_device(args.device)
    if not backend.is_cuda:  # as the tilex command does (an explicit opt-in for a process)
        from tilex.device import tune_host_allocator

        tune_host_allocator()
    kind = "cuda" if backend.is_cuda else "cpu"
    size = parse_size(args.size or DEFAULTS[kind]["size"])
    tile = args.tile or DEFAULT_TILE["cuda" if backend.is_cuda else "cpu"]
    crop = DEFAULTS[kind]["monai_crop"] if args.monai_crop is None else args.monai_crop
    readers = readers_default()
    device_name = describe_device(backend.name)
    pixels = size[0] * size[1]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "-"

    print(
        f"tilex pipeline benchmark: {size[0]}x{size[1]} scan, {args.bands} bands, tile {tile}, "
        f"device {backend.name} ({device_name}), precision {args.precision}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), readers {readers}, "
        f"load average {load}"
    )
    if args.out_dir:
        base = Path(args.out_dir)
        base.mkdir(parents=True, exist_ok=True)
    else:
        base = Path(tempfile.mkdtemp(prefix="tilex-bench-"))
    work = base / f"pipeline-{size[0]}x{size[1]}-{args.bands}b"
    work.mkdir(parents=True, exist_ok=True)

    rows: list[Row] = []
    e2e_timings: dict[str, dict] = {}
    e2e_stages: list[dict] = []
    started = time.perf_counter()

    def wanted(name: str) -> bool:
        """The section is asked for and the deadline (if any) has not passed."""
        if name not in args.only:
            return False
        if args.deadline is not None and time.perf_counter() - started > args.deadline:
            print(f"== section {name}: skipped (past --deadline {args.deadline:g} s)", flush=True)
            return False
        return True

    def save() -> None:  # after every section, so a run cut short still leaves its rows
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "device": device_name,
                        "size": size,
                        "bands": args.bands,
                        "tile": tile,
                        "precision": args.precision,
                        "e2e_timings": e2e_timings,
                        "e2e_stages": e2e_stages,
                        "rows": [
                            dict(
                                name=r.name,
                                mpx_s=r.mpx_s,
                                seconds=r.seconds,
                                pixels=r.pixels,
                                rss_mb=r.rss_mb,
                                gpu_mb=r.gpu_mb,
                                note=r.note,
                            )
                            for r in rows
                        ],
                    },
                    indent=2,
                    default=str,
                )
                + "\n"
            )

    rss = RssSampler().start()
    try:
        manifest = make_scan(work, size, args.bands)
        scan = open_scan(manifest)
        used = engine_encoder(work, backend, tile, args.precision, args.bands)
        ref = (used["precision"], used["channels_last"], used["compile"])
        print(f"the engine builds its encoder with {used}: that is the reference variant")
        ref_enc = build_encoder(device=backend.name, **used)
        grid = TileGrid(tuple(scan.shape), tile, ref_enc.radius)
        tiles = list(grid.tiles())
        print(f"{len(tiles)} tiles of {tile} px + halo {ref_enc.radius} px")
        feats = gray = None
        if args.only & {"encoder", "stages"}:
            inputs, gray = preread(scan, tiles, backend, readers)

        if wanted("encoder"):
            with section("1. encoder-only ceiling (inputs pre-read on the device)"):
                enc, feats = bench_encoder(
                    args, backend, tiles, rss, rows, pixels, inputs, ref, save
                )
                ref_enc = enc or ref_enc
        if "stages" in args.only and feats is None:  # the reference's features, untimed
            feats = [
                crop_features(backend, t, *ref_enc.encode(v, b))
                for t, (v, b) in zip(tiles, inputs, strict=True)
            ]
        inputs = None

        if wanted("stages"):
            try:
                with section("2. each stage alone"):
                    m = bench_read(scan, tiles, readers, TilingSpec().depth, backend.name, rss)
                    rows.append(
                        Row.of(
                            "read (Scan.read_region, reader pool)", pixels, m, f"{readers} threads"
                        )
                    )
                    print(f"   read   {rows[-1].mpx_s:8.3f} Mpx/s", flush=True)
                    m, stats, st = bench_stats(scan, ref_enc, backend, tile, readers, rss)
                    rows.append(
                        Row.of(
                            "statistics pass (measure_statistics)",
                            pixels,
                            m,
                            f"sample {st['sample']:g}; encode {st.get('stats_encode_s', 0):.1f} s, "
                            f"read wait {st.get('stats_read_wait_s', 0):.1f} s",
                        )
                    )
                    print(f"   stats  {rows[-1].mpx_s:8.3f} Mpx/s  ({rows[-1].note})", flush=True)
                    m, results = bench_fuse(feats, gray, tiles, stats, backend, rss)
                    feats = gray = None
                    rows.append(Row.of("fuse + overlay + download", pixels, m, "norm band"))
                    print(f"   fuse   {rows[-1].mpx_s:8.3f} Mpx/s", flush=True)
                    m = bench_write(
                        work / "write_only", scan, ref_enc, results, grid, backend.name, rss
                    )
                    results = None
                    rows.append(Row.of("write (OmeZarrSink, unit order)", pixels, m))
                    print(f"   write  {rows[-1].mpx_s:8.3f} Mpx/s", flush=True)
                    save()
            except Exception as err:  # a failing section must not cost the others
                print(f"   stages section failed ({type(err).__name__}: {err})")
                traceback.print_exc()
        feats = gray = None

        if wanted("e2e"):
            try:
                with section("3. end to end (tilex.job.run -> OME-Zarr on disk)"):
                    for i, (name, options) in enumerate(e2e_cases(size)):
                        m, timings = bench_e2e(
                            manifest,
                            work / f"e2e_{i}",
                            backend,
                            tile,
                            args.precision,
                            options,
                            rss,
                        )
                        e2e_timings[name] = timings
                        note = (
                            ", ".join(
                                f"{k.removesuffix('_s')} {v:.1f}"
                                for k, v in timings.items()
                                if k.endswith("_s")
                            )
                            + " s"
                        )
                        rows.append(Row.of(name, pixels, m, note))
                        print(f"   {name:<50} {rows[-1].mpx_s:8.3f} Mpx/s  ({note})", flush=True)
                        save()
            except Exception as err:  # a failing section must not cost the others
                print(f"   end-to-end section failed ({type(err).__name__}: {err})")
                traceback.print_exc()

        if wanted("profile"):
            try:
                with section("3b. end to end, norm pixel, per-stage probes (synchronised)"):
                    m, stage_rows, timings = bench_e2e_profiled(
                        manifest, work / "e2e_probed", backend, tile, args.precision, rss
                    )
                    e2e_stages.extend(stage_rows)
                    e2e_timings["tilex end to end, norm pixel, probed"] = timings
                    rows.append(
                        Row.of(
                            "tilex e2e, norm pixel, probed stages",
                            pixels,
                            m,
                            "each stage synchronised: slower than the plain run",
                        )
                    )
                    print_stages(stage_rows, m.seconds, pixels)
                    save()
            except Exception as err:  # the probes patch tilex internals: report, go on
                print(f"   probed run failed ({type(err).__name__}: {err})")
                traceback.print_exc()

        if wanted("peers"):
            with section("4. peers (same encoder, scan, precision)"):
                run_peers(scan, ref_enc, backend, tile, crop, work, rss, rows, pixels)
                save()
    finally:
        rss.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            if not args.out_dir:
                shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {work}")

    report(rows, backend, device_name, size, args, tile)
    return 0


def run_peers(
    scan, enc, backend, tile: int, crop: int, work: Path, rss, rows: list, pixels: int
) -> None:
    """MONAI and dask, each skipped with a message when absent, reported when failing."""
    try:
        import monai  # noqa: F401
    except ImportError:
        print("   MONAI: skipped (not installed: pip install monai)")
    else:
        try:
            m, px, label = bench_monai(scan, enc, backend, tile, crop, rss)
            rows.append(
                Row.of(
                    f"MONAI sliding_window_inference ({label})",
                    px,
                    m,
                    "overlap 0.25, roi = tile, encoder only, in memory",
                )
            )
            print(f"   MONAI  {rows[-1].mpx_s:8.3f} Mpx/s ({label})", flush=True)
        except Exception as err:  # a peer failing must not cost the other rows
            print(f"   MONAI: failed ({type(err).__name__}: {err})")
            traceback.print_exc()
    try:
        import dask.array  # noqa: F401
    except ImportError:
        print("   dask: skipped (not installed: pip install 'dask[array]')")
    else:
        try:
            m, note = bench_dask(scan, enc, backend, tile, work / "dask_score.zarr", rss)
            rows.append(Row.of("dask map_overlap + fuse(pixel) -> to_zarr", pixels, m, note))
            print(f"   dask   {rows[-1].mpx_s:8.3f} Mpx/s ({note})", flush=True)
        except Exception as err:
            print(f"   dask: failed ({type(err).__name__}: {err})")
            traceback.print_exc()


def report(rows: list[Row], backend, device_name: str, size, args, tile: int) -> None:
    """Summary lines, then the final table (printed last)."""
    by = {r.name: r for r in rows}
    ref = next((r for r in rows if r.note.startswith("reference")), None)
    kind = "cuda" if backend.is_cuda else "cpu"
    print()
    if ref is not None:
        best = max((r for r in rows if r.name.startswith("encoder")), key=lambda r: r.mpx_s)
        if best is not ref:
            print(
                f"best encoder variant: {best.name} at {best.mpx_s:.3f} Mpx/s, "
                f"{best.mpx_s / ref.mpx_s:.2f}x the engine's ({ref.name})"
            )
    stage_rows = [r for r in rows if r.name.split()[0] in ("read", "statistics", "fuse", "write")]
    if stage_rows:
        cand = stage_rows + ([ref] if ref else [])
        slow = min(cand, key=lambda r: r.mpx_s)
        print(f"slowest stage alone: {slow.name} ({slow.mpx_s:.3f} Mpx/s)")
    for r in rows:
        if r.name.startswith("tilex end to end") and ref:
            # the default encodes 2N planes: its ceiling is the reference on those planes
            ceiling = by.get(CALIBRATED_CEILING) if "calibrated" in r.name else None
            eff = r.mpx_s / (ceiling or ref).mpx_s
            verdict = "meets" if eff >= GOAL[kind] else "BELOW"
            what = r.name.removeprefix("tilex end to end, ")
            against = "encoder-only on 2N planes" if ceiling else "encoder-only"
            print(
                f"EFFICIENCY {what}: e2e / {against} = {eff:.2f} ({verdict} the goal {GOAL[kind]:.2f})"
            )
    peers = [r for r in rows if r.name.startswith(("MONAI", "dask"))]
    for peer in peers:
        parts = []
        for norm in ("band", "pixel"):
            r = by.get(f"tilex end to end, norm {norm}")
            if r:
                parts.append(f"tilex e2e {norm} / peer = {r.mpx_s / peer.mpx_s:.2f}")
        if ref:
            parts.append(f"encoder-only / peer = {ref.mpx_s / peer.mpx_s:.2f}")
        print(f"{peer.name}: " + "; ".join(parts))

    header = ["stage / variant", "Mpx/s", "vs encoder", "peak RSS MB"]
    if backend.is_cuda:
        header.append("peak GPU MB")
    header += ["device", "note"]
    table = []
    for r in rows:
        line = [
            r.name,
            fmt(r.mpx_s, 3),
            fmt(r.mpx_s / ref.mpx_s if ref else None),
            fmt(r.rss_mb, 0),
        ]
        if backend.is_cuda:
            line.append(fmt(r.gpu_mb, 0))
        line += [device_name, r.note]
        table.append(line)
    print()
    print_table(
        header,
        table,
        title=(
            f"tilex pipeline: {size[0]}x{size[1]} scan ({size[0] * size[1] / 1e6:.1f} Mpx), {args.bands} bands, "
            f"tile {tile}, {args.precision}, device {backend.name}; Mpx/s = scan pixels per second; "
            f"peak RSS = this process during the row"
        ),
    )
    if math.isnan(sum(r.mpx_s for r in rows)):
        print("(rows with '-' did not run)")


if __name__ == "__main__":
    sys.exit(main())
