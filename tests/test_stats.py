"""tilex.stats: the statistics options, the sampled squares and the saved band statistics.

Pinned here: which ``--clip`` and ``--stats-sample`` values are accepted (NaN
and infinity never), the automatic sample (5 %, at least 64 squares), the
sample's geometry (deterministic, inside the scan, disjoint squares of the
block grid, the asked fraction, spread one per cell before any cell gets a
second, a function of the shape alone) and the round trips of
:class:`BandStats` through ``tilex.json``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tilex import kernels
from tilex.errors import OutputError, PlanError, UsageError
from tilex.stats import (
    AUTO_FRACTION,
    AUTO_MAX_BLOCKS,
    AUTO_MIN_BLOCKS,
    BLOCK,
    EVIDENCE_BINS,
    SCORE_BINS,
    BandStats,
    Found,
    StatsSpec,
    parse_clip,
    sample_regions,
)

# --------------------------------------------------------------------------- --clip


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1,99", (1.0, 99.0)),
        ("0,100", (0.0, 100.0)),
        (" 2.5 , 97.5 ", (2.5, 97.5)),
        ("0,1e-3", (0.0, 0.001)),
        ((5, 95), (5.0, 95.0)),
        ([0.0, 100.0], (0.0, 100.0)),
    ],
)
def test_parse_clip_accepts(value, expected):
    got = parse_clip(value)
    assert got == expected and all(type(v) is float for v in got)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("5", "'5'"),
        ("1,2,3", "'1,2,3'"),
        ("a,b", "'a,b'"),
        ("", "''"),
        ("90,10", "90,10"),
        ("50,50", "50,50"),
        ("-1,50", "-1,50"),
        ("1,101", "1,101"),
        ("nan,99", "nan,99"),
        ("1,nan", "1,nan"),
        ("1,inf", "1,inf"),
        ("-inf,5", "-inf,5"),
        ((float("nan"), 50.0), "nan,50"),
        ((0.0, float("inf")), "0,inf"),
    ],
)
def test_parse_clip_refuses(value, shown):
    with pytest.raises(PlanError, match="--clip") as caught:
        parse_clip(value)
    assert shown in str(caught.value)
    assert isinstance(caught.value, UsageError) and isinstance(caught.value, ValueError)


# --------------------------------------------------------------------------- StatsSpec


def test_stats_spec_defaults_and_parsing():
    spec = StatsSpec()
    assert (spec.clip, spec.sample, spec.block) == ((1.0, 99.0), None, BLOCK)
    assert StatsSpec(clip="2,98").clip == (2.0, 98.0)
    assert StatsSpec(sample=1.0).sample == 1.0
    with pytest.raises(AttributeError):
        spec.sample = 0.5  # type: ignore[misc]
    assert hash(StatsSpec(clip="2,98")) == hash(StatsSpec(clip=(2, 98)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sample": 0.0}, r"--stats-sample must be a fraction in \(0, 1\], got 0"),
        ({"sample": -0.1}, "--stats-sample .* got -0.1"),
        ({"sample": 1.5}, "--stats-sample .* got 1.5"),
        ({"sample": float("nan")}, "--stats-sample .* got nan"),
        ({"sample": float("inf")}, "--stats-sample .* got inf"),
        ({"clip": "99,1"}, "--clip .* got 99,1"),
        ({"clip": (0.0, float("nan"))}, "--clip .* got 0,nan"),
        ({"block": 8}, "stats block must be >= 16 px, got 8"),
    ],
)
def test_stats_spec_refuses(kwargs, match):
    with pytest.raises(PlanError, match=match):
        StatsSpec(**kwargs)


def blocks_of(shape: tuple[int, int], block: int = BLOCK) -> int:
    return -(-shape[0] // block) * -(-shape[1] // block)


@pytest.mark.parametrize(
    ("shape", "fraction"),
    [
        ((100, 100), 1.0),  # 4 squares: all
        ((512, 512), 1.0),  # exactly 64 squares: all
        ((576, 512), 64 / 72),  # 72 squares: 64 of them
        ((640, 640), 0.64),  # 100 squares: 64 of them
        ((2560, 2560), 0.05),  # 1600 squares: 5 % is 80 >= 64
        ((8192, 8192), AUTO_FRACTION),
        ((18304, 18304), AUTO_FRACTION),  # 81796 squares: 4090 of them, under the cap
        ((18432, 18432), 4096 / 82944),  # 82944 squares: 5 % would be 4148
        ((32768, 32768), 4096 / 262144),  # 1 Gpx: 1.56 %
    ],
)
def test_auto_fraction(shape, fraction):
    assert StatsSpec().fraction_for(shape) == pytest.approx(fraction, rel=1e-12)
    assert StatsSpec(sample=0.3).fraction_for(shape) == 0.3  # given: kept, whatever the shape


@settings(max_examples=100, deadline=None)
@given(st.tuples(st.integers(1, 5000), st.integers(1, 5000)))
def test_auto_sample_is_five_percent_and_at_least_64_squares(shape):
    fraction = StatsSpec().fraction_for(shape)
    n = blocks_of(shape)
    picked = len(sample_regions(shape, fraction))
    assert AUTO_FRACTION <= fraction <= 1.0
    assert picked >= min(AUTO_MIN_BLOCKS, n)
    assert picked == max(math.ceil(AUTO_FRACTION * n - 1e-9), min(AUTO_MIN_BLOCKS, n))


@settings(max_examples=30, deadline=None)
@given(st.tuples(st.integers(1, 60_000), st.integers(1, 60_000)))
def test_auto_sample_stops_growing_at_the_cap(shape):
    """Up to 5 % of the squares, never fewer than 64 nor more than 4096 (a count, not a share)."""
    n = blocks_of(shape)
    fraction = StatsSpec().fraction_for(shape)
    expected = max(
        min(math.ceil(AUTO_FRACTION * n - 1e-9), AUTO_MAX_BLOCKS), min(AUTO_MIN_BLOCKS, n)
    )
    assert fraction <= max(AUTO_FRACTION, AUTO_MIN_BLOCKS / n)
    assert len(sample_regions(shape, fraction)) == expected


# --------------------------------------------------------------------------- sample_regions

fractions = st.one_of(st.sampled_from([0.01, 0.05, 0.1, 0.25, 0.5, 1.0]), st.floats(0.001, 1.0))


@settings(max_examples=150, deadline=None)
@given(
    st.tuples(st.integers(1, 700), st.integers(1, 700)),
    fractions,
    st.sampled_from([16, 32, 64, 100]),
)
def test_sample_is_disjoint_squares_of_the_block_grid_inside_the_scan(shape, fraction, block):
    h, w = shape
    regions = sample_regions(shape, fraction, block)
    assert regions == sample_regions(shape, fraction, block)  # deterministic
    assert regions == sorted(regions)  # row-major
    count = np.zeros(shape, np.int32)
    for y0, y1, x0, x1 in regions:
        assert y0 % block == 0 and x0 % block == 0
        assert (y1, x1) == (min(y0 + block, h), min(x0 + block, w))
        assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
        count[y0:y1, x0:x1] += 1
    assert count.max() == 1, "squares overlap"
    n = blocks_of(shape, block)
    # the asked fraction of the squares, rounded up, at least one
    assert len(regions) == min(n, max(1, math.ceil(fraction * n - 1e-9)))
    assert len(regions) / n >= fraction - 1e-9 and len(regions) / n < fraction + 1 / n + 1e-9


@settings(max_examples=150, deadline=None)
@given(st.tuples(st.integers(1, 2000), st.integers(1, 2000)), fractions)
def test_sample_is_spread_one_per_cell(shape, fraction):
    """Cells of ``s x s`` squares, ``s = floor(1 / sqrt(fraction))``: no cell gets a second
    square before every cell has one."""
    rows, cols = -(-shape[0] // BLOCK), -(-shape[1] // BLOCK)
    regions = sample_regions(shape, fraction)
    if len(regions) == rows * cols:
        return  # everything: nothing to spread
    side = max(1, math.floor(1 / math.sqrt(fraction)))
    per_cell = Counter((y0 // BLOCK // side, x0 // BLOCK // side) for y0, _, x0, _ in regions)
    cells = -(-rows // side) * -(-cols // side)
    least = min(per_cell.values()) if len(per_cell) == cells else 0
    assert max(per_cell.values()) <= least + 1


def test_sample_spreads_over_the_whole_scan():
    # 1 % of a 128 x 128 grid of squares: 164 squares, in 164 different 10 x 10 cells
    regions = sample_regions((8192, 8192), 0.01)
    assert len(regions) == 164
    rows = {y0 // BLOCK for y0, _, _, _ in regions}
    cols = {x0 // BLOCK for _, _, x0, _ in regions}
    assert len({(y0 // 640, x0 // 640) for y0, _, x0, _ in regions}) == 164
    assert min(rows) < 10 and max(rows) >= 118 and min(cols) < 10 and max(cols) >= 118


def test_whole_sample_covers_every_pixel_once():
    regions = sample_regions((130, 200), 1.0, block=64)
    count = np.zeros((130, 200), np.int32)
    for y0, y1, x0, x1 in regions:
        count[y0:y1, x0:x1] += 1
    assert len(regions) == 3 * 4 and (count == 1).all()


def test_sample_depends_on_the_shape_alone():
    """The same squares in another process with another hash seed (no ``hash()``, no global
    state), and a pinned selection: changing the hash changes every run's statistics."""
    expected = sample_regions((1000, 1300), 0.05, 64)
    sample_regions((500, 700), 0.3, 32)  # nothing carries over from one call to the next
    assert sample_regions((1000, 1300), 0.05, 64) == expected
    code = "from tilex.stats import sample_regions; print(sample_regions((1000, 1300), 0.05, 64))"
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert other.stdout.strip() == str(expected)
    assert sample_regions((1000, 1000), 0.1, block=256) == [
        (0, 256, 768, 1000),
        (768, 1000, 512, 768),
    ]


