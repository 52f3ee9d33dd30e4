"""Every kernel backend against the NumPy oracle, with one test body.

``BACKENDS`` lists the implementations: Numba always, CuPy (``-m gpu``) where
CuPy and a CUDA device are present; the fixture skips cleanly otherwise and no
GPU array is made at import. The cases themselves live in ``parity_cases.py``.
"""

from __future__ import annotations

import doctest
import importlib.util
import inspect
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
import pytest
import tilex.kernels as K
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tilex.kernels import api, cpu, gpu, reference


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


PARITY_CASES = load_parity_cases().PARITY_CASES


# --------------------------------------------------------------------------- backends


class Backend(NamedTuple):
    name: str
    to_device: Any  # host array -> backend array
    to_host: Any  # backend array -> host array


BACKENDS = ["numba", pytest.param("cupy", marks=pytest.mark.gpu)]


def _cupy_backend() -> Backend:
    cupy = pytest.importorskip("cupy", exc_type=ImportError, reason="CuPy is not installed")
    try:
        n_devices = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        pytest.skip(f"no usable CUDA device: {exc}")
    if n_devices < 1:
        pytest.skip("no CUDA device")
    return Backend("cupy", cupy.asarray, cupy.asnumpy)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "cupy":
        return _cupy_backend()
    return Backend("numba", lambda a: a, np.asarray)


def _map(fn: Any, value: Any) -> Any:
    """Apply ``fn`` to every array in a result or argument structure."""
    if value is None or isinstance(value, str | bool | float | int):
        return value
    if isinstance(value, dict):
        return {k: _map(fn, v) for k, v in value.items()}
    if isinstance(value, tuple):  # Fusion, BandHistogram
        return type(value)(*(_map(fn, v) for v in value))
    return fn(value)


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("op", sorted(PARITY_CASES))
def test_backend_matches_oracle(backend: Backend, op: str) -> None:
    case = PARITY_CASES[op]

    @settings(max_examples=case.max_examples, deadline=None)
    @given(case.inputs)
    def check(inputs: dict[str, Any]) -> None:
        expected = case.oracle(**inputs)
        got = getattr(K, op)(**_map(backend.to_device, inputs))
        case.compare(expected, _map(backend.to_host, got))

    check()


def _arrays(result: Any) -> list[Any]:
    """The arrays of a kernel's result (a Fusion or BandHistogram field by field), None kept."""
    return list(result) if isinstance(result, tuple) else [result]


@pytest.mark.parametrize("op", sorted(PARITY_CASES))
def test_numba_is_bit_identical_to_the_oracle(op: str) -> None:
    """The CPU claim (kernels/_numba.py, kernels/cpu.py): every output of every operation has
    the oracle's bytes, NaN payloads and signed zeros included, not only values within ATOL."""
    case = PARITY_CASES[op]

    @settings(max_examples=case.max_examples, deadline=None)
    @given(case.inputs)
    def check(inputs: dict[str, Any]) -> None:
        expected, got = _arrays(case.oracle(**inputs)), _arrays(getattr(K, op)(**inputs))
        assert len(got) == len(expected)
        for e, o in zip(expected, got, strict=True):
            if e is None:
                assert o is None
                continue
            e, o = np.ascontiguousarray(e), np.ascontiguousarray(o)
            assert (o.dtype, o.shape) == (e.dtype, e.shape)
            assert np.array_equal(e.view(np.uint8), o.view(np.uint8))

    check()


def test_empty_tile(backend: Backend) -> None:
    g = backend.to_device(np.zeros((2, 0, 5), np.float32))
    b = backend.to_device(np.zeros((3, 2, 0, 5), np.float32))
    f = _map(backend.to_host, K.fuse(g, b, norm="pixel", keep_normalised=True))
    assert f.winner.shape == (0, 5) and f.collage.shape == (2, 0, 5)
    assert f.normalised.shape == (3, 0, 5)
    h = _map(backend.to_host, K.dissimilarity_histogram(g, b))
    assert h.counts.sum() == 0 and np.all(h.dmin == np.inf) and np.all(h.dmax == -np.inf)


def test_non_contiguous_inputs(backend: Backend) -> None:
    rng = np.random.default_rng(1)
    g = rng.random((2, 9, 16), dtype=np.float32)
    b = rng.random((3, 2, 9, 16), dtype=np.float32)
    lo, hi = np.zeros(3, np.float32), np.full(3, 2.0, np.float32)
    expected = K.fuse_reference(g[:, ::2, 1::3], b[:, :, ::2, 1::3], lo, hi, threshold=0.2)
    dev = _map(backend.to_device, {"g": g, "b": b, "lo": lo, "hi": hi})
    got = K.fuse(
        dev["g"][:, ::2, 1::3], dev["b"][:, :, ::2, 1::3], dev["lo"], dev["hi"], threshold=0.2
    )
    PARITY_CASES["fuse"].compare(expected, _map(backend.to_host, got))


# --------------------------------------------------------------------------- histograms


