"""The backend value: one parser of device texts, the precision rule, what a Backend carries."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from tilex.device import PRECISIONS, Backend, resolve_device
from tilex.encoder import build_encoder
from tilex.errors import DeviceError

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


def cuda_usable() -> bool:
    if not CUDA:
        return False
    try:
        import cupy  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------
# parsing


@pytest.mark.parametrize("text", ["cpu", "CPU", " cpu "])
def test_cpu_spellings(text):
    assert resolve_device(text) == Backend("cpu")


@pytest.mark.parametrize("text", ["auto", "", None, " Auto "])
def test_auto_is_cuda_0_when_usable_else_cpu(text):
    backend = resolve_device(text)
    assert backend.name == ("cuda:0" if cuda_usable() else "cpu")


@pytest.mark.parametrize("text", ["tpu", "gpu", "cuda:", "cuda:x", "cuda:-1", "cpu:0", "mps"])
def test_junk_is_refused_naming_the_value(text):
    with pytest.raises(DeviceError, match=f"auto, cpu, cuda or cuda:<index>, got '{text}'"):
        resolve_device(text)


@pytest.mark.skipif(cuda_usable(), reason="CUDA is usable here")
@pytest.mark.parametrize("text", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_a_usable_gpu_says_why(text):
    with pytest.raises(DeviceError, match=rf"device '{text}' is not usable: .*use --device cpu"):
        resolve_device(text)


@pytest.mark.skipif(not cuda_usable(), reason="needs CUDA and CuPy")
def test_cuda_resolves_its_index():
    assert resolve_device("cuda").name == "cuda:0"
    assert resolve_device("CUDA:0").index == 0
    last = torch.cuda.device_count() - 1
    assert resolve_device(f"cuda:{last}").device == torch.device("cuda", last)
    with pytest.raises(DeviceError, match=r"only \d+ CUDA device"):
        resolve_device(f"cuda:{last + 1}")


# --------------------------------------------------------------------------
# precision and memory format


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cpu_takes_fp32_and_bf16(precision):
    assert resolve_device("cpu", precision=precision).precision == precision


@pytest.mark.parametrize("precision", ["tf32", "fp16"])
def test_tf32_and_fp16_need_cuda(precision):
    with pytest.raises(DeviceError, match=f"precision '{precision}' needs a CUDA device"):
        resolve_device("cpu", precision=precision)
    with pytest.raises(DeviceError, match="needs a CUDA device"):
        Backend("cpu", precision)  # no way round the rule by building the value directly
    assert Backend("cuda:0", precision).precision == precision  # spelling only: nothing probed


def test_unknown_precision_is_a_value_error():
    with pytest.raises(
        ValueError, match=r"precision must be one of fp32, tf32, bf16, fp16, got 'fp64'"
    ):
        resolve_device("cpu", precision="fp64")
    assert PRECISIONS == ("fp32", "tf32", "bf16", "fp16")


@pytest.mark.parametrize("name", ["cuda", "auto", "CPU", "cuda:a", ""])
def test_backend_names_are_canonical(name):
    with pytest.raises(DeviceError, match="backend name must be 'cpu' or 'cuda:<index>'"):
        Backend(name)


def test_channels_last_defaults_on_and_must_be_a_bool():
    assert resolve_device("cpu").channels_last is True
    assert resolve_device("cpu", channels_last=False).channels_last is False
    with pytest.raises(TypeError, match="channels_last must be a bool"):
        Backend("cpu", channels_last=1)


# --------------------------------------------------------------------------
# what a Backend carries


def test_cpu_backend_carries_device_precision_format_and_numpy():
    backend = resolve_device("cpu", precision="bf16", channels_last=False)
    assert backend.device == torch.device("cpu")
    assert (backend.precision, backend.channels_last) == ("bf16", False)
    assert backend.array_module is np
    assert (backend.is_cuda, backend.index, backend.worker_device) == (False, None, "cpu")
    assert backend.describe() == "cpu"


def test_cuda_backend_fields_without_touching_a_gpu():
    backend = Backend("cuda:1", "fp16")
    assert (backend.is_cuda, backend.index, backend.device) == (True, 1, torch.device("cuda", 1))
    assert backend.worker_device == "cuda"  # a dask-cuda worker's own visible GPU


def test_backend_is_a_frozen_hashable_picklable_value():
    backend = resolve_device("cpu", precision="bf16")
    with pytest.raises(dataclasses.FrozenInstanceError):
        backend.precision = "fp32"
    assert hash(backend) == hash(Backend("cpu", "bf16", True))
    assert {backend: 1}[Backend("cpu", "bf16")] == 1
    assert backend != Backend("cpu", "bf16", channels_last=False)
    assert pickle.loads(pickle.dumps(backend)) == backend


def test_moves_at_the_edges_on_cpu():
    backend = Backend("cpu")
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = backend.upload(array)
    assert isinstance(tensor, torch.Tensor) and tensor.device == backend.device
    kernel = backend.to_kernel(tensor * 2)
    assert isinstance(kernel, np.ndarray)
    np.testing.assert_array_equal(backend.download(kernel), array * 2)


# --------------------------------------------------------------------------
# the encoder takes the backend


def test_build_encoder_uses_the_backend():
    backend = resolve_device("cpu", precision="bf16", channels_last=True)
    enc = build_encoder(backend=backend)
    assert enc.backend is backend
    assert (enc.device, enc.precision, enc.channels_last) == (torch.device("cpu"), "bf16", True)
    weight = enc.band_path.conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and weight.shape[-1] > 1
    g, b = enc.encode(torch.rand(3, 16, 16), torch.rand(2, 16, 16))
    assert g.dtype == b.dtype == torch.float32


def test_old_keywords_give_an_equal_backend():
    old = build_encoder(device="cpu", precision="bf16", channels_last=True)
    new = build_encoder(backend=resolve_device("cpu", precision="bf16", channels_last=True))
    assert old.backend == new.backend
    assert old.weights_sha256 == new.weights_sha256
    # the keywords keep build_encoder's historical defaults: cpu, fp32, contiguous
    assert build_encoder().backend == Backend("cpu", "fp32", channels_last=False)
    assert build_encoder(device=torch.device("cpu")).backend == Backend("cpu", "fp32", False)


def test_old_keywords_share_the_one_parser():
    with pytest.raises(DeviceError, match="auto, cpu, cuda or cuda:<index>, got 'tpu'"):
        build_encoder(device="tpu")
    with pytest.raises(DeviceError, match="needs a CUDA device"):
        build_encoder(precision="fp16")


def test_backend_and_old_keywords_are_not_mixed():
    with pytest.raises(ValueError, match="not both"):
        build_encoder(backend=Backend("cpu"), precision="bf16")
    with pytest.raises(TypeError, match="backend must be a tilex.device.Backend"):
        build_encoder(None, "cpu")


_TRIM_PROBE = """
import numpy as np
from tilex.device import release_free_memory, tune_host_allocator

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

assert not release_free_memory()  # untuned: the library leaves malloc alone
assert tune_host_allocator()
blocks = [np.ones((1 << 20) // 8) for _ in range(300)]  # 300 x 1 MiB, from the heap once tuned
keep = blocks[-1]  # the heap's top stays in use: only malloc_trim returns the rest
del blocks
held = rss_mb()
assert release_free_memory()
print(held - rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_the_tuned_heap_gives_its_free_pages_back_when_asked():
    out = subprocess.run(
        [sys.executable, "-c", _TRIM_PROBE], capture_output=True, text=True, check=True
    )
    assert float(out.stdout) > 200  # of the 299 MiB freed
