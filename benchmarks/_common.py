"""Shared helpers of the benchmark suite: machine, memory, timing, tables.

Benchmarks print tables; they never assert timings. Every figure is taken on
the machine and in the run that prints it:

- :func:`describe_device` names the CPU (model from ``/proc/cpuinfo`` and the
  cores this process may use) or the GPU;
- :class:`Measure` times one stage (CUDA synchronised at both ends) and
  records its peak host RSS (a psutil sampling thread) and its peak GPU
  memory (torch's allocator peak plus CuPy's memory pool);
- :func:`child_peak_rss_mb` reads the peak RSS of finished child processes
  (``getrusage(RUSAGE_CHILDREN)``), for per-process figures;
- :func:`print_table` prints aligned columns.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Measure",
    "Row",
    "RssSampler",
    "child_peak_rss_mb",
    "cpu_name",
    "describe_device",
    "fmt",
    "parse_size",
    "print_table",
    "section",
    "synth_scan",
    "synchronize",
]

MB = 1e6


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` or ``"N"`` -> ``(H, W)``."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"size must be HxW or N, got {text!r}") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"size must be HxW or N with positive sides, got {text!r}")
    return values[0], values[1]


def synth_scan(out_dir: Any, size: tuple[int, int], bands: int, **kwargs: Any) -> Any:
    """``tilex.synth``: a synthetic scan on disk (compressed tiled TIFFs); returns its manifest."""
    import types

    import tilex

    fn = tilex.synth
    if isinstance(fn, types.ModuleType):  # older layouts: the module tilex/synth.py
        fn = fn.synth
    return fn(out_dir, size=size, bands=bands, **kwargs)


def cpu_name() -> str:
    """CPU model (``/proc/cpuinfo``) and the cores this process may run on."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return f"{model} x{cores} cores"


def describe_device(device: str) -> str:
    """The GPU's name for ``cuda[:i]``, else the CPU's (see :func:`cpu_name`)."""
    if device.startswith("cuda"):
        import torch

        index = int(device.split(":")[1]) if ":" in device else 0
        return torch.cuda.get_device_name(index)
    return cpu_name()


def synchronize(device: str) -> None:
    """Wait for the GPU's queued work (no-op on CPU), so timings cover it."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


class RssSampler:
    """Peak resident memory of this process (and its children) by sampling.

    A daemon thread reads the RSS every ``interval`` seconds; ``peak_mb`` is
    the largest value seen since the last :meth:`reset`. ``children`` adds
    the RSS of every descendant; ``include_self=False`` watches only them
    (a launcher watching the process it started). Sampling misses
    spikes shorter than the interval; it is the common way to watch a
    process from outside without instrumenting it.
    """

    def __init__(
        self,
        pid: int | None = None,
        interval: float = 0.02,
        children: bool = True,
        include_self: bool = True,
    ) -> None:
        import psutil

        self.process = psutil.Process(pid or os.getpid())
        self.interval = interval
        self.children = children
        self.include_self = include_self
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-rss", daemon=True)

    def _sample(self) -> int:
        import psutil

        try:
            rss = self.process.memory_info().rss if self.include_self else 0
            if self.children:
                for child in self.process.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        rss += child.memory_info().rss
        except psutil.Error:
            return 0
        return rss

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._sample())
            self._stop.wait(self.interval)

    def start(self) -> RssSampler:
        self._peak = self._sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> None:
        self._peak = self._sample()

    @property
    def peak_mb(self) -> float:
        return max(self._peak, self._sample()) / MB

    def __enter__(self) -> RssSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def child_peak_rss_mb() -> float:
    """Largest peak RSS of any waited-for child of this process, in MB (Linux: KiB units)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return ru * (1 if sys.platform == "darwin" else 1024) / MB


def _gpu_reset(device: str) -> None:
    if not device.startswith("cuda"):
        return
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        cupy.get_default_memory_pool().free_all_blocks()


def _gpu_peak_mb(device: str) -> float | None:
    """torch's allocator peak plus what CuPy's pool holds (its blocks stay cached)."""
    if not device.startswith("cuda"):
        return None
    import torch

    peak = torch.cuda.max_memory_allocated(device)
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        peak += cupy.get_default_memory_pool().total_bytes()
    return peak / MB


@dataclass
class Measure:
    """Time one stage and record its peak host RSS and GPU memory.

    Examples
    --------
    >>> with RssSampler() as rss, Measure("cpu", rss) as m:  # doctest: +SKIP
    ...     work()
    >>> m.seconds, m.rss_mb, m.gpu_mb  # doctest: +SKIP
    """

    device: str
    rss: RssSampler | None = None
    seconds: float = float("nan")
    rss_mb: float | None = None
    gpu_mb: float | None = None
    _start: float = field(default=0.0, repr=False)

    def __enter__(self) -> Measure:
        _gpu_reset(self.device)
        if self.rss is not None:
            self.rss.reset()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start
        if self.rss is not None:
            self.rss_mb = self.rss.peak_mb
        self.gpu_mb = _gpu_peak_mb(self.device)


@dataclass
class Row:
    """One line of the final table: a stage or a variant and its figures."""

    name: str
    pixels: int  # scan pixels the stage covered
    seconds: float
    rss_mb: float | None = None
    gpu_mb: float | None = None
    note: str = ""

    @property
    def mpx_s(self) -> float:
        return self.pixels / 1e6 / self.seconds if self.seconds > 0 else float("nan")

    @classmethod
    def of(cls, name: str, pixels: int, m: Measure, note: str = "") -> Row:
        return cls(name, pixels, m.seconds, m.rss_mb, m.gpu_mb, note)


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: numbers rounded, ``None``/NaN as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def print_table(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    file: Any = None,
) -> None:
    """Print ``rows`` under ``header`` in aligned columns (text left, numbers right)."""
    file = file or sys.stdout
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [
        max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h))
        for i, h in enumerate(header)
    ]
    numeric = [all(_is_number(r[i]) for r in cells) if cells else False for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    if title:
        print(title, file=file)
    print(line([str(h) for h in header]), file=file)
    print(line(["-" * w for w in widths]), file=file)
    for r in cells:
        print(line(r), file=file)
    file.flush()


def _is_number(text: str) -> bool:
    if text == "-":
        return True
    try:
        float(text.rstrip("x%"))
    except ValueError:
        return False
    return True


@contextlib.contextmanager
def section(title: str) -> Iterator[None]:
    """Print a section heading and its duration (progress for long suites)."""
    print(f"\n== {title}", flush=True)
    start = time.perf_counter()
    yield
    print(f"   ({time.perf_counter() - start:.1f} s)", flush=True)
