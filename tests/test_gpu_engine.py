"""The CUDA engine equals the CPU engine (``-m gpu``; skipped without CUDA and CuPy).

What "equals" means, the same rule as across tilings (``tests/test_engine.py``):
in fp32 (cuDNN's TF32 is off for fp32, see ``tilex.encoder.runtime``) the
winners are identical and the score, collage and normalised maps agree within
``ATOL``; the encoder's features alone within ``ATOL`` too. Each test prints
the differences it measured (``pytest -rP`` shows them).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gpu

# float32 rounding of other convolution algorithms (cuDNN vs oneDNN): the
# tiled-vs-whole rule is 2e-6 on one device; across devices allow 1e-5
ATOL = 1e-5


def _cuda_and_cupy() -> str | None:
    """Why the CUDA engine cannot run here, or None."""
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy sees no CUDA device"
    except ImportError:
        return "CuPy is not installed"
    except Exception as exc:  # any CUDA runtime failure means 'no GPU here'
        return f"CuPy cannot reach CUDA: {exc}"
    return None


WHY = _cuda_and_cupy()
needs_gpu = pytest.mark.skipif(WHY is not None, reason=f"needs CUDA and CuPy: {WHY}")


@pytest.fixture(scope="module")
def scan_manifest(tmp_path_factory):
    import tilex

    return tilex.synth(tmp_path_factory.mktemp("gpu-scan") / "scan", size=(700, 600), bands=4)


def _run(manifest, device: str, **options):
    import tilex

    return tilex.run(
        manifest, None, device=device, precision="fp32", keep_normalised=True, **options
    )


def _compare(cpu, gpu, label: str) -> None:
    a, b = cpu.sink, gpu.sink
    differ = int(np.count_nonzero(a.winner != b.winner))
    diffs = {
        name: float(np.max(np.abs(getattr(a, name) - getattr(b, name))))
        for name in ("score", "collage", "normalised")
        if getattr(a, name) is not None
    }
    print(f"{label}: winners differing {differ} of {a.winner.size}; max |diff| {diffs}")
    assert differ == 0, f"{label}: {differ} winners differ between CPU and CUDA (fp32)"
    for name, diff in diffs.items():
        assert diff <= ATOL, f"{label}: {name} differs by {diff:.3g} > {ATOL:g}"
    np.testing.assert_array_equal(a.overlay.shape, b.overlay.shape)


@needs_gpu
def test_encoder_on_cuda_equals_cpu_in_fp32():
    from tilex.encoder import build_encoder

    gen = torch.Generator().manual_seed(3)
    visible = torch.rand(3, 300, 280, generator=gen)
    bands = torch.rand(5, 300, 280, generator=gen)
    g_cpu, b_cpu = build_encoder(device="cpu", precision="fp32").encode(visible, bands)
    g_gpu, b_gpu = build_encoder(device="cuda", precision="fp32").encode(
        visible.cuda(), bands.cuda()
    )
    dg = float((g_cpu - g_gpu.cpu()).abs().max())
    db = float((b_cpu - b_gpu.cpu()).abs().max())
    print(f"encoder fp32 CPU vs CUDA: max |diff| g {dg:.3g}, b {db:.3g}")
    assert dg <= ATOL and db <= ATOL


@needs_gpu
def test_engine_on_cuda_equals_cpu_pixel_norm(scan_manifest):
    """No statistics pass: the tiles, the encoder and the fused kernel alone."""
    options = dict(norm="pixel", tile=256)
    _compare(_run(scan_manifest, "cpu", **options), _run(scan_manifest, "cuda", **options), "pixel")


@needs_gpu
def test_engine_on_cuda_equals_cpu_band_norm(scan_manifest):
    """With the statistics pass (every pixel sampled): the same ranges, winners and maps."""
    options = dict(norm="band", tile=256, stats_sample=1.0)
    cpu, gpu = _run(scan_manifest, "cpu", **options), _run(scan_manifest, "cuda", **options)
    lo = np.abs(np.subtract(cpu.stats.lo, gpu.stats.lo)).max()
    hi = np.abs(np.subtract(cpu.stats.hi, gpu.stats.hi)).max()
    print(f"band stats CPU vs CUDA: max |diff| lo {lo:.3g}, hi {hi:.3g}")
    assert lo <= ATOL and hi <= ATOL
    _compare(cpu, gpu, "band")
