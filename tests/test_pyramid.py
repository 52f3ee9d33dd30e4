"""tilex.pyramid: level shapes, transforms and the 2x2 reductions, against naive oracles."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilex import pyramid
from tilex.pyramid import (
    level_shapes,
    level_transform,
    reduce_mean,
    reduce_mean_uint8,
    reduce_mode,
)


def _blocks(h: int, w: int):
    for by in range(math.ceil(h / 2)):
        for bx in range(math.ceil(w / 2)):
            yield by, bx, slice(2 * by, min(2 * by + 2, h)), slice(2 * bx, min(2 * bx + 2, w))


def naive_mean(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[-2:]
    out = np.zeros((*a.shape[:-2], math.ceil(h / 2), math.ceil(w / 2)), np.float64)
    for by, bx, ys, xs in _blocks(h, w):
        out[..., by, bx] = a[..., ys, xs].astype(np.float64).mean(axis=(-2, -1))
    return out


def naive_mode(a: np.ndarray) -> np.ndarray:
    h, w = a.shape
    out = np.zeros((math.ceil(h / 2), math.ceil(w / 2)), np.uint8)
    for by, bx, ys, xs in _blocks(h, w):
        counts = Counter(int(v) for v in a[ys, xs].ravel() if v)
        if counts:
            top = max(counts.values())
            out[by, bx] = min(v for v, n in counts.items() if n == top)
    return out


def test_level_shapes_halve_with_ceil_until_one_chunk():
    assert level_shapes((2500, 1700), 256) == [
        (2500, 1700), (1250, 850), (625, 425), (313, 213), (157, 107)
    ]  # fmt: skip
    assert level_shapes((512, 512)) == [(512, 512)]
    assert level_shapes((513, 1)) == [(513, 1), (257, 1)]
    assert level_shapes((1, 1)) == [(1, 1)]


@pytest.mark.parametrize("shape", [(0, 5), (5, -1)])
def test_level_shapes_refuse_empty(shape):
    with pytest.raises(ValueError, match="positive"):
        level_shapes(shape)


def test_level_transform_is_pixel_centred():
    # level k pixel 0 covers level-0 pixels 0 .. 2^k - 1: its centre is (2^k - 1) / 2
    for k in range(6):
        scale, shift = level_transform(k)
        assert scale == 2**k
        assert shift == np.mean(np.arange(2**k))
    assert level_transform(2, pixel_size=0.25) == (1.0, 0.375)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), c=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_reduce_mean_matches_naive_mean_over_existing_pixels(h, w, c, seed):
    a = np.random.default_rng(seed).normal(size=(c, h, w)).astype(np.float32)
    got = reduce_mean(a)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, naive_mean(a), rtol=1e-6, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_reduce_mean_uint8_rounds_half_up(h, w, seed):
    a = np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8)
    got = reduce_mean_uint8(a)
    want = np.floor(naive_mean(a) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(got, want)


def test_reduce_mean_uint8_extremes():
    a = np.array([[255, 255], [255, 254]], np.uint8)
    assert reduce_mean_uint8(a).tolist() == [[255]]  # 254.75 -> 255, never overflows
    assert reduce_mean_uint8(np.array([[1, 2]], np.uint8)).tolist() == [[2]]  # 1.5 -> 2


@settings(max_examples=100, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), n=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_reduce_mode_matches_naive_mode(h, w, n, seed):
    a = np.random.default_rng(seed).integers(0, n + 1, (h, w), dtype=np.uint8)
    np.testing.assert_array_equal(reduce_mode(a), naive_mode(a))


@pytest.mark.parametrize(
    ("block", "want"),
    [
        ([[0, 0], [0, 0]], 0),  # 0 only when all are 0
        ([[0, 0], [0, 7]], 7),  # zeros never win, even as the majority
        ([[3, 3], [2, 2]], 2),  # tie: lowest band
        ([[3, 5], [7, 9]], 3),  # four-way tie: lowest band
        ([[9, 9], [9, 1]], 9),
        ([[255, 255], [1, 0]], 255),
    ],
)
def test_reduce_mode_rules(block, want):
    assert reduce_mode(np.array(block, np.uint8)).item() == want


def test_reductions_refuse_wrong_dtypes():
    with pytest.raises(TypeError, match="float"):
        reduce_mean(np.zeros((2, 2), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        reduce_mean_uint8(np.zeros((2, 2), np.float32))
    with pytest.raises(TypeError, match="uint8"):
        reduce_mode(np.zeros((2, 2), np.int32))


@pytest.mark.parametrize(
    "shape", [(256, 256), (3, 257, 300), (301, 255), (2, 1, 65536), (65537, 1)]
)
def test_compiled_reductions_equal_the_numpy_formulas(shape, monkeypatch):
    """Large uint8 arrays go through tilex._reduce; the NumPy formulas are the oracle."""
    rng = np.random.default_rng(len(shape) * 1000 + shape[-1])
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    image.flat[: min(image.size, 4096)] = 255  # the largest sums
    labels = rng.integers(0, 4, shape, dtype=np.uint8)  # few labels: ties and zeros
    labels.flat[-5:] = rng.integers(200, 256, 5, dtype=np.uint8)
    compiled = reduce_mean_uint8(image), reduce_mode(labels)
    monkeypatch.setattr(pyramid, "COMPILED_FROM", 1 << 62)  # NumPy for any size
    numpy_made = reduce_mean_uint8(image), reduce_mode(labels)
    for got, want in zip(compiled, numpy_made, strict=True):
        assert got.dtype == want.dtype == np.uint8
        np.testing.assert_array_equal(got, want)


def test_reduce_of_concatenated_units_equals_reduce_of_whole():
    # the streaming sink reduces each even-sized unit alone; that must equal reducing the whole
    rng = np.random.default_rng(1)
    a = rng.random((2, 12, 7)).astype(np.float32)
    left, right = a[..., :8], a[..., 8:]
    np.testing.assert_array_equal(
        np.concatenate([reduce_mean(left), reduce_mean(right)], axis=-1), reduce_mean(a)
    )
    labels = rng.integers(0, 4, (12, 7), dtype=np.uint8)
    np.testing.assert_array_equal(
        np.concatenate([reduce_mode(labels[:, :4]), reduce_mode(labels[:, 4:])], axis=-1),
        reduce_mode(labels),
    )
