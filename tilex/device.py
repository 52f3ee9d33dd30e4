"""The compute backend, chosen once and passed along as a value.

A :class:`Backend` says everything a run needs to know about where it
computes: the torch device the encoder runs on (index resolved), the
encoder's precision, its memory format, and the array module the fusion
kernels get (NumPy for the Numba kernels, CuPy for the CUDA kernels).
:func:`resolve_device` is the one place that turns a device text into a
backend; everything downstream takes the value, never the text again.

Host/device moves happen only at the backend's edges (:meth:`Backend.upload`,
:meth:`Backend.to_kernel`, :meth:`Backend.download`), never hidden inside a
kernel wrapper. Nothing here imports torch or CuPy, or touches a GPU, at
import: they are imported when a backend is resolved or used.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from tilex.errors import DeviceError

__all__ = [
    "PRECISIONS",
    "Backend",
    "parse_device",
    "resolve_device",
    "tile_workers",
    "tune_host_allocator",
]

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
"""Encoder precisions: ``fp32`` anywhere, ``bf16`` on CPU and CUDA, the rest CUDA only."""

_CUDA_ONLY = ("tf32", "fp16")
_NAME = re.compile(r"^(?:cpu|cuda:\d+)$")
_TEXT = re.compile(r"^cuda(?::(\d+))?$")


@dataclass(frozen=True)
class Backend:
    """A resolved compute backend: device, precision and memory format.

    Build one with :func:`resolve_device`, which checks that the device is
    really there; constructing it directly checks the spelling and the
    precision rule only (``Backend("cpu")`` is handy in tests).

    Parameters
    ----------
    name
        ``"cpu"`` or ``"cuda:<index>"``: the index is always explicit.
    precision
        One of :data:`PRECISIONS`: ``"fp32"`` (exact: TF32 off on CUDA),
        ``"tf32"`` (CUDA), ``"bf16"`` (autocast; CUDA, or CPU) or ``"fp16"``
        (autocast, CUDA).
    channels_last
        Run the encoder's convolutions in channels-last memory format, faster
        for these convolutions on CPU and GPU alike.

    Examples
    --------
    >>> cpu = Backend("cpu", precision="bf16")
    >>> cpu.is_cuda, cpu.worker_device, cpu.array_module.__name__
    (False, 'cpu', 'numpy')
    >>> Backend("cpu", precision="fp16")
    Traceback (most recent call last):
    ...
    tilex.errors.DeviceError: precision 'fp16' needs a CUDA device; on cpu use 'fp32' or 'bf16'
    """

    name: str
    precision: str = "fp32"
    channels_last: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise DeviceError(
                f"backend name must be 'cpu' or 'cuda:<index>', got {self.name!r} "
                "(resolve_device reads 'auto' and 'cuda')"
            )
        if self.precision not in PRECISIONS:
            # a ValueError, not a DeviceError: the name is wrong whatever the hardware
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.precision in _CUDA_ONLY and not self.is_cuda:
            raise DeviceError(
                f"precision {self.precision!r} needs a CUDA device; on cpu use 'fp32' or 'bf16'"
            )
        if not isinstance(self.channels_last, bool):
            raise TypeError(f"channels_last must be a bool, got {self.channels_last!r}")

    @property
    def is_cuda(self) -> bool:
        return self.name != "cpu"

    @property
    def index(self) -> int | None:
        """The CUDA device index, ``None`` on the CPU."""
        return int(self.name.split(":")[1]) if self.is_cuda else None

    @property
    def device(self) -> Any:
        """The ``torch.device`` the encoder runs on."""
        import torch

        return torch.device(self.name)

    @property
    def worker_device(self) -> str:
        """The device text a dask-cuda worker resolves: ``"cuda"``, its own visible GPU, or ``"cpu"``.

        dask-cuda gives each worker one GPU through ``CUDA_VISIBLE_DEVICES``, so
        the client's index means nothing there.
        """
        return "cuda" if self.is_cuda else "cpu"

    @property
    def array_module(self) -> ModuleType:
        """The kernels' array module: ``numpy`` on the CPU, ``cupy`` on CUDA."""
        if not self.is_cuda:
            return np
        import cupy

        return cupy

    def upload(self, array: np.ndarray) -> Any:
        """Host array -> torch tensor on this device (pinned, async copy on CUDA)."""
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if not self.is_cuda:
            return tensor
        return tensor.pin_memory().to(self.name, non_blocking=True)

    def to_kernel(self, tensor: Any) -> Any:
        """Torch tensor -> the kernels' array type, without a host round trip."""
        if not self.is_cuda:
            return tensor.detach().contiguous().numpy()
        return self.array_module.from_dlpack(tensor.detach().contiguous())

    def download(self, array: Any) -> np.ndarray:
        """Kernel output -> NumPy array on the host."""
        if isinstance(array, np.ndarray) or array is None:
            return array
        return array.get()

    def describe(self) -> str:
        """The device for people: ``"cpu"`` or ``"cuda:0 (NVIDIA H200)"``."""
        if not self.is_cuda:
            return "cpu"
        import torch

        return f"{self.name} ({torch.cuda.get_device_name(self.index)})"


def parse_device(text: Any) -> str:
    """The spelling of a device, checked and normalised; nothing is probed.

    Returns ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:<i>"``, lower-cased
    without spaces (a ``torch.device`` reads as its text).

    Examples
    --------
    >>> parse_device(" CUDA:1 "), parse_device(None)
    ('cuda:1', 'auto')
    """
    normal = str(text or "auto").strip().lower()
    if normal in ("auto", "cpu") or _TEXT.match(normal):
        return normal
    raise DeviceError(f"device must be auto, cpu, cuda or cuda:<index>, got {text!r}")


