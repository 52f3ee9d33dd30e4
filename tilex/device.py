"""The compute backend, chosen once and passed along as a value.

A :class:`Backend` says where the encoder runs (a torch device) and which array
type the fusion kernels get (NumPy for the Numba kernels, CuPy for the CUDA
kernels). Host/device moves happen only at its edges (:meth:`Backend.upload`,
:meth:`Backend.to_kernel`, :meth:`Backend.download`), never hidden inside a
kernel wrapper. Nothing here touches a GPU at import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from tilex.errors import DeviceError

__all__ = ["Backend", "resolve_device", "tune_host_allocator"]


@dataclass(frozen=True)
class Backend:
    """A resolved device: ``"cpu"`` or ``"cuda:<i>"``."""

    name: str

    @property
    def is_cuda(self) -> bool:
        return self.name.startswith("cuda")

    @property
    def index(self) -> int | None:
        return int(self.name.split(":")[1]) if self.is_cuda else None

    def torch_device(self) -> Any:
        import torch

        return torch.device(self.name)

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
        import cupy

        return cupy.from_dlpack(tensor.detach().contiguous())

    def download(self, array: Any) -> np.ndarray:
        """Kernel output -> NumPy array on the host."""
        if isinstance(array, np.ndarray) or array is None:
            return array
        return array.get()

    def describe(self) -> str:
        if not self.is_cuda:
            return "cpu"
        import torch

        return f"{self.name} ({torch.cuda.get_device_name(self.index)})"


_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def resolve_device(text: str = "auto") -> Backend:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:<i>`` into a :class:`Backend`.

    ``auto`` picks the first CUDA device when torch sees one and CuPy imports,
    and the CPU otherwise.

    Examples
    --------
    >>> resolve_device("cpu")
    Backend(name='cpu')
    """
    text = (text or "auto").strip().lower()
    if text == "cpu":
        return Backend("cpu")
    if text == "auto":
        return Backend("cuda:0") if _cuda_usable() is None else Backend("cpu")
    match = _CUDA.match(text)
    if not match:
        raise DeviceError(f"device must be auto, cpu, cuda or cuda:<index>, got {text!r}")
    index = int(match.group(1) or 0)
    problem = _cuda_usable(index)
    if problem:
        raise DeviceError(f"device {text!r} is not usable: {problem}; use --device cpu")
    return Backend(f"cuda:{index}")


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


def tune_host_allocator() -> bool:
    """Keep freed activation buffers in the heap instead of returning them to the OS.

    The encoder's activations on CPU are tens of MB per tile; glibc serves such
    blocks with ``mmap`` and unmaps them on free, so every tile faults its
    buffers in again page by page (measured: 40% of the encoder's time in the
    kernel). Turning that off made the CPU encoder 1.4x (channels_last) to
    1.9x (contiguous) faster on a 2-core machine (``python
    benchmarks/bench_encoder.py --tile 512 --skip-auc`` with and without
    ``--tune-allocator``), at the cost of a heap that keeps its high-water mark
    (bounded by the tile size).
    A no-op returning ``False`` where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
