"""Museum scale: a scan written as a scanner delivers it, run end to end, killed once, resumed.

For each size (``--size``, default 32768x32768 = 1.07 gigapixels, 8 bands;
with ``--ladder`` also 1/16 and 1/4 of its pixels, so growth shows):

1. **Scan.** ``tilex.synth`` writes the visible RGB and one file per band as
   tiled, compressed BigTIFFs (512 px tiles, zstd), streamed tile by tile in
   a child process whose wall time and peak RSS are reported (it is the one
   writer of the project; its memory is bounded by the tile, the band count
   and its threads). A kept scan of the same size, bands, tiling and
   compression is reused.
2. **Run.** ``tilex -q run SCAN -o OUT`` with the defaults, in a fresh
   process, sampled from here every ``--interval`` s: RSS (psutil, the
   process tree), open file descriptors and threads, scratch disk
   (``OUT/.pyramid`` spills + ``OUT/.journal`` markers) and the output's
   size. Its exact peak RSS is the kernel's (``os.wait4`` rusage). The run
   goes through a small driver (``--child-run``) that calls the same
   ``tilex.cli.main`` and records, without changing what runs, each phase's
   wall time (calibration fit, statistics pass, tiled pass, final close) and
   busy seconds per stage (read, encode, fuse, level-0 writes, pyramid),
   summed over threads, plus every checkpoint of :mod:`tilex.hooks` (the
   units committed, with the allocated Python memory blocks and RSS at each
   level-0 unit). ``--plain`` runs the ``tilex`` command itself instead (then only
   ``tilex.json``'s timings).
3. **Kill and resume** (``--kill top``: the largest size; ``all``; ``none``):
   once ``--kill-at`` (0.5) of the level-0 write units are journaled, the
   run gets SIGKILL from here (not a failpoint: a real kill at whatever it
   was doing). The journal and every array file's inode, mtime and size are
   snapshotted, then ``tilex run ... --resume`` finishes it. **No finished
   unit recomputed** is checked two ways: no file of a unit journaled before
   the kill changed, and the resumed process committed exactly the units
   the journal lacked (its own checkpoint counts). A scan of one write unit
   has no middle to kill in: use ``--unit``.
4. ``tilex validate OUT``.

One table: size, per-phase wall, busy seconds, Mpx/s (scan pixels over the
process walls, imports included), peak RSS, peak scratch disk, peak open
files, output size, files written, pyramid levels, ``tilex.json`` size, the
kill/resume check and validation. ``--plot`` writes a log-log PNG of time and
peak RSS against pixels (matplotlib: the ``bench`` extra), with the largest
run's RSS and scratch over time. ``--project HxW`` prints the time projected
for a larger scan from the per-pixel rates measured, labelled as a projection.

Run::

    .venv/bin/python benchmarks/bench_gigapixel.py                          # 1 Gpx: hours on 2 CPU cores
    .venv/bin/python benchmarks/bench_gigapixel.py --ladder --out-dir /big/disk --keep
    .venv/bin/python benchmarks/bench_gigapixel.py --size 2048 --ladder --unit 512   # a few minutes

Disk: at the 4096x4096 trial the scan took 16 MB and the output 7.4 MB per
Mpx, so about 17 GB and 8 GB at 32768x32768 (with ``--ladder``, a third more);
``--out-dir`` should name a disk with room. Timings are printed, never
asserted. Measured figures and the projection: ``docs/gigapixel.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name, fmt, parse_size, print_table  # noqa: E402

HERE = Path(__file__).resolve()
MB = 1e6
SCRATCH_NAMES = (".pyramid", ".journal")
METADATA_NAMES = {"zarr.json", ".zarray", ".zgroup", ".zattrs"}

# ----------------------------------------------------------------------------- child: synth

SYNTH_CHILD = r"""
import json, sys, time
from tilex.synthetic import synth
out, h, w, bands, tile, compression = sys.argv[1:7]
start = time.perf_counter()
synth(out, size=(int(h), int(w)), bands=int(bands), tile=int(tile), compression=compression,
      overwrite=True)
