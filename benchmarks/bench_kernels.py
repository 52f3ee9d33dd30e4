"""Benchmark the fusion kernels: Numba vs the NumPy oracle, CuPy vs torch vs copy bandwidth.

Prints a table; asserts nothing. The GPU section runs only where CuPy finds a
CUDA device (torch rows only where torch sees CUDA too).

    python benchmarks/bench_kernels.py                 # 8 bands, C=1, 2048 x 2048
    python benchmarks/bench_kernels.py --size 1024 --bands 4 --channels 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def timeit(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` in seconds (the median resists a busy machine)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(
    name: str, seconds: float, pixels: int, baseline: float | None = None, extra: str = ""
) -> None:
    speedup = f"{baseline / seconds:7.1f}x" if baseline else " " * 8
    print(
        f"  {name:<44} {seconds * 1e3:10.2f} ms {pixels / seconds / 1e6:9.1f} Mpx/s {speedup} {extra}"
    )


def cpu_section(args: argparse.Namespace) -> None:
    import numba
    import tilex.kernels as K

    s, n, c = args.size, args.bands, args.channels
    rng = np.random.default_rng(0)
    g = rng.random((c, s, s), dtype=np.float32)
    b = rng.random((n, c, s, s), dtype=np.float32)
    px = s * s
    hist = K.dissimilarity_histogram(g, b)  # also compiles the kernel
    lo = K.histogram_percentiles(hist, 1.0).astype(np.float32)
    hi = K.histogram_percentiles(hist, 99.0).astype(np.float32)
    gray = rng.random((s, s), dtype=np.float32)
    score = K.fuse(g, b, lo, hi).score

    print(
        f"CPU: {platform.processor() or platform.machine()}, os.cpu_count()={os.cpu_count()}, "
        f"numba {numba.__version__} get_num_threads()={numba.get_num_threads()}, "
        f"tile {s}x{s}, N={n} bands, C={c}"
    )
    print(f"  {'kernel':<44} {'time':>13} {'throughput':>15} {'vs oracle':>8}")
    cases = [
        ("fuse band", lambda: K.fuse_reference(g, b, lo, hi), lambda: K.fuse(g, b, lo, hi)),
        (
            "fuse pixel",
            lambda: K.fuse_reference(g, b, norm="pixel"),
            lambda: K.fuse(g, b, norm="pixel"),
        ),
        (
            "fuse band + keep_normalised",
            lambda: K.fuse_reference(g, b, lo, hi, keep_normalised=True),
            lambda: K.fuse(g, b, lo, hi, keep_normalised=True),
        ),
        ("dissimilarity", lambda: K.dissimilarity_reference(g, b), lambda: K.dissimilarity(g, b)),
        (
            "dissimilarity_histogram",
            lambda: K.histogram_reference(g, b),
            lambda: K.dissimilarity_histogram(g, b),
        ),
        ("overlay", lambda: K.overlay_reference(gray, score), lambda: K.overlay(gray, score)),
    ]
    for name, oracle, fast in cases:
        t_oracle = timeit(oracle, args.oracle_repeat)
        t_fast = timeit(fast, args.repeat)
        row(f"{name} (NumPy oracle)", t_oracle, px)
        row(f"{name} (Numba)", t_fast, px, t_oracle)
    print(f"  numba threading layer: {numba.threading_layer()}")


def copy_bandwidth(cupy: Any, mib: int, gpu_time: Callable[[Callable[[], Any]], float]) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write) of a ``mib`` MiB buffer."""
    src = cupy.empty(mib << 18, dtype=cupy.float32)  # mib * 2**20 bytes
    dst = cupy.empty_like(src)
    seconds = gpu_time(lambda: dst.__setitem__(Ellipsis, src))
    return 2 * src.nbytes / seconds