# --------------------------------------------------------------------------- BandStats


def band_stats(**changes) -> BandStats:
    values = dict(
        band_names=("ir1000", "uv"),
        lo=(0.015625, 0.25),
        hi=(1.5, 2.0000002),
        clip=(1.0, 99.0),
        sample=0.05,
        pixels=12345,
        dmin=(0.0, 0.1),
        dmax=(3.0, 4.5),
    )
    values.update(changes)
    return BandStats(**values)


def test_band_stats_round_trip_through_json():
    stats = band_stats()
    assert BandStats.from_dict(stats.to_dict()) == stats
    again = BandStats.from_dict(json.loads(json.dumps(stats.to_dict())))  # tuples became lists
    assert again == stats and isinstance(again.lo, tuple) and isinstance(again.band_names, tuple)
    lo, hi = again.arrays()
    assert lo.dtype == hi.dtype == np.float32
    np.testing.assert_array_equal(hi, np.float32([1.5, 2.0000002]))


@pytest.mark.parametrize(
    "missing", ["band_names", "lo", "hi", "clip", "sample", "pixels", "dmin", "dmax"]
)
def test_band_stats_from_dict_names_a_missing_key(missing):
    data = band_stats().to_dict()
    del data[missing]
    with pytest.raises(OutputError, match=f"band statistics lack the key '{missing}'"):
        BandStats.from_dict(data)


