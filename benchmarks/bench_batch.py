"""Batch benchmark: a campaign as one ``tilex batch`` against one ``tilex run`` process per scan.

Synthesises ``--small`` scans of ``--small-size`` (default 20 of 512x512) and
``--medium`` scans of ``--medium-size`` (default 4 of 2048x2048), ``--bands``
bands each (``tilex.synth``, not timed; kept scans are reused with
``--keep``), runs one small scan untimed (so that Numba's kernel cache is
filled), then, for each set, times on this machine, in this run:

1. ``separate``: ``tilex -q run SCAN -o OUT`` as one new process per scan,
   one after another (a shell loop);
2. ``batch``: ``tilex -q batch SCAN... -o OUTDIR``, one process.

Columns: ``wall`` is the whole set, end to end, including every process's
start; ``in runs`` sums the time spent inside :func:`tilex.run` (what
``tilex run`` prints as ``in X s``, and each scan's ``seconds`` in
``batch.json``); ``overhead / scan`` is ``(wall - in runs) / scans``: what a
scan costs outside its run (a new interpreter, torch, Numba's cached kernels,
zarr) for ``separate``, the batch's own bookkeeping for ``batch``. The
arrays of both modes are compared chunk by chunk (decoded bytes) and the
benchmark says whether they are the same. Timings are printed, never asserted.

Run::

    .venv/bin/python benchmarks/bench_batch.py                        # 20 x 512^2 + 4 x 2048^2, ~15 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_batch.py --small 10 --medium 2  # a shorter run
    .venv/bin/python benchmarks/bench_batch.py --medium 0 --keep      # small scans only, keep them
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import describe_device, parse_size, print_table, synth_scan  # noqa: E402

_RUN_SECONDS = re.compile(r"in ([0-9.]+) s:")
_KEYS = ("set", "mode", "wall_s", "in_runs_s", "per_scan_s", "overhead_per_scan_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=20, help="small scans (default 20)")
    parser.add_argument("--small-size", default="512x512", help="HxW of a small scan")
    parser.add_argument("--medium", type=int, default=4, help="medium scans (default 4)")
    parser.add_argument("--medium-size", default="2048x2048", help="HxW of a medium scan")
    parser.add_argument("--bands", type=int, default=8, help="bands per scan (default 8)")
    parser.add_argument("--device", default="cpu", help="tilex's --device (default cpu)")
    parser.add_argument(
        "--out-dir", default=None, help="where scans and outputs go (default: a temp dir)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep scans and outputs (kept scans are reused)"
    )
    parser.add_argument("--json", default=None, help="also write the rows as JSON to this path")
    args = parser.parse_args()

    root = Path(args.out_dir or tempfile.mkdtemp(prefix="tilex-bench-batch-"))
    root.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    print(
        f"device: {describe_device(args.device)}; cores available: {len(os.sched_getaffinity(0))}; "
        f"load average at start: {load:.2f}"
    )
    sets = [
        ("small", args.small, parse_size(args.small_size)),
        ("medium", args.medium, parse_size(args.medium_size)),
    ]
    rows, ratios, records = [], [], []
    try:
        # not timed: fills Numba's kernel cache, so that no mode's first scan compiles them
        warm = synth_scan(root / "scans" / "warm-up", (128, 128), 2, overwrite=True).parent
        shutil.rmtree(root / "warm-up-out", ignore_errors=True)
        _tilex("run", str(warm), "-o", str(root / "warm-up-out"), "--device", args.device)
        for label, count, size in sets:
            if count < 1:
                continue
            scans = _scans(root / "scans", label, count, size, args.bands)
            separate = _separate(scans, root / f"{label}-separate", args.device)
            batch = _batch(scans, root / f"{label}-batch", args.device)
            same = sum(
                _hashes(root / f"{label}-separate" / s.name)
                == _hashes(root / f"{label}-batch" / s.name)
                for s in scans
            )
            title = f"{count} x {size[0]}x{size[1]}, {args.bands} bands"
            for mode, (wall, inside) in (("separate", separate), ("batch", batch)):
                row = [title, mode, wall, inside, wall / count, (wall - inside) / count]
                rows.append(row)
                records.append(dict(zip(_KEYS, row, strict=True)))
            saved = (separate[0] - batch[0]) / count
            ratios.append([title, batch[0] / separate[0], saved, f"{same} of {count}"])
    finally:
        if not args.keep and args.out_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print_table(
        ["scans", "mode", "wall s", "in runs s", "per scan s", "overhead / scan s"],
        rows,
        title="one tilex batch vs one tilex run process per scan",
    )
    print()
    print_table(["scans", "batch / separate (wall)", "saved / scan s", "same arrays"], ratios)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1) + "\n")


def _scans(root: Path, label: str, count: int, size: tuple[int, int], bands: int) -> list[Path]:
    scans = []
    for i in range(count):
        folder = root / f"{label}-{size[0]}x{size[1]}-{bands}b-{i:03d}"
        if not (folder / "scan.json").is_file():
            synth_scan(folder, size, bands, seed=1000 + i, overwrite=True)
        scans.append(folder)
    return scans


def _tilex(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "tilex.cli", "-q", *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return done


def _separate(scans: list[Path], outdir: Path, device: str) -> tuple[float, float]:
    """Wall time of one ``tilex run`` process per scan, and the sum of their ``in X s``."""
    shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True)
    inside = 0.0
    start = time.perf_counter()
    for scan in scans:
        done = _tilex("run", str(scan), "-o", str(outdir / scan.name), "--device", device)
        inside += float(_RUN_SECONDS.search(done.stdout).group(1))
    return time.perf_counter() - start, inside


def _batch(scans: list[Path], outdir: Path, device: str) -> tuple[float, float]:
    """Wall time of one ``tilex batch`` over the scans, and the sum of its scans' seconds."""
    shutil.rmtree(outdir, ignore_errors=True)
    start = time.perf_counter()
    _tilex("batch", *map(str, scans), "-o", str(outdir), "--device", device)
    wall = time.perf_counter() - start
    record = json.loads((outdir / "batch.json").read_text())
    if any(s["state"] != "done" for s in record["scans"]):
        raise SystemExit(f"tilex batch did not compute every scan: {record['scans']}")
    return wall, sum(s["seconds"] for s in record["scans"])


def _hashes(out: Path) -> dict[str, str]:
    """sha256 of every decoded chunk of every level of every image."""
    from tilex.omezarr import chunk_digests

    return chunk_digests(out)


if __name__ == "__main__":
    main()
