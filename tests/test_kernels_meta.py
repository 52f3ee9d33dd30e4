"""Meta-test: every kernel operation with a backend implementation has a parity case.

An operation is "a kernel" when the backend modules implement it: the public
functions of :mod:`tilex.kernels.cpu` and :mod:`tilex.kernels.gpu` are
enumerated by introspection, so a kernel added to a backend without a case in
``tests/parity_cases.py`` fails here.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import tilex.kernels as K
from tilex.kernels import api, cpu, gpu


def load_parity_cases() -> Any:
    """``tests/parity_cases.py``, loaded by path once per process."""
    name = "tilex_tests_parity_cases"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("parity_cases.py")
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


HELPERS = {"cuda_source"}
"""Public backend functions that are not kernels (gpu.cuda_source reads the .cu file)."""


def backend_functions(module: ModuleType) -> set[str]:
    """Public functions defined in a backend module, helpers aside: its kernels."""
    return {
        name
        for name, fn in inspect.getmembers(module, inspect.isfunction)
        if not name.startswith("_") and fn.__module__ == module.__name__ and name not in HELPERS
    }


def dispatched_functions(package: ModuleType) -> set[str]:
    """Public functions of ``tilex.kernels`` that dispatch to a backend."""
    return {n for n in package.__all__ if getattr(getattr(package, n), "__tilex_op__", None)}


def missing_parity_cases(ops: Iterable[str], cases: dict[str, Any]) -> set[str]:
    return set(ops) - set(cases)


def test_every_kernel_has_a_parity_case() -> None:
    cases = load_parity_cases().PARITY_CASES
    kernels = backend_functions(cpu) | backend_functions(gpu) | dispatched_functions(K)
    assert missing_parity_cases(kernels, cases) == set(), "add them to tests/parity_cases.py"
    assert set(cases) <= kernels, f"stale parity cases: {sorted(set(cases) - kernels)}"


def test_backends_implement_the_same_operations() -> None:
    ops = set(api.BACKEND_OPS)
    assert backend_functions(cpu) == ops
    assert backend_functions(gpu) == ops
    assert set(cpu.__all__) == set(gpu.__all__) == ops
    assert dispatched_functions(K) == ops


def test_backend_signatures_match() -> None:
    for op in api.BACKEND_OPS:
        cpu_params = list(inspect.signature(getattr(cpu, op)).parameters)
        gpu_params = list(inspect.signature(getattr(gpu, op)).parameters)
        assert cpu_params == gpu_params, op


def test_meta_test_notices_a_missing_case() -> None:
    cases = dict(load_parity_cases().PARITY_CASES)
    del cases["overlay"]
    assert missing_parity_cases(dispatched_functions(K), cases) == {"overlay"}