def test_band_stats_from_histogram():
    g = np.zeros((1, 4, 5), np.float32)
    b = np.stack(
        [np.arange(20, dtype=np.float32).reshape(1, 4, 5), np.full((1, 4, 5), 2.5, np.float32)]
    )
    merged = kernels.dissimilarity_histogram(g, b)
    stats = BandStats.from_histogram(merged, ("a", "b"), StatsSpec(clip=(0, 100)), 1.0, 20)
    # (0, 100) gives exactly the minima and maxima
    assert stats.lo == (0.0, 2.5) and stats.hi == (19.0, 2.5)
    assert stats.dmin == (0.0, 2.5) and stats.dmax == (19.0, 2.5)
    assert (stats.clip, stats.sample, stats.pixels, stats.band_names) == (
        (0.0, 100.0),
        1.0,
        20,
        ("a", "b"),
    )
    assert BandStats.from_dict(json.loads(json.dumps(stats.to_dict()))) == stats


def write_manifest(folder, stats) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "output": {"ome_zarr_version": "0.5", "zarr_format": 3, "images": {}},
        "stats": stats,
    }
    (folder / "tilex.json").write_text(json.dumps(manifest))


def test_band_stats_from_output(tmp_path):
    stats = band_stats()
    write_manifest(tmp_path / "out", stats.to_dict())
    assert BandStats.from_output(tmp_path / "out") == stats
    assert BandStats.from_output(tmp_path / "out" / "tilex.json") == stats