def gpu_section(args: argparse.Namespace) -> None:
    try:
        import cupy
    except ImportError:
        print("GPU: skipped (CuPy is not installed)")
        return
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no device")
    except Exception as exc:  # noqa: BLE001 - any CUDA failure means 'no GPU here'
        print(f"GPU: skipped (no CUDA device: {exc})")
        return

    import tilex.kernels as K

    s, n, c = args.size, args.bands, args.channels
    px = s * s
    g = cupy.random.random((c, s, s), dtype=cupy.float32)
    b = cupy.random.random((n, c, s, s), dtype=cupy.float32)
    lo = cupy.full(n, 0.05, dtype=cupy.float32)
    hi = cupy.full(n, 0.9 * c, dtype=cupy.float32)

    def gpu_time(fn: Callable[[], Any]) -> float:
        fn()
        cupy.cuda.runtime.deviceSynchronize()
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(args.gpu_repeat):
            fn()
        stop.record()
        stop.synchronize()
        return cupy.cuda.get_elapsed_time(start, stop) / 1e3 / args.gpu_repeat

    copy_bw = copy_bandwidth(cupy, args.copy_mib, gpu_time)

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    print(f"GPU: {props['name'].decode()}, cupy {cupy.__version__}, tile {s}x{s}, N={n}, C={c}")
    print(f"  device-to-device copy: {copy_bw / 1e9:8.1f} GB/s (read + write)")
    # bytes of the fused band kernel: g and b read once; winner, score, collage written once
    fused_bytes = 4 * c * px + 4 * n * c * px + px + 4 * px + 4 * c * px
    for norm, args_ in (("band", (g, b, lo, hi)), ("pixel", (g, b))):
        t = gpu_time(lambda a=args_, m=norm: K.fuse(*a, norm=m))
        bw = fused_bytes / t
        row(
            f"fuse {norm} (CuPy fused)",
            t,
            px,
            extra=f"{bw / 1e9:7.1f} GB/s = {100 * bw / copy_bw:5.1f}% of copy",
        )
    t = gpu_time(lambda: K.dissimilarity_histogram(g, b))
    row("dissimilarity_histogram (CuPy)", t, px)

    try:
        import torch
    except ImportError:
        print("  torch: skipped (not installed)")
        return
    if not torch.cuda.is_available():
        print("  torch: skipped (no CUDA in torch)")
        return
    tg, tb = torch.as_tensor(g, device="cuda"), torch.as_tensor(b, device="cuda")
    tlo, thi = torch.as_tensor(lo, device="cuda"), torch.as_tensor(hi, device="cuda")

    def torch_fuse() -> Any:
        d = (tg[None] - tb).abs().sum(dim=1)  # [N, h, w]
        nrm = (d - tlo[:, None, None]) / ((thi - tlo)[:, None, None] + 1e-8)
        nrm = nrm.clamp(0.1, 1.0)
        kept = torch.where(nrm > 0.5, nrm, torch.zeros_like(nrm))
        score, idx = kept.max(dim=0)
        winner = torch.where(score > 0, idx + 1, torch.zeros_like(idx)).to(torch.uint8)
        collage = torch.gather(tb, 0, idx[None, None].expand(1, c, s, s))[0] * (score > 0)
        return winner, score, collage

    t_torch = gpu_time(torch_fuse)
    t_fused = gpu_time(lambda: K.fuse(g, b, lo, hi))
    row("fuse band (plain torch ops)", t_torch, px)
    row("fuse band (CuPy fused)", t_fused, px, t_torch, "vs torch")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=2048, help="tile side in pixels")
    parser.add_argument("--bands", type=int, default=8, help="number of bands N")
    parser.add_argument("--channels", type=int, default=1, help="feature channels C")
    parser.add_argument("--repeat", type=int, default=9, help="timed runs of each Numba kernel")
    parser.add_argument("--oracle-repeat", type=int, default=2, help="timed runs of each oracle")
    parser.add_argument("--gpu-repeat", type=int, default=50, help="timed runs of each GPU kernel")
    parser.add_argument("--copy-mib", type=int, default=1024, help="buffer size of the copy test")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU section")
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU section")
    args = parser.parse_args()
    if not args.no_cpu:
        cpu_section(args)
    if not args.no_gpu:
        gpu_section(args)


if __name__ == "__main__":
    main()