print("BENCH_SYNTH " + json.dumps({"seconds": time.perf_counter() - start}), flush=True)
"""


# ----------------------------------------------------------------------------- child: run


class Probes:
    """Phase walls, busy seconds per stage and checkpoint counts of one ``tilex run`` process.

    Class attributes of tilex are wrapped (the code that runs is unchanged);
    the record is rewritten atomically every second, so a SIGKILLed run
    leaves what it had done up to a second before its death.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.start = time.perf_counter()
        self.phases: list[str] = ["setup"]
        self.open: dict[int, tuple[str, float]] = {}  # phases running now: a killed run's count too
        self.phase_s: dict[str, float] = {}
        self.phase_calls: dict[str, int] = {}
        self.busy: dict[str, float] = {}  # "phase/stage"
        self.calls: dict[str, int] = {}
        self.checkpoints: dict[str, int] = {}
        self.units: list[list[float]] = []  # [level-0 units committed, allocated blocks, rss MB, s]
        self._local = threading.local()
        self._stop = threading.Event()

    # -- wrapping

    def _phase(self, owner: Any, attr: str, name: str) -> None:
        original = getattr(owner, attr)
        probes = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            probes.phases.append(name)
            t0 = time.perf_counter()
            with probes.lock:
                probes.open[len(probes.phases)] = (name, t0)
            try:
                return original(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                with probes.lock:
                    probes.open.pop(len(probes.phases), None)
                probes.phases.pop()
                with probes.lock:
                    probes.phase_s[name] = probes.phase_s.get(name, 0.0) + dt
                    probes.phase_calls[name] = probes.phase_calls.get(name, 0) + 1

        setattr(owner, attr, wrapper)

    def _busy(self, owner: Any, attr: str, stage: str, key: Any = None) -> None:
        original = getattr(owner, attr)
        probes = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            active = probes._local.__dict__.setdefault("active", set())
            if stage in active:  # nested (encode -> encode_bands): the outer call counts
                return original(*args, **kwargs)
            active.add(stage)
            phase = probes.phases[-1]
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                active.discard(stage)
                name = f"{phase}/{stage if key is None else key(args, stage)}"
                with probes.lock:
                    probes.busy[name] = probes.busy.get(name, 0.0) + dt
                    probes.calls[name] = probes.calls.get(name, 0) + 1

        setattr(owner, attr, wrapper)

    def install(self) -> Probes:
        import tilex.kernels

        import tilex.calibration
        import tilex.hooks
        import tilex.job
        from tilex.encoder.runtime import Encoder
        from tilex.engine.pipeline import Engine
        from tilex.omezarr.layout import OutputLayout
        from tilex.omezarr.sink import OmeZarrSink
        from tilex.scan.scan import Scan

        self._phase(tilex.calibration, "fit_scan", "calibration")  # imported at call time
        self._phase(tilex.job, "measure_statistics", "statistics")
        self._phase(tilex.job, "log_work_ahead", "estimate")
        self._phase(Engine, "run", "tiles")
        self._phase(OmeZarrSink, "close", "close")
        self._busy(Scan, "read_region", "read")
        self._busy(Encoder, "encode", "encode")
        self._busy(Encoder, "encode_bands", "encode")
        self._busy(tilex.calibration.Calibration, "predict", "predict")
        self._busy(tilex.kernels, "fuse", "fuse")
        self._busy(tilex.kernels, "overlay", "fuse")
        self._busy(OutputLayout, "reduce", "pyramid")
        self._busy(OutputLayout, "assemble_parent", "pyramid")
        self._busy(
            OutputLayout,
            "commit_unit",
            "commit",
            key=lambda args, stage: "write" if args[1] == 0 else "pyramid",
        )
        previous = tilex.hooks.install(None)

        def listener(name: str) -> None:
            if previous is not None:  # a failpoint set by TILEX_FAILPOINT keeps working
                previous(name)
            with self.lock:
                self.checkpoints[name] = self.checkpoints.get(name, 0) + 1
                done = self.checkpoints.get("unit", 0)
            if name == "unit":
                self.units.append(
                    # not gc.get_objects(): its list holds a reference to every tuple another
                    # thread is still building, and CPython then fails that thread's resize
                    # (SystemError, 'bad argument to internal function': it broke a reader in
                    # the first 1-Gpx run); allocated blocks count the same growth, no references
                    [
                        done,
                        sys.getallocatedblocks(),
                        _self_rss_mb(),
                        time.perf_counter() - self.start,
                    ]
                )

        tilex.hooks.install(listener)
        threading.Thread(target=self._loop, name="bench-probes", daemon=True).start()
        return self

    # -- record

    def record(self) -> dict:
        with self.lock:
            now = time.perf_counter()
            phase_s = dict(self.phase_s)
            for name, t0 in self.open.values():  # still running (a SIGKILL leaves them so)
                phase_s[name] = phase_s.get(name, 0.0) + now - t0
            return {
                "wall_s": now - self.start,
                "phase_s": phase_s,
                "phase_calls": dict(self.phase_calls),
                "busy_s": dict(self.busy),
                "calls": dict(self.calls),
                "checkpoints": dict(self.checkpoints),
                "units": [list(u) for u in self.units],
            }

    def dump(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.record()))
        os.replace(tmp, self.path)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(OSError):
                self.dump()

    def close(self) -> None:
        self._stop.set()
        self.dump()