@st.composite
def split_tiles(draw: st.DrawFn) -> tuple[dict[str, np.ndarray], list[int], list[int]]:
    inputs = draw(PARITY_CASES["dissimilarity_histogram"].inputs)
    h, w = inputs["g"].shape[1:]
    ys = sorted(set(draw(st.lists(st.integers(0, h), max_size=3)) + [0, h]))
    xs = sorted(set(draw(st.lists(st.integers(0, w), max_size=3)) + [0, w]))
    return inputs, ys, xs


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split_tiles())
def test_histogram_is_independent_of_tiling(split: Any) -> None:
    inputs, ys, xs = split
    g, b = inputs["g"], inputs["b"]
    whole = K.dissimilarity_histogram(g, b)
    merged = None
    for y0, y1 in zip(ys[:-1], ys[1:], strict=True):
        for x0, x1 in zip(xs[:-1], xs[1:], strict=True):
            part = K.dissimilarity_histogram(g[:, y0:y1, x0:x1], b[:, :, y0:y1, x0:x1])
            merged = part if merged is None else K.merge_histograms(merged, part)
    PARITY_CASES["dissimilarity_histogram"].compare(whole, merged)
    PARITY_CASES["dissimilarity_histogram"].compare(K.histogram_reference(g, b), whole)


finite_nonneg = st.floats(0.0, float(np.finfo(np.float32).max), width=32)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.one_of(finite_nonneg, st.just(float("nan")), st.just(float("inf"))), max_size=60),
    st.one_of(st.sampled_from([0.0, 1.0, 25.0, 50.0, 99.0, 100.0]), st.floats(0.0, 100.0)),
)
def test_percentiles_follow_the_documented_rule(values: list[float], q: float) -> None:
    v = np.array(values, dtype=np.float32)
    # d = |0 - b| = b: the histogram of exactly these values
    h = K.dissimilarity_histogram(np.zeros((1, 1, v.size), np.float32), v.reshape(1, 1, 1, -1))
    got = K.histogram_percentiles(h, q)
    assert got.shape == (1,) and got.dtype == np.float64
    data = v[~np.isnan(v)]
    if data.size == 0:
        assert np.isnan(got[0])
        return
    if q == 0:
        assert got[0] == data.min()
    if q == 100:
        assert got[0] == data.max()
    # the order statistic at rank ceil(q / 100 * (n - 1)), and its bin
    s = np.percentile(data, q, method="higher")
    assert K.bin_lower_edge(K.bin_of(s)) <= got[0] <= s
    assert data.min() <= got[0] <= data.max()


def test_percentiles_close_to_numpy_on_smooth_data() -> None:
    rng = np.random.default_rng(3)
    b = rng.gamma(2.0, 1.0, size=(2, 1, 300, 200)).astype(np.float32)
    h = K.dissimilarity_histogram(np.zeros((1, 300, 200), np.float32), b)
    for q in (0.0, 1.0, 50.0, 99.0, 100.0):
        expected = np.percentile(b.reshape(2, -1), q, axis=1)
        np.testing.assert_allclose(K.histogram_percentiles(h, q), expected, rtol=2.0**-9)


def test_percentiles_refuse_bad_q() -> None:
    h = K.histogram_reference(np.zeros((1, 1, 1), np.float32), np.zeros((1, 1, 1, 1), np.float32))
    with pytest.raises(ValueError, match=r"q must lie in \[0, 100\], got 101"):
        K.histogram_percentiles(h, 101)


@settings(max_examples=100, deadline=None)
@given(st.one_of(finite_nonneg, st.just(float("inf")), st.just(-0.0)))
def test_bins_bracket_their_values(value: float) -> None:
    v = np.float32(value)
    i = K.bin_of(v)
    if np.isinf(v):
        assert i == reference.INF_BIN and K.bin_lower_edge(i) == np.inf
    else:
        assert K.bin_lower_edge(i) <= v < K.bin_upper_edge(i)
        width = K.bin_upper_edge(i) - K.bin_lower_edge(i)
        # normal numbers: relative width 2**-10 (the last finite bin ends at +inf)
        if v >= np.finfo(np.float32).tiny and i < reference.INF_BIN - 1:
            assert width <= K.bin_lower_edge(i) * 2.0**-10


def test_bin_edges_are_monotonic_and_contiguous() -> None:
    i = np.arange(K.NBINS)
    lower, upper = K.bin_lower_edge(i), K.bin_upper_edge(i)
    assert lower[0] == 0.0 and np.all(lower[1:] >= lower[:-1])
    np.testing.assert_array_equal(upper[:-1], lower[1:])
    assert K.NBINS == 2**18 and K.SHIFT == 13
    with pytest.raises(ValueError, match="bin indices must lie in"):
        K.bin_lower_edge(K.NBINS)


