"""Whole-scan normalisation statistics for ``norm="noise"`` and ``norm="band"``.

Mode ``noise`` (the default) gives the score an absolute meaning. Each band's
*noise floor* is ``T_i = max(m_i + NOISE_K * s_i, ABS_FLOOR)``, with ``m_i``
the median of ``d_i`` over the scan and ``s_i = 1.4826 * MAD`` its robust
spread (both read from the same histogram; robust while the hidden content
covers less than half of the scan). The kernels then get ``lo_i = 0`` and
``hi_i = 2 T_i``, so the score is ``d_i / (2 T_i)``: 0 where a band equals
what it is compared with (such a band flags nothing), 0.5 at its noise floor
(the default threshold: flagged means more than ``NOISE_K`` robust spreads
above the scan's typical dissimilarity), 1 at twice the floor. ``NOISE_K =
11`` puts the floor at 7.2 sigma of a band holding only Gaussian noise (``d``
half-normal: its median is 0.674 and its ``1.4826 * MAD`` 0.591 of the
noise's sigma), where noise alone flags about 1 pixel in 10**12. What exceeds
it in a real scan is what the calibration cannot explain: edges of painted
shapes, glints, paint whose infrared no colour predicts, and hidden content.
The number is a choice of operating point, measured on held-out scenes with
nothing hidden (``benchmarks/bench_detection.py``): 6 spreads flagged too
much of them once the calibration's fit was trimmed harder
(:data:`tilex.calibration.CUTOFF`), 8 once it also left out whole squares
(:data:`tilex.calibration.SQUARE_CUT`), which explains less of what a
painting does not hide: one held-out scene with nothing hidden (seed 8018)
went from 1.5 % to 2.9 % flagged at 8 and is at about 1.6 % at 11. The ROC AUC
barely moves with it (0.002 per spread).

Mode ``band`` normalises each band's dissimilarity map ``d_i`` by a range
``[lo_i, hi_i]`` measured over the *whole scan*, never over one tile, so that
tiles agree and no seam appears. The range is a pair of percentiles of ``d_i``
(``clip``, default ``(1, 99)``): robust to the dust, specks and specular
highlights that would set a plain min/max, while ``(0, 100)`` gives exactly the
min and max.

The percentiles come from exact mergeable summaries
(:func:`tilex.kernels.dissimilarity_histogram`): integer counts over a fixed
set of float32 bins plus exact minima and maxima. Merging is addition, so the
result does not depend on the tile size, the visiting order or the number of
threads or workers.

``sample`` chooses a deterministic, stratified spatial sample: the scan is cut
into ``block`` x ``block`` squares anchored at (0, 0); the squares are grouped
in cells of ``s`` x ``s`` squares with ``s = floor(1 / sqrt(sample))``, each
square gets a fixed hash of its position, and the ``ceil(sample * count)``
squares are taken one per cell at most, lowest hashes first. So the sample is
spread evenly over the painting (its statistics vary from place to place) and
depends only on the scan size, never on the tiling. Each square is read with
its halo, so its ``d`` values equal those of the full pass.

The default (``sample=None``) measures 5% of the scan in 64 px squares, at
least 64 squares (everything on a scan of at most 64 squares) and at most
4096 (:data:`AUTO_MAX_BLOCKS`: from 335 Mpx up the pass costs the same
whatever the scan's size). Squares of 64 px cost 1.4x their area in encoder
work (the halo), so the pass adds about 7% to a run of up to 335 Mpx.
Measured by ``benchmarks/bench_stats.py`` on an 8192 px synthetic scan
(pixel features), against every pixel: ``hi`` within 1.4% of the range and
1.3% of winners changed at 5%; 0.4% and 0.4% at 10%. Smaller
squares spread the same work over more places and win over larger ones
(128 px squares at 5%: 4.8% and 3.6%). The error falls with the number of
squares: on a 2048 px scan with the encoder (52 squares at 5%) ``lo`` moved by
9.8% of the range and 11.7% of winners changed, mostly noise pixels near the
threshold (the ROC AUC against the hidden figure stayed 0.997). Use
``--stats-sample 1`` for exact statistics, or ``--stats-from`` to normalise a
series alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tilex.errors import OutputError, PlanError
from tilex.grid import Region
from tilex.omezarr.format import read_manifest

__all__ = [
    "AUTO_FRACTION",
    "ABS_FLOOR",
    "AUTO_MAX_BLOCKS",
    "AUTO_MIN_BLOCKS",
    "BLOCK",
    "MAD_TO_SIGMA",
    "NOISE_K",
    "EVIDENCE_BINS",
    "SCORE_BINS",
    "BandStats",
    "Found",
    "StatsSpec",
    "noise_floor",
    "parse_clip",
    "sample_regions",
]

NOISE_K = 11.0
"""``norm="noise"``: the floor lies this many robust spreads above the median of ``d``."""

ABS_FLOOR = 2.0**-16
"""``norm="noise"``: the least floor, one 16-bit grey level (float32 rounding never counts)."""

MAD_TO_SIGMA = 1.4826
"""Times the median absolute deviation: the standard deviation of normal data (a robust spread)."""

AUTO_FRACTION = 0.05
"""With ``sample=None`` (auto), the fraction of the scan measured (see ``bench_stats.py``)."""

AUTO_MIN_BLOCKS = 64
"""With ``sample=None`` (auto), at least this many blocks (or all) on small scans."""

AUTO_MAX_BLOCKS = 4096
"""With ``sample=None`` (auto), at most this many blocks (16.8 Mpx) on large scans.

