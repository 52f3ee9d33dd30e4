"""The calibration fit: its cost with and without keeping the sampled squares between passes.

The fit (:func:`tilex.calibration.fit_scan`) makes several passes over the
statistics' sampled squares (5 for the affine model, 5 more for the colour
table). It fits over every k-th square so that their features fit in
``CACHE_BYTES`` and keeps them between passes; this benchmark times the
default model's fit on those squares as shipped and with the cache off (every
pass reads and decodes every square again), on a ``tilex synth`` scan written
as tiled zstd BigTIFFs, counts the reads, and checks that both give the same
model. A third row times the fit without its square cut (``SQUARE_MIN`` out of
reach): what leaving out whole squares costs (each refit's histogram pass also
takes every square's median residual).

Run::

    .venv/bin/python benchmarks/bench_calibration.py --size 4096x4096 --bands 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name, parse_size, print_table, synth_scan  # noqa: E402

import tilex.calibration.fitting as calibration  # noqa: E402
from tilex.scan import open_scan  # noqa: E402
from tilex.stats import StatsSpec, sample_regions  # noqa: E402


def timed_fit(scan, regions, repeats: int) -> tuple[float, calibration.Calibration, float]:
    """The fastest of ``repeats`` fits over exactly ``regions``, its model, reads per square."""
    best, model, reads = float("inf"), None, []
    read_region = scan.read_region
    scan.read_region = lambda *r: reads.append(r) or read_region(*r)
    try:
        for _ in range(repeats):
            reads.clear()
            start = time.perf_counter()
            model = calibration.fit_squares(scan, calibration.CalibrationSpec(), regions)
            best = min(best, time.perf_counter() - start)
    finally:
        scan.read_region = read_region
    return best, model, len(reads) / max(len(regions), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4096x4096", help="scan size HxW (default 4096x4096)")
    parser.add_argument("--bands", type=int, default=8, help="bands (default 8)")
    parser.add_argument("--repeats", type=int, default=2, help="fits per row; the fastest counts")
    args = parser.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="tilex-bench-calibration-") as tmp:
        manifest = synth_scan(Path(tmp) / "scan", size, args.bands)
        scan = open_scan(manifest)
        shape = tuple(scan.shape)
        sampled = sample_regions(shape, StatsSpec().fraction_for(shape))
        spec = calibration.CalibrationSpec()
        regions = sampled[:: calibration.fit_stride(sampled, spec, scan.n_bands)]  # as fit_scan
        cached_s, cached, cached_reads = timed_fit(scan, regions, args.repeats)
        shipped = calibration.CACHE_BYTES
        calibration.CACHE_BYTES = 0
        try:
            uncached_s, uncached, uncached_reads = timed_fit(scan, regions, args.repeats)
        finally:
            calibration.CACHE_BYTES = shipped
        shipped_min = calibration.SQUARE_MIN
        calibration.SQUARE_MIN = 1 << 62
        try:
            uncut_s, _, uncut_reads = timed_fit(scan, regions, args.repeats)
        finally:
            calibration.SQUARE_MIN = shipped_min
    assert cached == uncached and cached.table == uncached.table, "the cache changed the model"
    print(f"# calibration fit ({spec.mode}) on {cpu_name()}; {size[0]}x{size[1]}, {args.bands} "
          f"bands, {len(regions)} of {len(sampled)} sampled squares of 64 px")  # fmt: skip
    print_table(
        ["fit", "seconds", "reads per square"],
        [
            ["squares kept between passes (shipped)", f"{cached_s:.2f}", f"{cached_reads:g}"],
            [
                "every pass reads again (CACHE_BYTES = 0)",
                f"{uncached_s:.2f}",
                f"{uncached_reads:g}",
            ],
            ["without the square cut (pixel cut only)", f"{uncut_s:.2f}", f"{uncut_reads:g}"],
        ],  # fmt: skip
    )
    print("same model: yes")


if __name__ == "__main__":
    main()