def _self_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB
    except (OSError, ValueError, IndexError):
        return float("nan")


def child_run(record: str, argv: list[str]) -> int:
    """``tilex ARGV`` in this process under :class:`Probes` (the ``--child-run`` mode)."""
    probes = Probes(Path(record)).install()
    from tilex.cli.main import main

    code: Any = 0
    try:
        main(args=argv, prog_name="tilex")
    except SystemExit as done:
        code = done.code
    finally:
        probes.close()
    return code if isinstance(code, int) else (0 if code is None else 1)


# ----------------------------------------------------------------------------- parent: one process


def tree_bytes(path: Path) -> tuple[int, int]:
    """Bytes and files under ``path`` (0, 0 when it does not exist); races are ignored."""
    total = files = 0
    stack = [path]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    total += entry.stat(follow_symlinks=False).st_size
                    files += 1
            except OSError:
                continue
    return total, files


def level0_markers(out: Path) -> int:
    try:
        return sum(1 for n in os.listdir(out / ".journal") if n.startswith("L0-"))
    except OSError:
        return 0


@dataclass
class Process:
    """What one monitored process did."""

    cmd: list[str]
    rc: int | None = None
    wall_s: float = 0.0
    maxrss_mb: float = float("nan")  # the kernel's peak (wait4)
    cpu_s: float = float("nan")  # user + system (wait4)
    sampled_rss_mb: float = 0.0
    peak_scratch_mb: float = 0.0
    peak_fds: int = 0
    peak_threads: int = 0
    killed_at: dict | None = None
    timed_out: bool = False
    samples: list[list[float]] = field(default_factory=list)  # t, rss MB, scratch MB, out MB
    log: str = ""