def test_band_stats_from_output_errors(tmp_path):
    with pytest.raises(OutputError, match=r"nowhere is not a tilex output: no tilex.json"):
        BandStats.from_output(tmp_path / "nowhere")
    write_manifest(tmp_path / "pixel", None)
    with pytest.raises(
        OutputError, match=r"pixel: holds no band statistics \(was it run with --norm pixel\?\)"
    ):
        BandStats.from_output(tmp_path / "pixel")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tilex.json").write_text("{not json")
    with pytest.raises(OutputError, match="is not a valid tilex manifest"):
        BandStats.from_output(broken)
    stats = band_stats().to_dict()
    del stats["hi"]
    write_manifest(tmp_path / "old", stats)
    with pytest.raises(OutputError, match="lack the key 'hi'"):
        BandStats.from_output(tmp_path / "old")


def test_check_bands():
    stats = band_stats()
    stats.check_bands(("ir1000", "uv"), "a/tilex.json")
    stats.check_bands(["ir1000", "uv"], "a/tilex.json")  # any sequence
    with pytest.raises(
        OutputError,
        match=r"statistics from a/tilex.json are for bands \['ir1000', 'uv'\] "
        r"but the scan has bands \['uv', 'ir1000'\]",
    ):
        stats.check_bands(("uv", "ir1000"), "a/tilex.json")
    with pytest.raises(OutputError, match=r"but the scan has bands \['ir1000'\]"):
        stats.check_bands(("ir1000",), "a/tilex.json")


def test_found_adds_up_over_regions_and_says_what_was_flagged():
    rng = np.random.default_rng(3)
    winner = rng.integers(0, 4, (40, 30)).astype(np.uint8)
    score = np.where(winner > 0, rng.random((40, 30)), 0).astype(np.float32)
    whole = Found.of(score, winner, 3)
    parts = Found.of(score[:17], winner[:17], 3).merge(Found.of(score[17:], winner[17:], 3))
    assert parts == whole
    assert whole.pixels == 1200 and whole.flagged_fraction == (winner > 0).mean()
    assert sum(whole.histogram) == int((winner > 0).sum())
    record = whole.to_dict(("a", "b", "c"))
    assert [b["pixels"] for b in record["bands"]] == [int((winner == i).sum()) for i in (1, 2, 3)]
    assert len(record["score_histogram"]["edges"]) == SCORE_BINS + 1
    best = ("a", "b", "c")[int(np.argmax(whole.winners[1:]))]
    assert f"band {best!r} wins" in whole.describe(("a", "b", "c"))
    empty = Found.of(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8), 3)
    assert empty.describe(("a", "b", "c")) == "nothing flagged"


def test_found_counts_what_numpy_counts_on_the_edges_and_outside_them():
    """Found.of counts in one compiled pass; the oracle is the NumPy it replaced:
    bincount, np.histogram of the flagged scores and searchsorted of the evidence."""
    edges = np.concatenate(
        [
            (np.arange(EVIDENCE_BINS + 1) / EVIDENCE_BINS).astype(np.float32),
            np.histogram_bin_edges(np.zeros(1, np.float32), SCORE_BINS, (0.0, 1.0)),
        ]
    )
    special = np.concatenate(
        [
            edges,
            np.nextafter(edges, np.float32(-1)),
            np.nextafter(edges, np.float32(2)),
            np.array([-0.0, -1.0, 1.5, np.inf, -np.inf, np.nan], np.float32),
        ]
    )
    rng = np.random.default_rng(11)
    values = np.concatenate([special, rng.random(4000, dtype=np.float32) * np.float32(1.2)])
    rng.shuffle(values)
    score = values.reshape(-1, 4)
    evidence = rng.permutation(values).reshape(-1, 4)
    winner = rng.integers(0, 4, score.shape).astype(np.uint8)
    found = Found.of(score, winner, 3, evidence)
    assert found.winners == tuple(np.bincount(winner.ravel(), minlength=4).tolist())
    flagged = score[winner > 0]
    assert found.histogram == tuple(np.histogram(flagged, SCORE_BINS, (0.0, 1.0))[0].tolist())
    grid = (np.arange(EVIDENCE_BINS + 1) / EVIDENCE_BINS).astype(np.float32)
    index = np.clip(np.searchsorted(grid, evidence.ravel(), "left") - 1, 0, EVIDENCE_BINS - 1)
    assert found.evidence == tuple(np.bincount(index, minlength=EVIDENCE_BINS).tolist())
    assert Found.of(score, winner, 3).evidence == ()


def test_found_reads_the_share_flagged_at_any_grid_threshold_from_the_evidence():
    rng = np.random.default_rng(5)
    evidence = np.clip(rng.random((50, 40), dtype=np.float32), np.float32(0.1), np.float32(1.0))
    evidence[:5] = np.float32(0.1)  # the clamp's floor: flagged at no threshold >= 0.1
    evidence[5, :20] = (np.arange(20) / 20).astype(np.float32)  # values exactly on the edges
    evidence[6, :3] = 0.0  # every band NaN
    for t in (0.1, 0.2, 0.37, 0.5, 0.75, 0.99):
        flagged = evidence > np.float32(t)
        winner = flagged.astype(np.uint8)
        found = Found.of(np.where(flagged, evidence, 0), winner, 1, evidence)
        assert found.flagged_at(t) == flagged.mean() == found.flagged_fraction
        parts = Found.of(evidence[:21] * flagged[:21], winner[:21], 1, evidence[:21]).merge(
            Found.of(evidence[21:] * flagged[21:], winner[21:], 1, evidence[21:])
        )
        assert parts == found
    assert found.to_dict(("a",))["flagged_at"]["0.5"] == (evidence > np.float32(0.5)).mean()