How well a sample estimates a median, a spread or a percentile depends on how many
squares it holds, not on what share of the scan they are: the auto sample of an
8192^2 scan holds 820 and this cap five times that. Above 335 Mpx the 5 % would be
more, and the statistics pass would keep growing with the scan; with the cap it
stops there. (The calibration fit keeps every k-th sampled square, as many as its
cache holds, so its cost was bounded already.)"""

BLOCK = 64
"""Side of the sampled squares, px (small squares spread the sample over more places)."""


def parse_clip(text: str | tuple[float, float]) -> tuple[float, float]:
    """Parse ``"LO,HI"`` percentiles, 0 <= LO < HI <= 100.

    Examples
    --------
    >>> parse_clip("1,99")
    (1.0, 99.0)
    """
    if isinstance(text, str):
        parts = text.split(",")
        try:
            lo, hi = (float(p) for p in parts)
        except ValueError:
            raise PlanError(f"--clip must be two percentiles 'LO,HI', got {text!r}") from None
    else:
        lo, hi = (float(v) for v in text)
    if not (0.0 <= lo < hi <= 100.0):
        raise PlanError(f"--clip percentiles must satisfy 0 <= LO < HI <= 100, got {lo:g},{hi:g}")
    return lo, hi


@dataclass(frozen=True)
class StatsSpec:
    """How the statistics pass measures ``[lo_i, hi_i]``."""

    clip: tuple[float, float] = (1.0, 99.0)
    sample: float | None = None  # None: AUTO_FRACTION, within AUTO_MIN/MAX_BLOCKS blocks
    block: int = BLOCK

    def __post_init__(self) -> None:
        object.__setattr__(self, "clip", parse_clip(self.clip))
        if self.sample is not None and not (0.0 < self.sample <= 1.0):
            raise PlanError(f"--stats-sample must be a fraction in (0, 1], got {self.sample:g}")
        if self.block < 16:
            raise PlanError(f"stats block must be >= 16 px, got {self.block}")

    def fraction_for(self, shape: tuple[int, int]) -> float:
        if self.sample is not None:
            return self.sample
        blocks = -(-shape[0] // self.block) * -(-shape[1] // self.block)
        return min(1.0, max(min(AUTO_FRACTION, AUTO_MAX_BLOCKS / blocks), AUTO_MIN_BLOCKS / blocks))


def sample_regions(shape: tuple[int, int], fraction: float, block: int = BLOCK) -> list[Region]:
    """The deterministic, stratified sample of ``block`` squares covering ``fraction`` of a scan.

    Returned in row-major order. ``fraction=1`` gives every square.

    Examples
    --------
    >>> len(sample_regions((1000, 1000), 1.0, block=256))
    16
    >>> sample_regions((1000, 1000), 0.1, block=256)  # ceil(1.6) = 2 squares, in 2 of 4 cells
    [(0, 256, 768, 1000), (768, 1000, 512, 768)]
    """
    h, w = shape
    rows, cols = -(-h // block), -(-w // block)
    keep = max(1, math.ceil(fraction * rows * cols - 1e-9))
    if keep >= rows * cols:
        chosen = range(rows * cols)
    else:
        by, bx = np.meshgrid(
            np.arange(rows, dtype=np.uint64), np.arange(cols, dtype=np.uint64), indexing="ij"
        )
        keys = _splitmix64((by << np.uint64(32)) | bx).ravel()
        side = max(1, math.floor(1.0 / math.sqrt(fraction)))
        cell = (by.ravel() // np.uint64(side)) * np.uint64(cols) + bx.ravel() // np.uint64(side)
        # rank of each square inside its cell by hash: 0 for the cell's first pick
        order = np.lexsort((keys, cell))
        first = np.r_[True, cell[order][1:] != cell[order][:-1]]
        starts = np.maximum.accumulate(np.where(first, np.arange(order.size), 0))
        rank = np.empty(order.size, np.int64)
        rank[order] = np.arange(order.size) - starts
        chosen = sorted(int(i) for i in np.lexsort((keys, rank))[:keep])
    regions = []
    for i in chosen:
        r, c = divmod(i, cols)
        regions.append((r * block, min((r + 1) * block, h), c * block, min((c + 1) * block, w)))
    return regions


def noise_floor(merged: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per band ``(median, spread, floor)`` of a merged dissimilarity histogram (float64 ``[N]``).

    ``median`` is the 50th percentile (:func:`tilex.kernels.histogram_percentiles`);
    ``spread`` is ``1.4826`` times the median absolute deviation from it, read
    from the same counts with each bin at its lower edge (so it is exact to the
    bin width, 2**-10 relative, and independent of the tiling); ``floor`` is
    ``max(median + NOISE_K * spread, ABS_FLOOR)``. A band without values
    gives NaN.

    Examples
    --------
    >>> from tilex import kernels
    >>> g = np.zeros((1, 1, 9), np.float32)
    >>> b = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1], np.float32).reshape(1, 1, 1, 9)
    >>> noise_floor(kernels.histogram_reference(g, b))  # identical but for one pixel
    (array([0.]), array([0.]), array([1.52587891e-05]))
    """
    from tilex import kernels

    median = kernels.histogram_percentiles(merged, 50.0)
    spread = np.full(median.shape, np.nan)
    counts = np.asarray(merged.counts)
    for i in np.flatnonzero(np.isfinite(median)):
        bins = np.flatnonzero(counts[i])
        n = counts[i, bins]
        dev = np.abs(kernels.bin_lower_edge(bins).astype(np.float64) - median[i])
        order = np.argsort(dev, kind="stable")
        cum = np.cumsum(n[order])
        k = int(np.searchsorted(cum, (cum[-1] - 1) // 2, side="right"))  # the lower median
        spread[i] = MAD_TO_SIGMA * dev[order][k]
    floor = np.maximum(median + NOISE_K * spread, ABS_FLOOR)
    return median, spread, floor


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A fixed 64-bit mix of block positions: the sample's 'random' order."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@dataclass(frozen=True)
class BandStats:
    """Per-band normalisation ranges measured over a scan (saved with the output)."""

    band_names: tuple[str, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    clip: tuple[float, float]
    sample: float
    pixels: int  # pixels measured per band
    dmin: tuple[float, ...]
    dmax: tuple[float, ...]
    median: tuple[float, ...] = ()
    spread: tuple[float, ...] = ()
    floor: tuple[float, ...] = ()  # noise floors; empty in statistics saved before they existed

    @classmethod
    def from_histogram(
        cls, merged: Any, band_names: tuple[str, ...], spec: StatsSpec, fraction: float, pixels: int
    ) -> BandStats:
        """The ranges a merged dissimilarity histogram gives (see :mod:`tilex.engine.statistics`)."""
        from tilex import kernels

        lo = kernels.histogram_percentiles(merged, spec.clip[0])
        hi = kernels.histogram_percentiles(merged, spec.clip[1])
        median, spread, floor = noise_floor(merged)
        return cls(
            band_names=tuple(band_names),
            lo=tuple(float(v) for v in lo),
            hi=tuple(float(v) for v in hi),
            clip=spec.clip,
            sample=fraction,
            pixels=int(pixels),
            dmin=tuple(float(v) for v in merged.dmin),
            dmax=tuple(float(v) for v in merged.dmax),
            median=tuple(float(v) for v in median),
            spread=tuple(float(v) for v in spread),
            floor=tuple(float(v) for v in floor),
        )

    def arrays(self, norm: str = "band") -> tuple[np.ndarray, np.ndarray]:
        """The kernels' float32 ``lo`` and ``hi``: percentiles (``band``) or ``0, 2 * floor`` (``noise``)."""
        if norm == "noise":
            if len(self.floor) != len(self.band_names):
                raise OutputError(
                    "these band statistics hold no noise floors (saved by an older tilex): "
                    "use --norm band, or measure them again"
                )
            floor = np.asarray(self.floor, np.float32)
            return np.zeros_like(floor), floor * np.float32(2.0)
        return np.asarray(self.lo, np.float32), np.asarray(self.hi, np.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BandStats:
        fields = ("band_names", "lo", "hi", "clip", "sample", "pixels", "dmin", "dmax")
        try:
            values = {k: data[k] for k in fields}
        except KeyError as err:
            raise OutputError(f"band statistics lack the key {err.args[0]!r}") from None
        for k in ("median", "spread", "floor"):
            values[k] = data.get(k, ())
        for k in ("band_names", "lo", "hi", "clip", "dmin", "dmax", "median", "spread", "floor"):
            values[k] = tuple(values[k])
        return cls(**values)

    @classmethod
    def from_output(cls, path: str | Path) -> BandStats:
        """Read the statistics saved in a tilex output (its folder or its ``tilex.json``),
        for ``--stats-from``."""
        stats = read_manifest(path).get("stats")
        if not stats:
            raise OutputError(f"{path}: holds no band statistics (was it run with --norm pixel?)")
        return cls.from_dict(stats)

    def check_bands(self, band_names: tuple[str, ...], source: object) -> None:
        """Refuse statistics measured on other bands than the scan's."""
        if tuple(band_names) != tuple(self.band_names):
            raise OutputError(
                f"statistics from {source} are for bands {list(self.band_names)} "
                f"but the scan has bands {list(band_names)}"
            )


SCORE_BINS = 20
"""Bins of the score histogram in :class:`Found` (0.05 wide over [0, 1])."""

EVIDENCE_BINS = 100
"""Bins of the evidence histogram in :class:`Found` (0.01 wide over [0, 1]): the step of a threshold."""


_SCORE_EDGES = np.histogram_bin_edges(np.zeros(1, np.float32), SCORE_BINS, (0.0, 1.0))
_EVIDENCE_EDGES = (np.arange(EVIDENCE_BINS + 1) / EVIDENCE_BINS).astype(np.float32)


@dataclass(frozen=True)
class Found:
    """What a run flagged: a mergeable summary of its score and winner maps.

    ``winners[i]`` counts the pixels band ``i`` wins (``winners[0]``: no band,
    nothing flagged); ``histogram`` counts the scores of the flagged pixels in
    :data:`SCORE_BINS` equal bins over [0, 1]; ``evidence`` counts every
    pixel's evidence (its score before the threshold, see
    :func:`tilex.engine.fuse_with_evidence`) in :data:`EVIDENCE_BINS` bins, so
    the share flagged at another threshold can be read without a new run
    (``()`` when the output keeps no evidence). Summaries of disjoint regions
    (the output's write units, written by any process in any order) add up to
    the whole scan's, so the sink journals one per unit and merges them at the
    end, resumed or not.

    Examples
    --------
    >>> found = Found.of(np.array([[0.0, 0.7]], np.float32), np.array([[0, 2]], np.uint8), 2)
    >>> found.flagged_fraction, found.winners
    (0.5, (1, 0, 1))
    >>> evidence = np.array([[0.3, 0.7]], np.float32)
    >>> found = Found.of(evidence * (evidence > 0.5), evidence > 0.5, 1, evidence)
    >>> found.flagged_at(0.2), found.flagged_at(0.3), found.flagged_at(0.5)
    (1.0, 0.5, 0.5)
    """

    winners: tuple[int, ...]
    histogram: tuple[int, ...]
    evidence: tuple[int, ...] = ()

    @classmethod
    def of(
        cls,
        score: np.ndarray,
        winner: np.ndarray,
        n_bands: int,
        evidence: np.ndarray | None = None,
    ) -> Found:
        """The summary of one region's ``score`` and ``winner`` maps (and its ``evidence``).

        ``histogram`` bins the flagged pixels' scores as ``np.histogram(...,
        SCORE_BINS, (0, 1))`` does; evidence bin ``k`` holds (edge ``k``, edge
        ``k + 1``] at float32 edges, as the kernels compare. Counted in one
        compiled pass (:mod:`tilex._found`), the same integers as NumPy's.
        """
        from tilex._found import found_counts

        winners, counts, spread = found_counts(
            score, winner, n_bands, evidence, _SCORE_EDGES, _EVIDENCE_EDGES
        )
        return cls(
            tuple(int(v) for v in winners),
            tuple(int(v) for v in counts),
            () if spread is None else tuple(int(v) for v in spread),
        )

    def merge(self, other: Found) -> Found:
        return Found(
            tuple(a + b for a, b in zip(self.winners, other.winners, strict=True)),
            tuple(a + b for a, b in zip(self.histogram, other.histogram, strict=True)),
            tuple(a + b for a, b in zip(self.evidence, other.evidence, strict=True))
            if self.evidence and other.evidence
            else (),
        )

    def flagged_at(self, threshold: float) -> float:
        """The share of pixels a run at ``threshold`` would flag (``evidence > threshold``).

        Exact for thresholds on the histogram's 0.01 grid (bin ``k`` holds the
        evidence in ``(k / 100, (k + 1) / 100]``, edges rounded to float32 as
        the kernels compare); another threshold is read at the grid step below
        it. NaN when the output keeps no evidence.
        """
        if not self.evidence:
            return float("nan")
        first = min(max(int(math.floor(threshold * EVIDENCE_BINS + 1e-9)), 0), EVIDENCE_BINS)
        return sum(self.evidence[first:]) / max(sum(self.evidence), 1)

    @property
    def pixels(self) -> int:
        return sum(self.winners)

    @property
    def flagged_fraction(self) -> float:
        return (self.pixels - self.winners[0]) / max(self.pixels, 1)

    def to_dict(self, band_names: tuple[str, ...]) -> dict[str, Any]:
        """For ``tilex.json``: the flagged share, each band's share, the score histogram."""
        total = max(self.pixels, 1)
        return {
            "pixels": self.pixels,
            "flagged_fraction": self.flagged_fraction,
            "bands": [
                {"band": name, "pixels": n, "fraction": n / total}
                for name, n in zip(band_names, self.winners[1:], strict=True)
            ],
            "score_histogram": {
                "edges": [round(i / SCORE_BINS, 6) for i in range(SCORE_BINS + 1)],
                "counts": list(self.histogram),
            },
            **(
                {
                    "evidence_histogram": {
                        "edges": [round(i / EVIDENCE_BINS, 6) for i in range(EVIDENCE_BINS + 1)],
                        "counts": list(self.evidence),
                    },
                    "flagged_at": {f"{t / 10:.1f}": self.flagged_at(t / 10) for t in range(1, 10)},
                }
                if self.evidence
                else {}
            ),
        }

    def describe(self, band_names: tuple[str, ...]) -> str:
        """One line for people: how much is flagged, and by which band most."""
        if self.pixels == self.winners[0]:
            return "nothing flagged"
        most = int(np.argmax(self.winners[1:]))
        share = self.winners[1 + most] / max(self.pixels - self.winners[0], 1)
        return (
            f"flagged {self.flagged_fraction:.1%} of the scan; band {band_names[most]!r} "
            f"wins {share:.0%} of that"
        )