def monitor(
    cmd: list[str],
    out: Path,
    log_path: Path,
    *,
    interval: float,
    timeout: float,
    kill_units: int | None = None,
    t_offset: float = 0.0,
) -> Process:
    """Run ``cmd``, sample it, SIGKILL it once ``kill_units`` level-0 units are journaled."""
    import psutil

    result = Process(cmd)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    stop = threading.Event()

    def sample() -> None:
        ps = psutil.Process(proc.pid)
        last_out = -math.inf
        out_mb = 0.0
        while not stop.is_set():
            now = time.perf_counter() - start
            rss = fds = threads = 0
            with contextlib.suppress(psutil.Error):
                for p in [ps, *ps.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        rss += p.memory_info().rss
                        fds += p.num_fds()
                        threads += p.num_threads()
            scratch = sum(tree_bytes(out / name)[0] for name in SCRATCH_NAMES)
            if now - last_out >= 5 * interval:  # the whole output: less often
                out_mb, last_out = tree_bytes(out)[0] / MB, now
            result.sampled_rss_mb = max(result.sampled_rss_mb, rss / MB)
            result.peak_scratch_mb = max(result.peak_scratch_mb, scratch / MB)
            result.peak_fds = max(result.peak_fds, fds)
            result.peak_threads = max(result.peak_threads, threads)
            result.samples.append([t_offset + now, rss / MB, scratch / MB, out_mb])
            if now > timeout and not result.timed_out:
                result.timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            if kill_units is not None and result.killed_at is None:
                done = level0_markers(out)
                if done >= kill_units:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    result.killed_at = {"s": now, "level0_seen": done}
            stop.wait(interval)

    thread = threading.Thread(target=sample, name="bench-monitor", daemon=True)
    thread.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        raise
    finally:
        stop.set()
        thread.join()
    result.wall_s = time.perf_counter() - start
    result.rc = proc.returncode = os.waitstatus_to_exitcode(status)
    result.maxrss_mb = usage.ru_maxrss * 1024 / MB  # Linux: KiB
    result.cpu_s = usage.ru_utime + usage.ru_stime
    result.log = log_path.read_text(errors="replace")[-4000:]
    return result


# ----------------------------------------------------------------------------- resume check


def unit_of(rel: Path) -> tuple[int, int, int] | None:
    """``(level, uy, ux)`` of a Zarr v3 shard file ``<image>/<level>/c/[ch/]uy/ux``."""
    parts = rel.parts
    if "c" not in parts:
        return None
    i = parts.index("c")
    try:
        return int(parts[i - 1]), int(parts[-2]), int(parts[-1])
    except (ValueError, IndexError):
        return None


def array_files(out: Path) -> dict[str, tuple[int, int, int]]:
    """Every data file of the output's images: relative path -> (inode, mtime ns, size)."""
    found = {}
    for root, _, files in os.walk(out):
        rel_root = Path(root).relative_to(out)
        if rel_root.parts and rel_root.parts[0] in SCRATCH_NAMES:
            continue
        for name in files:
            if name in METADATA_NAMES or name.endswith(".partial") or name == "tilex.json":
                continue
            st = os.stat(Path(root) / name)
            found[str(rel_root / name)] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return found


def journal_units(out: Path) -> set[tuple[int, int, int]]:
    units = set()
    with contextlib.suppress(OSError):
        for name in os.listdir(out / ".journal"):
            if name.startswith("L") and not name.startswith("."):
                level, uy, ux = name[1:].split("-")
                units.add((int(level), int(uy), int(ux)))
    return units


def resume_check(
    before_units: set, before_files: dict, after_files: dict, resumed: dict, n_units: list[int]
) -> dict:
    """Whether the resumed run left every unit journaled before the kill untouched."""
    finished_files = {p: s for p, s in before_files.items() if unit_of(Path(p)) in before_units}
    rewritten = sorted(p for p, s in finished_files.items() if after_files.get(p) != s)
    done0 = sum(1 for u in before_units if u[0] == 0)
    done_up = len(before_units) - done0
    counts = resumed.get("checkpoints", {})
    committed0 = counts.get("unit", 0)
    committed_up = sum(v for k, v in counts.items() if k.startswith("level"))
    expected0 = n_units[0] - done0
    expected_up = sum(n_units[1:]) - done_up
    return {
        "journaled_level0": done0,
        "journaled_above": done_up,
        "level0_units": n_units[0],
        "files_of_journaled_units": len(finished_files),
        "rewritten_files_of_journaled_units": rewritten,
        "resumed_committed_level0": committed0,
        "resumed_committed_above": committed_up,
        "expected_level0": expected0,
        "expected_above": expected_up,
        "statistics_squares_redone": counts.get("stats", 0),
        "calibration_refits": resumed.get("phase_calls", {}).get("calibration", 0),
        "ok": not rewritten and committed0 == expected0 and committed_up == expected_up,
    }


# ----------------------------------------------------------------------------- one size


def make_scan(root: Path, size: tuple[int, int], args: argparse.Namespace) -> tuple[Path, dict]:
    scan_dir = root / f"scan-{size[0]}x{size[1]}-{args.bands}b"
    params = scan_dir / "synth.json"
    if params.is_file():
        old = json.loads(params.read_text())
        same = (old.get("size"), old.get("bands"), old.get("tile"), old.get("compression"))
        if same == ([*size], args.bands, args.tiff_tile, args.compression):
            return scan_dir / "scan.json", {"reused": True}
    cmd = [
        sys.executable,
        "-c",
        SYNTH_CHILD,
        str(scan_dir),
        str(size[0]),
        str(size[1]),
        str(args.bands),
        str(args.tiff_tile),
        args.compression,
    ]
    p = monitor(cmd, scan_dir, root / "synth.log", interval=1.0, timeout=args.timeout)
    if p.rc != 0:
        raise RuntimeError(f"synth failed (rc {p.rc}):\n{p.log}")
    disk, files = tree_bytes(scan_dir)
    return scan_dir / "scan.json", {
        "reused": False,
        "wall_s": p.wall_s,
        "peak_rss_mb": p.maxrss_mb,
        "disk_mb": disk / MB,
        "files": files,
    }


def run_command(args: argparse.Namespace, record: Path, tail: list[str]) -> list[str]:
    if args.plain:
        exe = Path(sys.executable).with_name("tilex")
        return [str(exe) if exe.exists() else "tilex", *tail]
    return [sys.executable, str(HERE), "--child-run", str(record), "--", *tail]


def one_size(root: Path, size: tuple[int, int], args: argparse.Namespace, kill: bool) -> dict:
    from tilex.omezarr.units import UnitGrid
    from tilex.plan import DEFAULT_CHUNK, DEFAULT_UNIT

    h, w = size
    tag = f"{h}x{w}"
    manifest, synth_info = make_scan(root, size, args)
    print(
        f"scan {tag}: "
        + (
            "reused"
            if synth_info["reused"]
            else f"written in {synth_info['wall_s']:.1f} s, peak RSS {synth_info['peak_rss_mb']:.0f} MB, "
            f"{synth_info['disk_mb']:.0f} MB in {synth_info['files']} files"
        ),
        flush=True,
    )
    out = root / f"out-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    grid = UnitGrid.for_shape(size, args.unit or DEFAULT_UNIT, args.chunk or DEFAULT_CHUNK)
    n_units = [len(grid.units(k)) for k in range(grid.levels)]
    options = []
    for flag, value in (("--tile", args.tile), ("--unit", args.unit), ("--chunk", args.chunk)):
        if value:
            options += [flag, str(value)]
    tail = ["-q", "run", str(manifest), "-o", str(out), *options]
    kill_units = None
    if kill:
        if n_units[0] < 2:
            print(
                f"  {tag}: one level-0 write unit, nothing to resume into: not killed (see --unit)"
            )
        else:
            kill_units = max(1, min(n_units[0] - 1, round(args.kill_at * n_units[0])))
    records = [root / f"probes-{tag}-{i}.json" for i in range(2)]
    for r in records:
        r.unlink(missing_ok=True)
    first = monitor(
        run_command(args, records[0], tail),
        out,
        root / f"run-{tag}.log",
        interval=args.interval,
        timeout=args.timeout,
        kill_units=kill_units,
    )
    processes = [first]
    check = None
    if first.killed_at is not None and first.rc == -signal.SIGKILL:
        before_units, before_files = journal_units(out), array_files(out)
        print(
            f"  {tag}: SIGKILL at {first.killed_at['s']:.1f} s with "
            f"{sum(1 for u in before_units if u[0] == 0)} of {n_units[0]} level-0 units journaled; resuming",
            flush=True,
        )
        second = monitor(
            run_command(args, records[1], [*tail, "--resume"]),
            out,
            root / f"resume-{tag}.log",
            interval=args.interval,
            timeout=args.timeout,
            t_offset=first.wall_s,
        )
        processes.append(second)
        resumed = _read_json(records[1]) or {}
        check = resume_check(before_units, before_files, array_files(out), resumed, n_units)
    elif kill_units is not None:
        print(f"  {tag}: the run ended (rc {first.rc}) before it could be killed", flush=True)
    final = processes[-1]
    if final.rc != 0:
        print(f"  {tag}: tilex run failed (rc {final.rc}); its output ends:\n{final.log}")
    validation = validate(out) if final.rc == 0 and not args.no_validate else None
    manifest_path = out / "tilex.json"
    meta = _read_json(manifest_path) or {}
    disk, files = tree_bytes(out)
    return {
        "size": [h, w],
        "pixels": h * w,
        "bands": args.bands,
        "n_units": n_units,
        "levels": len(meta.get("output", {}).get("levels", [])) or grid.levels,
        "stats_sample": meta.get("parameters", {}).get("stats_sample"),
        "state": meta.get("state"),
        "timings": meta.get("timings", {}),
        "synth": synth_info,
        "processes": [_plain(p) for p in processes],
        "probes": [r for r in (_read_json(p) for p in records[: len(processes)]) if r],
        "resume": check,
        "validate": validation,
        "output_mb": disk / MB,
        "files": files,
        "manifest_kb": manifest_path.stat().st_size / 1e3 if manifest_path.exists() else None,
    }


def validate(out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "tilex.cli", "validate", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return {"rc": proc.returncode, "last": lines[-1] if lines else ""}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _plain(p: Process) -> dict:
    return {k: v for k, v in p.__dict__.items() if k != "cmd"} | {"cmd": " ".join(p.cmd)}


# ----------------------------------------------------------------------------- summary


def summarise(r: dict) -> dict:
    """The table's figures of one size: phases and busy seconds summed over its processes."""
    procs, probes = r["processes"], r["probes"]
    wall = sum(p["wall_s"] for p in procs)

    def phase(name: str) -> float | None:
        if not probes:
            return None
        return sum(p["phase_s"].get(name, 0.0) for p in probes)

    def busy(*names: str) -> float | None:
        if not probes:
            return None
        return sum(v for p in probes for k, v in p["busy_s"].items() if k in names)

    tiles, close = phase("tiles"), phase("close")
    if tiles is None:  # --plain: tilex.json's own timings (of the last process only)
        t = r["timings"]
        tiles, close = t.get("tiles_s"), None
        stats, calib = t.get("stats_s"), None
    else:
        tiles = tiles - (close or 0.0)
        stats, calib = phase("statistics"), phase("calibration")
    sample_px = (r["stats_sample"] or 0) * r["pixels"]
    units = [u for p in probes for u in p.get("units", [])]
    return {
        "scan": f"{r['size'][0]}x{r['size'][1]}",
        "mpx": r["pixels"] / 1e6,
        "sample": r["stats_sample"],
        "sample_mpx": sample_px / 1e6,
        "units0": r["n_units"][0],
        "levels": r["levels"],
        "wall_s": wall,
        "cpu_s": sum(p["cpu_s"] for p in procs),
        "mpx_s": r["pixels"] / 1e6 / wall if wall else float("nan"),
        "us_px": wall / r["pixels"] * 1e6,
        "calibration_s": calib,
        "statistics_s": stats,
        "tiles_s": tiles,
        "close_s": close,
        "encode_busy_s": busy("tiles/encode", "tiles/predict"),
        "read_busy_s": busy("tiles/read", "statistics/read", "calibration/read"),
        "write_busy_s": busy("tiles/write"),
        "pyramid_busy_s": busy("tiles/pyramid", "close/pyramid"),
        "peak_rss_mb": max(p["maxrss_mb"] for p in procs),
        "sampled_rss_mb": max(p["sampled_rss_mb"] for p in procs),
        "peak_scratch_mb": max(p["peak_scratch_mb"] for p in procs),
        "peak_fds": max(p["peak_fds"] for p in procs),
        "output_mb": r["output_mb"],
        "files": r["files"],
        "manifest_kb": r["manifest_kb"],
        "objects_first_last": (units[0][1], units[-1][1]) if units else None,
        "resume": r["resume"],
        "validate": r["validate"],
        "killed": len(procs) > 1,
    }


def resume_cell(s: dict) -> str:
    c = s["resume"]
    if c is None:
        return "not killed"
    verdict = "ok" if c["ok"] else "FAILED"
    return (
        f"{verdict}: killed at {c['journaled_level0']}/{c['level0_units']} L0, "
        f"resumed {c['resumed_committed_level0']} L0 + {c['resumed_committed_above']} up, "
        f"{len(c['rewritten_files_of_journaled_units'])} of {c['files_of_journaled_units']} "
        f"finished files rewritten"
    )


HEADER = [
    "scan",
    "Mpx",
    "stats sample",
    "L0 units",
    "levels",
    "wall s",
    "CPU s",
    "Mpx/s",
    "us/px",
    "calibration s",
    "statistics s",
    "tiles s",
    "close s",
    "encode busy s",
    "read busy s",
    "write busy s",
    "pyramid busy s",
    "peak RSS MB",
    "peak scratch MB",
    "peak fds",
    "output MB",
    "files",
    "tilex.json KB",
    "kill + resume",
    "validate",
]


def table_rows(summaries: list[dict]) -> list[list[Any]]:
    rows = []
    for s in summaries:
        v = s["validate"]
        rows.append(
            [
                s["scan"],
                fmt(s["mpx"], 1),
                fmt(s["sample"], 3),
                s["units0"],
                s["levels"],
                fmt(s["wall_s"], 1),
                fmt(s["cpu_s"], 1),
                fmt(s["mpx_s"], 3),
                fmt(s["us_px"], 1),
                fmt(s["calibration_s"], 1),
                fmt(s["statistics_s"], 1),
                fmt(s["tiles_s"], 1),
                fmt(s["close_s"], 2),
                fmt(s["encode_busy_s"], 1),
                fmt(s["read_busy_s"], 1),
                fmt(s["write_busy_s"], 1),
                fmt(s["pyramid_busy_s"], 1),
                fmt(s["peak_rss_mb"], 0),
                fmt(s["peak_scratch_mb"], 1),
                s["peak_fds"],
                fmt(s["output_mb"], 1),
                s["files"],
                fmt(s["manifest_kb"], 1),
                resume_cell(s),
                "-" if v is None else ("valid" if v["rc"] == 0 else f"FAILED: {v['last']}"),
            ]
        )
    return rows


def markdown(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def projection(summaries: list[dict], target: tuple[int, int]) -> list[str]:
    """The time of a ``target`` scan from the largest measured one's per-pixel rates.

    Wall: the tiled pass and close scale with the scan's pixels, the
    statistics pass and the calibration fit with the sampled pixels (5 % of a
    large scan), the rest (imports, encoder, opening) is taken as fixed. CPU:
    the run's CPU seconds per pixel. Both are projections, not measurements;
    neither knows what changes beyond the measured size (the calibration fit
    re-reads its squares once their features exceed its 256 MB cache).
    """
    from tilex.stats import StatsSpec

    base = max(summaries, key=lambda s: s["mpx"])
    if base["tiles_s"] is None or not base["sample_mpx"]:
        return []
    px = target[0] * target[1] / 1e6
    sample = StatsSpec().fraction_for(target) * px
    per_px = ((base["tiles_s"] or 0) + (base["close_s"] or 0)) / base["mpx"]
    per_sample = ((base["statistics_s"] or 0) + (base["calibration_s"] or 0)) / base["sample_mpx"]
    fixed = base["wall_s"] - (
        (base["tiles_s"] or 0)
        + (base["close_s"] or 0)
        + (base["statistics_s"] or 0)
        + (base["calibration_s"] or 0)
    )
    if base["killed"]:
        fixed /= 2  # two process starts were measured; a clean run has one
    main, side = per_px * px, per_sample * sample
    total = main + side + fixed
    cpu = base["cpu_s"] / base["mpx"] * px
    return [
        f"PROJECTION (not measured) for {target[0]}x{target[1]} ({px:.0f} Mpx) from the "
        f"{base['scan']} run ({'killed and resumed, ' if base['killed'] else ''}as measured here):",
        f"  wall: tiled pass + close {main / 3600:.2f} h ({per_px:.2f} s/Mpx), statistics + "
        f"calibration {side / 3600:.2f} h ({per_sample:.2f} s per sampled Mpx, {sample:.0f} Mpx "
        f"sampled), fixed {fixed:.0f} s: about {total / 3600:.1f} h",
        f"  CPU: {base['cpu_s'] / base['mpx']:.1f} CPU s/Mpx -> {cpu / 3600:.1f} CPU-hours; on "
        f"{os.cpu_count()} cores with nothing else running the wall lies between "
        f"{cpu / 3600 / (os.cpu_count() or 1):.1f} h and {cpu / 3600:.1f} h",
    ]


def plot(path: Path, summaries: list[dict], results: list[dict], title: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install -e '.[bench]')"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    px = [s["mpx"] for s in summaries]
    ax = axes[0]
    for key, label, style in (
        ("wall_s", "whole run (process walls)", "o-"),
        ("cpu_s", "whole run (CPU seconds)", "o:"),
        ("tiles_s", "tiled pass", "s--"),
        ("statistics_s", "statistics pass", "^--"),
        ("calibration_s", "calibration fit", "v--"),
    ):
        ys = [s[key] for s in summaries]
        if all(y for y in ys):
            ax.loglog(px, ys, style, label=label)
    if len(px) > 1:
        ax.loglog(
            px,
            [summaries[0]["wall_s"] * p / px[0] for p in px],
            ":",
            color="grey",
            label="linear from the smallest",
        )
    ax.set(xlabel="scan Mpx", ylabel="seconds", title="time")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.loglog(px, [s["peak_rss_mb"] for s in summaries], "o-", label="peak RSS (wait4)")
    ax.set(xlabel="scan Mpx", ylabel="MB", title="peak memory")
    ax.set_ylim(100, 10000)
    ax.axhline(4000, color="red", ls=":", label="goal: 4 GB")
    ax.legend(fontsize=7)
    ax = axes[2]
    biggest = max(results, key=lambda r: r["pixels"])
    samples = [s for p in biggest["processes"] for s in p["samples"]]
    ax.plot([s[0] for s in samples], [s[1] for s in samples], label="RSS MB")
    for p in biggest["processes"]:
        if p["killed_at"]:
            ax.axvline(p["killed_at"]["s"], color="red", ls=":", label="SIGKILL, then --resume")
    ax.set(
        xlabel="seconds",
        ylabel="RSS MB",
        title=f"{biggest['size'][0]}x{biggest['size'][1]} over time",
    )
    twin = ax.twinx()
    twin.plot(
        [s[0] for s in samples], [s[2] for s in samples], color="tab:orange", label="scratch MB"
    )
    twin.set_ylabel("scratch MB (.pyramid + .journal)")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot written to {path}"


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", default="32768x32768", help="scan HxW or N (default 32768x32768)")
    p.add_argument("--bands", type=int, default=8, help="bands (default 8)")
    p.add_argument(
        "--ladder", action="store_true", help="also 1/16 and 1/4 of the pixels (sides /4 and /2)"
    )
    p.add_argument("--tiff-tile", type=int, default=512, help="TIFF tile of the scan (default 512)")
    p.add_argument(
        "--compression", default="zstd", choices=["zstd", "zlib"], help="scan TIFF compression"
    )
    p.add_argument("--tile", type=int, default=None, help="tilex run --tile (default: tilex's)")
    p.add_argument("--unit", type=int, default=None, help="tilex run --unit (default: tilex's)")
    p.add_argument("--chunk", type=int, default=None, help="tilex run --chunk (default: tilex's)")
    p.add_argument(
        "--kill",
        choices=["top", "all", "none"],
        default="top",
        help="SIGKILL and resume the largest size (top), every size, or none",
    )
    p.add_argument(
        "--kill-at",
        type=float,
        default=0.5,
        help="share of level-0 units journaled when SIGKILL is sent",
    )
    p.add_argument(
        "--plain", action="store_true", help="run the tilex command itself (no phase probes)"
    )
    p.add_argument("--interval", type=float, default=0.25, help="sampling interval in s")
    p.add_argument("--timeout", type=float, default=6 * 3600, help="seconds per process")
    p.add_argument("--no-validate", action="store_true", help="skip tilex validate")
    p.add_argument("--out-dir", default=None, help="folder for scans and outputs (default: temp)")
    p.add_argument("--keep", action="store_true", help="keep scans and outputs (scans are reused)")
    p.add_argument("--json", default=None, help="write every figure and time series here")
    p.add_argument("--plot", default=None, help="write the log-log PNG here")
    p.add_argument("--markdown", default=None, help="write the table as Markdown here")
    p.add_argument(
        "--from-json",
        default=None,
        help="print the table (and --plot, --markdown) of a run saved with --json; runs nothing",
    )
    p.add_argument(
        "--project",
        default="32768x32768",
        help="print the projected time of this size from the largest run (default 32768x32768)",
    )
    args = p.parse_args(argv)
    args.size = parse_size(args.size)
    args.project = parse_size(args.project) if args.project else None
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child-run"]:
        rest = argv[2:]
        return child_run(argv[1], rest[1:] if rest[:1] == ["--"] else rest)
    args = parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        for key in ("unit", "bands", "tile"):
            setattr(args, key, saved["args"].get(key))
        load = saved.get("load", "not recorded")
        return report(args, saved["results"], saved.get("device", cpu_name()), load)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    h, w = args.size
    sizes = [(max(16, h // 4), max(16, w // 4)), (max(16, h // 2), max(16, w // 2))]
    sizes = [*sizes, (h, w)] if args.ladder else [(h, w)]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    device = cpu_name()
    print(
        f"tilex gigapixel benchmark: {', '.join(f'{a}x{b}' for a, b in sizes)}, {args.bands} bands, "
        f"scan TIFF tiles {args.tiff_tile} {args.compression}; tilex run defaults"
        + (f" with --unit {args.unit}" if args.unit else "")
        + (f" --tile {args.tile}" if args.tile else "")
        + f"; {device}; load average {load}",
        flush=True,
    )
    root = Path(args.out_dir) if args.out_dir else Path(tempfile.mkdtemp(prefix="tilex-giga-"))
    root.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for i, size in enumerate(sizes):
            kill = args.kill == "all" or (args.kill == "top" and i == len(sizes) - 1)
            results.append(one_size(root, size, args, kill))
            if args.json:
                Path(args.json).write_text(
                    json.dumps(
                        {"args": vars(args), "results": results, "device": device, "load": load}
                    )
                )
            if not args.keep:
                shutil.rmtree(root / f"out-{size[0]}x{size[1]}", ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"args": vars(args), "results": results, "device": device, "load": load},
                default=str,
            )
        )
    return report(args, results, device, load)


def report(args: argparse.Namespace, results: list[dict], device: str, load: str) -> int:
    """The table, growth, projection, Markdown and plot of ``results``; the exit status."""
    summaries = [summarise(r) for r in results]
    title = (
        f"tilex run, defaults{f' + --unit {args.unit}' if args.unit else ''}, {args.bands} bands, "
        f"{device}; wall = process walls (imports included, a killed run's and its resume's summed); "
        "busy = seconds summed over threads, overlapped with the tiled pass"
    )
    plot_title = (
        f"tilex run, defaults{f' + --unit {args.unit}' if args.unit else ''}, {args.bands} bands, "
        f"{device}, load average at start {load}\nwall = process walls, imports included "
        "(a killed run and its resume summed)"
    )
    print()
    rows = table_rows(summaries)
    print_table(HEADER, rows, title=title)
    for s in summaries:
        if s["objects_first_last"]:
            a, b = s["objects_first_last"]
            print(
                f"{s['scan']}: allocated Python memory blocks at the first and last level-0 unit: {a} -> {b}"
            )
        c = s["resume"]
        if c:
            print(
                f"{s['scan']}: resume redid {c['statistics_squares_redone']} statistics squares and "
                f"{c['calibration_refits']} calibration fit(s); expected to commit "
                f"{c['expected_level0']} L0 + {c['expected_above']} upper units"
            )
    if len(summaries) > 1:
        a, b = summaries[0], summaries[-1]
        print(
            f"growth {a['scan']} -> {b['scan']} ({b['mpx'] / a['mpx']:.0f}x the pixels): "
            f"peak RSS x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}, "
            f"wall us/px x{b['us_px'] / a['us_px']:.2f}, "
            f"CPU s/px x{(b['cpu_s'] / b['mpx']) / (a['cpu_s'] / a['mpx']):.2f}, tiled-pass s/px "
            + (
                f"x{(b['tiles_s'] / b['mpx']) / (a['tiles_s'] / a['mpx']):.2f}"
                if a["tiles_s"] and b["tiles_s"]
                else "-"
            )
        )
    if args.project and args.project[0] * args.project[1] > max(s["mpx"] for s in summaries) * 1e6:
        for line in projection(summaries, args.project):
            print(line)
    if args.markdown:
        Path(args.markdown).write_text(f"{title}\n\n" + markdown(HEADER, rows))
    if args.plot:
        print(plot(Path(args.plot), summaries, results, plot_title))
    ok = all(r["processes"][-1]["rc"] == 0 for r in results)
    ok &= all(s["resume"] is None or s["resume"]["ok"] for s in summaries)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
