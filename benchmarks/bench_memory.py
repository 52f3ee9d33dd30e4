"""Peak host memory of an end-to-end run does not grow with the scan's size.

Runs ``tilex run`` end to end (statistics pass with the default sample, then
the tiled pass into OME-Zarr on disk) on a scan and on one four times larger
(twice each side), each in a fresh subprocess, and prints both peak resident
memories, their ratio (goal: within 10 %) and the throughput. Synthesis is
not timed.

Each run is started by a small launcher process (a fresh parent) that reports
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` after its only child ends: the
kernel's exact high-water mark of the run. This script also samples the
run's RSS with psutil (every 20 ms) as a cross-check.

Both scans should be larger than one output write unit (an OME-Zarr shard,
4096 px) on each side, so that the one partial unit per pyramid level the
sink holds is full size in both runs; otherwise the smaller scan's clipped
units make its peak smaller for reasons unrelated to streaming. ``--unit``
shrinks the write unit (through the Python API: the CLI keeps 4096) so the
same check fits a slow machine at a smaller scale; the table says which.

Run::

    .venv/bin/python benchmarks/bench_memory.py                                  # 4608^2 and 9216^2
    .venv/bin/python benchmarks/bench_memory.py --sizes 2304x2304,4608x4608 --unit 1024   # 2-core CPU
    .venv/bin/python benchmarks/bench_memory.py --device cuda --sizes 9216x9216,18432x18432

Timings and memory are printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RssSampler,
    describe_device,
    fmt,
    parse_size,
    print_table,
    synth_scan,
)

DEFAULT_UNIT = 4096  # OmeZarrSink's write unit (shard side), what `tilex run` uses
GOAL = 1.10

# The fresh parent of one run: starts it, waits, reports its children's peak RSS.
LAUNCHER = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
rc = subprocess.call(sys.argv[1:])
print("BENCH_LAUNCHER " + json.dumps({
    "rc": rc, "wall_s": time.perf_counter() - start,
    "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
}), flush=True)
"""

