"""Importing tilex and tilex.kernels touches no GPU and imports no CuPy.

Checked in a fresh interpreter, with a booby-trapped ``cupy`` package first on
the path: importing it at all fails the child process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys
import tilex
import tilex.kernels
import tilex.kernels.api, tilex.kernels.gpu, tilex.kernels.reference
after_import = sorted(sys.modules)

import numpy as np
g = np.zeros((1, 4, 4), np.float32)
b = np.ones((2, 1, 4, 4), np.float32)
tilex.kernels.fuse(g, b, norm="pixel")                       # runs the Numba backend
tilex.kernels.dissimilarity_histogram(g, b)
gpu_like = ("cupy", "cupyx", "cupy_backends", "pycuda", "numba.cuda", "torch.cuda")
torch_cuda = "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized()
print(json.dumps({
    "gpu_modules": sorted(m for m in sys.modules if m.startswith(gpu_like) and m != "torch.cuda"),
    "cpu_backend_at_import": "tilex.kernels.cpu" in after_import,
    "torch_cuda_initialised": torch_cuda,
}))
"""


def test_import_touches_no_gpu(tmp_path: Path) -> None:
    trap = tmp_path / "cupy"
    trap.mkdir()
    (trap / "__init__.py").write_text("raise RuntimeError('cupy was imported')\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report == {
        "gpu_modules": [],
        "cpu_backend_at_import": False,
        "torch_cuda_initialised": False,
    }