def resolve_device(
    text: str = "auto", *, precision: str = "fp32", channels_last: bool = True
) -> Backend:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:<i>`` into a :class:`Backend`.

    ``auto`` picks the first CUDA device when torch sees one and CuPy imports,
    and the CPU otherwise; ``cuda`` means ``cuda:0``. Case and surrounding
    spaces are ignored.

    Raises
    ------
    DeviceError
        When the text is not a device, the CUDA device asked for cannot run
        tilex (no driver, no such index, no CuPy), or ``precision`` needs CUDA.
    ValueError
        When ``precision`` is not one of :data:`PRECISIONS`.

    Examples
    --------
    >>> resolve_device("cpu")
    Backend(name='cpu', precision='fp32', channels_last=True)
    >>> resolve_device(" CPU ", precision="bf16", channels_last=False).precision
    'bf16'
    >>> resolve_device("tpu")
    Traceback (most recent call last):
    ...
    tilex.errors.DeviceError: device must be auto, cpu, cuda or cuda:<index>, got 'tpu'
    """
    given, text = text, parse_device(text)
    if text == "cpu":
        name = "cpu"
    elif text == "auto":
        name = "cuda:0" if _cuda_usable() is None else "cpu"
    else:
        index = int(text.partition(":")[2] or 0)
        problem = _cuda_usable(index)
        if problem:
            raise DeviceError(f"device {given!r} is not usable: {problem}; use --device cpu")
        name = f"cuda:{index}"
    return Backend(name, precision=precision, channels_last=channels_last)


def _cuda_usable(index: int = 0) -> str | None:
    """``None`` when CUDA device ``index`` can run tilex, else the reason it cannot."""
    import torch

    if not torch.cuda.is_available():
        return "torch sees no CUDA device (CPU build of torch, or no driver)"
    if index >= torch.cuda.device_count():
        return f"only {torch.cuda.device_count()} CUDA device(s) present"
    try:
        import cupy  # noqa: F401
    except ImportError:
        return "CuPy is not installed (pip install 'tilex[gpu-cuda12]' or 'tilex[gpu-cuda13]')"
    return None


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters
_tuned_libc: Any = None  # the C library, once tune_host_allocator() took


def tune_host_allocator() -> bool:
    """Keep freed activation buffers in the heap instead of returning them to the OS.

    An explicit opt-in for programs that own their process (the ``tilex``
    command calls it before a CPU run): it changes ``malloc`` for the whole
    process, a notebook's other work included, so the library never calls it
    on its own. Returns whether the setting took.

    The encoder's activations on CPU are tens of MB per tile; glibc serves such
    blocks with ``mmap`` and unmaps them on free, so every tile faults its
    buffers in again page by page (measured: 40% of the encoder's time in the
    kernel). Turning that off made the CPU encoder 1.4x (channels_last) to
    1.9x (contiguous) faster on a 2-core machine (``python
    benchmarks/bench_encoder.py --tile 512 --skip-auc`` with and without
    ``--tune-allocator``), at the cost of a heap that keeps its high-water mark
    (bounded by the tile size).
    A no-op returning ``False`` where the C library is not glibc.

    Examples
    --------
    >>> tune_host_allocator()  # doctest: +SKIP
    True
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    took = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    if took:
        global _tuned_libc
        _tuned_libc = libc
    return took


def release_free_memory() -> bool:
    """Give the tuned heap's free pages back to the OS (glibc ``malloc_trim``).

    The heap that :func:`tune_host_allocator` keeps is reused tile after
    tile, but between write units its free space fragments: on an 8192^2
    scan the main heap's resident size grew in steps from 254 to 693 MB.
    The output stream calls this once per
    finished unit. Measured with ``/usr/bin/time -v tilex run`` on scans of
    ``benchmarks/bench_gigapixel.py``: peak RSS 1761 against 2039 MB
    (8192^2) and 2331 against 2600 MB (16384^2), wall time within 2 %. It
    lowers the level, not the growth between the two sizes. A no-op
    returning ``False`` unless the allocator was tuned.
    """
    if _tuned_libc is None:
        return False
    return bool(_tuned_libc.malloc_trim(0))


_threads_lock = threading.Lock()
_threads_users = 0  # engines inside tile_workers() now
_threads_saved = 0  # torch's thread count before the first of them entered


@contextlib.contextmanager
def tile_workers(backend: Backend) -> Iterator[int]:
    """How many tiles the CPU encodes at once, each with one torch thread, while inside.

    On the CPU the engine gives every core a tile of its own instead of
    splitting each tile's convolutions across the cores: torch's thread count
    (``torch.get_num_threads()``, what ``OMP_NUM_THREADS`` or a cluster
    worker's setting made it) becomes the number of tiles encoded at once, and
    torch runs one thread per tile until the last engine inside leaves, when
    the count is set back. Alone the two ways encode equally fast, but split
    convolutions wait for each other at every layer, and beside the readers,
    the writer and the merging they cost more CPU: a default 3072^2 ``tilex
    run`` took 22.6 and 21.4 CPU s with two torch threads and 17.9 with one
    (``/usr/bin/time``, 2-core VM). The features are the same bits either way
    (``tests/test_engine.py`` and the golden hashes check it).

    Yields 1 on a GPU (one device stage encodes, as before) and where torch
    had a single thread.
    """
    global _threads_users, _threads_saved
    if backend.is_cuda:
        yield 1
        return
    import torch

    with _threads_lock:
        if _threads_users == 0:
            _threads_saved = torch.get_num_threads()
            if _threads_saved > 1:
                torch.set_num_threads(1)
        _threads_users += 1
        workers = _threads_saved
    try:
        yield workers
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0 and _threads_saved > 1:
                torch.set_num_threads(_threads_saved)