def test_merge_refuses_different_band_counts() -> None:
    g = np.zeros((1, 2, 2), np.float32)
    one = K.dissimilarity_histogram(g, np.zeros((1, 1, 2, 2), np.float32))
    two = K.dissimilarity_histogram(g, np.zeros((2, 1, 2, 2), np.float32))
    with pytest.raises(ValueError, match="cannot merge histograms of 1 and 2 bands"):
        K.merge_histograms(one, two)


# --------------------------------------------------------------------------- dispatch


class _FakeCupyArray:
    """Looks like a CuPy array to the dispatcher without importing CuPy."""

    __module__ = "cupy._core.core"
    shape = (1, 2, 2)
    dtype = np.dtype(np.float32)


def _tile(n: int = 2, c: int = 1, h: int = 3, w: int = 4) -> dict[str, np.ndarray]:
    return {
        "g": np.zeros((c, h, w), np.float32),
        "b": np.zeros((n, c, h, w), np.float32),
        "lo": np.zeros(n, np.float32),
        "hi": np.ones(n, np.float32),
    }


def test_mixed_numpy_and_cupy_inputs_are_refused() -> None:
    t = _tile()
    with pytest.raises(TypeError, match=r"mix NumPy and CuPy arrays \(g is numpy, b is cupy"):
        K.fuse(t["g"], _FakeCupyArray(), t["lo"], t["hi"])
    with pytest.raises(TypeError, match="lo is cupy"):
        K.fuse(t["g"], t["b"], _FakeCupyArray(), t["hi"])
    with pytest.raises(TypeError, match="mix NumPy and CuPy"):
        K.overlay(np.zeros((2, 2), np.float32), _FakeCupyArray())
    assert "cupy" not in sys.modules


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"g": [[[0.0]]]}, TypeError, "g must be a NumPy or CuPy array, got builtins.list"),
        ({"b": np.zeros((2, 1, 3, 4))}, TypeError, "b must be float32, got float64"),
        ({"lo": np.zeros(2, np.float16)}, TypeError, "lo must be float32, got float16"),
        ({"g": np.zeros((3, 4), np.float32)}, ValueError, r"g must be \[C, h, w\], got 2 dim"),
        ({"b": np.zeros((2, 3, 4), np.float32)}, ValueError, r"b must be \[N, C, h, w\]"),
        ({"b": np.zeros((2, 1, 3, 5), np.float32)}, ValueError, "C, h and w must match"),
        ({"b": np.zeros((2, 2, 3, 4), np.float32)}, ValueError, "C, h and w must match"),
        ({"lo": np.zeros(3, np.float32)}, ValueError, r"lo must have shape \(2,\) for N=2"),
        ({"hi": None}, ValueError, "norm='band' needs hi"),
        ({"norm": "global"}, ValueError, "norm must be one of .*'global'"),
        ({"threshold": 1.5}, ValueError, "threshold must be a number in"),
        ({"threshold": float("nan")}, ValueError, "threshold must be a number in"),
        ({"threshold": True}, ValueError, "threshold must be a number in"),
        ({"norm": "pixel"}, ValueError, "lo and hi are only used with norm='band'"),
    ],
)
def test_fuse_refuses_bad_inputs(change: dict[str, Any], error: type, match: str) -> None:
    kwargs: dict[str, Any] = {**_tile(), **change}
    with pytest.raises(error, match=match):
        K.fuse(**kwargs)


@pytest.mark.parametrize("n", [0, 255])
def test_band_count_limits(n: int) -> None:
    t = _tile(n=n)
    with pytest.raises(ValueError, match=rf"N must lie in 1\.\.254, got {n}"):
        K.dissimilarity(t["g"], t["b"])


def test_channel_count_limit() -> None:
    with pytest.raises(ValueError, match="C must be at least 1, got 0"):
        K.dissimilarity_histogram(
            np.zeros((0, 2, 2), np.float32), np.zeros((1, 0, 2, 2), np.float32)
        )


def test_overlay_refuses_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"gray and score must both be \[h, w\]"):
        K.overlay(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32))
    with pytest.raises(TypeError, match="score must be float32"):
        K.overlay(np.zeros((2, 3), np.float32), np.zeros((2, 3)))


# --------------------------------------------------------------------------- docs and data


@pytest.mark.parametrize("module", ["tilex.kernels.api", "tilex.kernels.reference"])
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_cuda_source_is_package_data_and_names_every_kernel() -> None:
    from tilex.kernels import gpu

    source = gpu.cuda_source()
    for op in ("fuse", "dissimilarity", "histogram", "overlay"):
        assert f"tilex_fusion_{op}(" in source
    assert "--fmad=false" in gpu.NVRTC_OPTIONS


# --------------------------------------------------------------------------- meta-test
# Every operation with a backend implementation has a parity case: the public
# functions of the backends are enumerated by introspection, so a kernel added
# without a case in ``tests/parity_cases.py`` fails here.

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
    cases = PARITY_CASES
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
    cases = dict(PARITY_CASES)
    del cases["overlay"]
    assert missing_parity_cases(dispatched_functions(K), cases) == {"overlay"}
