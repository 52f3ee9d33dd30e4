"""Whole-scan normalisation statistics for ``norm="band"``.

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

``sample`` chooses a deterministic spatial sample: the scan is cut into
``block`` x ``block`` squares anchored at (0, 0), each square gets a fixed
hash of its position, and the ``ceil(sample * count)`` squares with the lowest
hashes are measured (each read with its halo, so its ``d`` values equal the
full pass's). The sample depends only on the scan size, never on the tiling.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tilex.errors import OutputError
from tilex.grid import Region

__all__ = [
    "AUTO_FULL_PIXELS",
    "BandStats",
    "StatsSpec",
    "parse_clip",
    "sample_regions",
]

AUTO_FULL_PIXELS = 4 * 2**20
"""With ``sample=None`` (auto), scans up to this many pixels are measured in full."""

AUTO_FRACTION = 0.05
"""With ``sample=None`` (auto), the fraction measured on larger scans."""


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
            raise ValueError(f"clip must be two percentiles 'LO,HI', got {text!r}") from None
    else:
        lo, hi = (float(v) for v in text)
    if not (0.0 <= lo < hi <= 100.0):
        raise ValueError(f"clip percentiles must satisfy 0 <= LO < HI <= 100, got {lo:g},{hi:g}")
    return lo, hi


@dataclass(frozen=True)
class StatsSpec:
    """How the statistics pass measures ``[lo_i, hi_i]``."""

    clip: tuple[float, float] = (1.0, 99.0)
    sample: float | None = None  # None: every pixel up to AUTO_FULL_PIXELS, else AUTO_FRACTION
    block: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(self, "clip", parse_clip(self.clip))
        if self.sample is not None and not (0.0 < self.sample <= 1.0):
            raise ValueError(f"stats sample must be in (0, 1], got {self.sample:g}")
        if self.block < 16:
            raise ValueError(f"stats block must be >= 16 px, got {self.block}")

    def fraction_for(self, shape: tuple[int, int]) -> float:
        if self.sample is not None:
            return self.sample
        return 1.0 if shape[0] * shape[1] <= AUTO_FULL_PIXELS else AUTO_FRACTION


def sample_regions(shape: tuple[int, int], fraction: float, block: int = 256) -> list[Region]:
    """The deterministic sample of ``block`` squares covering ``fraction`` of a scan.

    Returned in row-major order. ``fraction=1`` gives every square.

    Examples
    --------
    >>> len(sample_regions((1000, 1000), 1.0, block=256))
    16
    >>> sample_regions((1000, 1000), 0.1, block=256)  # ceil(1.6) = 2 squares
    [(0, 256, 768, 1000), (768, 1000, 512, 768)]
    """
    h, w = shape
    rows, cols = -(-h // block), -(-w // block)
    keep = max(1, math.ceil(fraction * rows * cols - 1e-9))
    by, bx = np.meshgrid(np.arange(rows, dtype=np.uint64), np.arange(cols, dtype=np.uint64), indexing="ij")
    keys = _splitmix64((by << np.uint64(32)) | bx).ravel()
    order = np.argsort(keys, kind="stable")[:keep] if keep < keys.size else np.arange(keys.size)
    chosen = sorted(int(i) for i in order)
    regions = []
    for i in chosen:
        r, c = divmod(i, cols)
        regions.append((r * block, min((r + 1) * block, h), c * block, min((c + 1) * block, w)))
    return regions


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

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``lo`` and ``hi`` as float32 arrays for the kernels."""
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
        for k in ("band_names", "lo", "hi", "clip", "dmin", "dmax"):
            values[k] = tuple(values[k])
        return cls(**values)

    @classmethod
    def from_output(cls, path: str | Path) -> BandStats:
        """Read the statistics saved in a tilex output (for ``--stats-from``)."""
        path = Path(path)
        meta = path / "tilex.json" if path.is_dir() else path
        try:
            data = json.loads(meta.read_text())
        except FileNotFoundError:
            raise OutputError(f"{meta}: no tilex.json here; --stats-from needs a tilex output") from None
        except (OSError, ValueError) as err:
            raise OutputError(f"{meta}: cannot read tilex.json ({err})") from None
        stats = data.get("stats") if isinstance(data, dict) else None
        if not stats:
            raise OutputError(f"{meta}: holds no band statistics (was it run with --norm pixel?)")
        return cls.from_dict(stats)

    def check_bands(self, band_names: tuple[str, ...], source: object) -> None:
        """Refuse statistics measured on other bands than the scan's."""
        if tuple(band_names) != tuple(self.band_names):
            raise OutputError(
                f"statistics from {source} are for bands {list(self.band_names)} "
                f"but the scan has bands {list(band_names)}"
            )