# A run through the Python API (for a write unit other than the CLI's).
API_CHILD = r"""
import json, sys
from tilex.device import tune_host_allocator
tune_host_allocator()  # as `tilex run` does: the allocator is an explicit opt-in of the process
from tilex.job import run
from tilex.omezarr import OmeZarrSink
manifest, out, device, tile, precision, unit = sys.argv[1:7]
sink = OmeZarrSink(out, unit=int(unit), chunk=min(512, int(unit)), overwrite=True)
report = run(manifest, sink, device=device, tile=int(tile) or None, precision=precision)
print("BENCH_TILEX " + json.dumps({"timings": report.timings}), flush=True)
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--sizes",
        default="4608x4608,9216x9216",
        help="two scan sizes HxW, the second normally 2x each side (default 4608x4608,9216x9216)",
    )
    p.add_argument("--bands", type=int, default=8, help="number of bands (default 8)")
    p.add_argument("--tile", type=int, default=0, help="tile core in px (default: the engine's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<i> (default cpu)")
    p.add_argument("--precision", default="fp32", help="encoder precision (default fp32)")
    p.add_argument(
        "--unit",
        type=int,
        default=DEFAULT_UNIT,
        help=f"output write unit / shard side (default {DEFAULT_UNIT}; another value runs through the API)",
    )
    p.add_argument(
        "--via",
        choices=["auto", "cli", "api"],
        default="auto",
        help="run `tilex run` (cli) or tilex.job.run in a child (api); auto: cli when it works",
    )
    p.add_argument(
        "--out-dir", default=None, help="folder for scans and outputs (default: temporary)"
    )
    p.add_argument(
        "--keep", action="store_true", help="keep scans and outputs (kept scans are reused)"
    )
    p.add_argument(
        "--timeout", type=float, default=1800, help="seconds allowed per run (default 1800)"
    )
    args = p.parse_args(argv)
    args.sizes = [parse_size(s) for s in args.sizes.split(",")]
    if len(args.sizes) < 2:
        p.error("--sizes needs at least two sizes")
    return args


def tilex_script() -> str | None:
    path = Path(sys.executable).with_name("tilex")
    return str(path) if path.exists() else shutil.which("tilex")


def cli_usable() -> str | None:
    """``None`` when ``tilex run`` can run here, else why not."""
    if tilex_script() is None:
        return "no `tilex` command next to this python"
    import tilex

    if not hasattr(tilex, "run"):  # cli/run.py calls tilex.run(...)
        return "`tilex run` calls tilex.run, which tilex/__init__.py does not export"
    return None


def make_scan(root: Path, size: tuple[int, int], bands: int) -> tuple[Path, float]:
    """Synthesise a scan (its seconds returned, not counted), or reuse a kept one."""
    scan_dir = root / f"scan-{size[0]}x{size[1]}-{bands}b"
    params = scan_dir / "synth.json"
    if params.is_file():
        old = json.loads(params.read_text())
        if tuple(old.get("size", ())) == tuple(size) and old.get("bands") == bands:
            return scan_dir / "scan.json", 0.0
    start = time.perf_counter()
    manifest = synth_scan(scan_dir, size, bands, overwrite=True)
    return manifest, time.perf_counter() - start


def stats_sample_of(out: Path) -> float | None:
    """The statistics sample a finished run recorded in its ``tilex.json``."""
    try:
        return float(json.loads((out / "tilex.json").read_text())["parameters"]["stats_sample"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _kill_tree(pid: int) -> None:
    """Kill the launcher ``pid`` and the run it started (this script's own children only)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        procs = [*parent.children(recursive=True), parent]
    except psutil.Error:
        return
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()


def run_one(cmd: list[str], timeout: float) -> dict:
    """Run ``cmd`` under the launcher; its peak RSS two ways, wall time, output."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, *cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sampler = RssSampler(proc.pid, children=True, include_self=False).start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        out, _ = proc.communicate()
        out += f"\n(timed out after {timeout:.0f} s)"
    except BaseException:  # interrupted: leave no run behind
        _kill_tree(proc.pid)
        raise
    finally:
        sampler.stop()
    result: dict = {"sampled_mb": sampler._peak / 1e6, "output": out}
    for line in out.splitlines():
        if line.startswith("BENCH_LAUNCHER "):
            result.update(json.loads(line.split(" ", 1)[1]))
        elif line.startswith("BENCH_TILEX "):
            result.update(json.loads(line.split(" ", 1)[1]))
    match = re.search(r"in ([0-9.]+) s: ([0-9.]+) Mpx/s \(scan pixels\)", out)
    if match:  # `tilex run` prints its own total
        result.setdefault("timings", {"total_s": float(match.group(1))})
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # `timeout` sends SIGTERM: unwind, so the run in flight is killed and the scans removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    via = args.via
    why_not_cli = cli_usable()
    if via == "auto":
        via = "cli" if why_not_cli is None and args.unit == DEFAULT_UNIT else "api"
        if why_not_cli and args.unit == DEFAULT_UNIT:
            print(f"note: {why_not_cli}; running tilex.job.run in a child process instead")
    if via == "cli" and args.unit != DEFAULT_UNIT:
        print(
            f"--unit {args.unit} needs the API (the CLI writes {DEFAULT_UNIT}-px shards)",
            file=sys.stderr,
        )
        return 2
    if via == "cli" and why_not_cli:
        print(f"--via cli: {why_not_cli}", file=sys.stderr)
        return 2
    device_name = describe_device(args.device)
    print(
        f"tilex memory benchmark: sizes {', '.join(f'{h}x{w}' for h, w in args.sizes)}, {args.bands} bands, "
        f"device {args.device} ({device_name}), write unit {args.unit} px, via {via}, "
        f"statistics sample: default"
    )
    for h, w in args.sizes:
        if min(h, w) <= args.unit:
            print(f"warning: {h}x{w} is not larger than one {args.unit}-px write unit on each side")

    root = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="tilex-mem-"))
    root.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for size in args.sizes:
            manifest, synth_s = make_scan(root, size, args.bands)
            print(
                f"scan {size[0]}x{size[1]}: "
                + (f"synthesised in {synth_s:.1f} s (not timed)" if synth_s else "reused"),
                flush=True,
            )
            out = root / f"out-{size[0]}x{size[1]}"
            if via == "cli":
                cmd = [
                    tilex_script(),
                    "-q",
                    "run",
                    str(manifest),
                    "-o",
                    str(out),
                    "--device",
                    args.device,
                    "--precision",
                    args.precision,
                    "--overwrite",
                ]
                if args.tile:
                    cmd += ["--tile", str(args.tile)]
            else:
                if out.exists():
                    shutil.rmtree(out)
                cmd = [
                    sys.executable,
                    "-c",
                    API_CHILD,
                    str(manifest),
                    str(out),
                    args.device,
                    str(args.tile),
                    args.precision,
                    str(args.unit),
                ]
            r = run_one(cmd, args.timeout)
            r["size"] = size
            r["sample"] = stats_sample_of(out)
            results.append(r)
            ok = r.get("rc") == 0
            print(
                f"  rc {r.get('rc')}, wall {r.get('wall_s', float('nan')):.1f} s, "
                f"peak RSS {r.get('maxrss_kb', 0) / 1e3:.0f} MB (ru_maxrss), "
                f"{r['sampled_mb']:.0f} MB (sampled)",
                flush=True,
            )
            if not ok:
                print(
                    "  run failed; its output ends:\n    "
                    + "\n    ".join(r["output"].splitlines()[-15:])
                )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")

    rows = []
    for r in results:
        h, w = r["size"]
        px = h * w
        total = r.get("timings", {}).get("total_s")
        rows.append(
            [
                f"{h}x{w}",
                fmt(px / 1e6, 1),
                fmt(r["sample"], 2),
                fmt(px / 1e6 / r["wall_s"], 3) if r.get("wall_s") else "-",
                fmt(px / 1e6 / total, 3) if total else "-",
                fmt(r.get("maxrss_kb", 0) / 1e3, 0) if "maxrss_kb" in r else "-",
                fmt(r["sampled_mb"], 0),
                str(r.get("rc")),
            ]
        )
    print()
    print_table(
        [
            "scan",
            "Mpx",
            "stats sample",
            "Mpx/s (process wall)",
            "Mpx/s (tilex total_s)",
            "peak RSS MB (ru_maxrss)",
            "peak RSS MB (sampled)",
            "rc",
        ],
        rows,
        title=(
            f"tilex end to end, one fresh process per scan: {args.bands} bands, device {args.device} "
            f"({device_name}), write unit {args.unit} px, via {via}"
        ),
    )
    good = [r for r in results if r.get("rc") == 0 and "maxrss_kb" in r]
    if len(good) >= 2:
        small, large = good[0], good[-1]
        ratio = large["maxrss_kb"] / small["maxrss_kb"]
        ratio_s = large["sampled_mb"] / small["sampled_mb"]
        grow = (large["size"][0] * large["size"][1]) / (small["size"][0] * small["size"][1])
        verdict = "meets" if ratio <= GOAL else "BELOW"
        print(
            f"peak RSS ratio {large['size'][0]}x{large['size'][1]} / {small['size'][0]}x{small['size'][1]} "
            f"(scan {grow:.1f}x larger): {ratio:.3f} ru_maxrss, {ratio_s:.3f} sampled "
            f"({verdict} the goal <= {GOAL:.2f})"
        )
    else:
        print("peak RSS ratio: not available (a run failed)")
    return 0 if all(r.get("rc") == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
