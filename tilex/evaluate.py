"""Detection measured: a finished output's score and winner against a known hidden mask.

:func:`evaluate_output` streams level 0 of an output's ``evidence`` (the
score before the threshold, which ranks every pixel; ``score`` in outputs
older than it) and ``winner`` images one chunk row at a time beside the same rows of a truth
mask (nonzero = hidden; :func:`tilex.synth` writes one, ``hidden_mask.tif``),
so memory is one chunk row whatever the scan's size. It keeps two mergeable
summaries, :class:`DetectionCounts`:

- per-class histograms of the score over ``[0, 1]`` in ``bins`` equal bins
  (integer counts, so the result does not depend on the order of the rows),
  from which the ROC AUC and the average precision follow;
- the confusion counts of the flagged pixels (``winner > 0``) against the
  mask, from which precision, recall, F1 and IoU follow exactly.

Bin ``k`` holds the scores in ``[k / bins, (k + 1) / bins)`` (the last one
also holds 1.0; scores outside ``[0, 1]`` go to the end bins). The AUC counts
a hidden and a visible pixel in the same bin as half a correct pair: it is
*exactly* the Mann-Whitney AUC (:func:`tilex.metrics.roc_auc`) of the scores
quantised to the bins, and differs from the AUC of the raw scores only by
pairs whose scores differ by less than a bin width. The average precision is
step-wise (no interpolation), one threshold per bin: ``sum_k (P_k / P) *
precision(score >= bin k)`` over the bins ``k`` that hold hidden pixels.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tilex.errors import ScanError

__all__ = ["DEFAULT_BINS", "Detection", "DetectionCounts", "evaluate_output", "quantise"]

DEFAULT_BINS = 65536
"""Score histogram bins: a width of 2**-16, finer than any threshold a person sets."""


def quantise(score: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """The histogram bin (int64) of each score: ``floor(score * bins)``, clipped to the bins.

    Examples
    --------
    >>> quantise(np.array([0.0, 0.49, 0.5, 1.0, 1.5]), bins=4)
    array([0, 1, 2, 3, 3])
    """
    scaled = np.floor(np.asarray(score, dtype=np.float64) * bins)
    return np.clip(scaled, 0, bins - 1).astype(np.int64)


@dataclass(frozen=True, eq=False)
class DetectionCounts:
    """Mergeable counts of a score map and a flagged map against a truth mask.

    ``positive`` and ``negative`` are the score histograms (int64, ``bins``
    bins) of the hidden and the other pixels; ``tp``, ``fp``, ``fn``, ``tn``
    the confusion counts of ``flagged`` against ``hidden``. Counts of disjoint
    regions add up (:meth:`merge`) to the counts of their union.

    Examples
    --------
    >>> score = np.array([[0.0, 0.9], [0.6, 0.2]], np.float32)
    >>> hidden = np.array([[0, 1], [1, 0]], bool)
    >>> counts = DetectionCounts.of(score, score > 0.5, hidden, bins=4)
    >>> counts.positive.tolist(), counts.negative.tolist(), counts.tp, counts.fp
    ([0, 0, 1, 1], [2, 0, 0, 0], 2, 0)
    """

    positive: np.ndarray
    negative: np.ndarray
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    @classmethod
    def empty(cls, bins: int = DEFAULT_BINS) -> DetectionCounts:
        """Zero counts over ``bins`` bins (``bins`` >= 2)."""
        bins = _check_bins(bins)
        return cls(np.zeros(bins, np.int64), np.zeros(bins, np.int64))

    @classmethod
    def of(
        cls, score: np.ndarray, flagged: np.ndarray, hidden: np.ndarray, *, bins: int = DEFAULT_BINS
    ) -> DetectionCounts:
        """The counts of one region: same-shaped score, flagged (bool) and hidden (bool) arrays."""
        index = quantise(score, _check_bins(bins))
        flagged, hidden = np.asarray(flagged, bool), np.asarray(hidden, bool)
        tp = int(np.count_nonzero(flagged & hidden))
        fp = int(np.count_nonzero(flagged & ~hidden))
        fn = int(np.count_nonzero(~flagged & hidden))
        return cls(
            np.bincount(index[hidden], minlength=bins).astype(np.int64),
            np.bincount(index[~hidden], minlength=bins).astype(np.int64),
            tp,
            fp,
            fn,
            int(hidden.size) - tp - fp - fn,
        )

    @property
    def bins(self) -> int:
        return int(self.positive.size)

    def merge(self, other: DetectionCounts) -> DetectionCounts:
        """The counts of both regions (which must not overlap)."""
        if other.bins != self.bins:
            raise ValueError(f"cannot merge counts of {self.bins} and {other.bins} bins")
        return DetectionCounts(
            self.positive + other.positive,
            self.negative + other.negative,
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.tn + other.tn,
        )

    def auc(self) -> float:
        """ROC AUC from the histograms, ties within a bin counting half (NaN without both classes)."""
        pos = self.positive.astype(np.float64)
        neg = self.negative.astype(np.float64)
        n_pos, n_neg = pos.sum(), neg.sum()
        if n_pos == 0 or n_neg == 0:
            return math.nan
        below = np.cumsum(neg) - neg  # negatives in lower bins
        return float(np.sum(pos * (below + 0.5 * neg)) / (n_pos * n_neg))

    def average_precision(self) -> float:
        """Step-wise average precision, one threshold per bin (NaN without hidden pixels)."""
        pos = self.positive[::-1].astype(np.float64)  # highest bin first
        neg = self.negative[::-1].astype(np.float64)
        n_pos = pos.sum()
        if n_pos == 0:
            return math.nan
        tp, fp = np.cumsum(pos), np.cumsum(neg)
        held = pos > 0
        return float(np.sum(pos[held] / n_pos * tp[held] / (tp[held] + fp[held])))


@dataclass(frozen=True)
class Detection:
    """How well an output finds a known hidden mask (see :func:`evaluate_output`).

    Ratios with an empty denominator (no hidden pixel, nothing flagged) are
    NaN here and ``None`` in :meth:`to_dict`.
    """

    output: str
    truth: str
    shape: tuple[int, int]
    pixels: int
    hidden: int
    threshold: float | None  # the run's fusion threshold, from its tilex.json
    bins: int
    auc: float
    average_precision: float
    flagged_fraction: float
    precision: float
    recall: float
    f1: float
    iou: float
    counts: dict[str, int] = field(default_factory=dict)  # tp, fp, fn, tn

    @classmethod
    def from_counts(
        cls,
        counts: DetectionCounts,
        *,
        shape: tuple[int, int],
        output: str = "",
        truth: str = "",
        threshold: float | None = None,
    ) -> Detection:
        """The measures of :class:`DetectionCounts` taken over a whole ``shape``.

        Examples
        --------
        >>> score = np.array([[0.0, 0.9], [0.6, 0.2]], np.float32)
        >>> hidden = np.array([[0, 1], [1, 0]], bool)
        >>> d = Detection.from_counts(DetectionCounts.of(score, score > 0.5, hidden), shape=(2, 2))
        >>> d.auc, d.average_precision, d.flagged_fraction, d.f1
        (1.0, 1.0, 0.5, 1.0)
        """
        tp, fp, fn, tn = counts.tp, counts.fp, counts.fn, counts.tn
        pixels = tp + fp + fn + tn
        return cls(
            output=output,
            truth=truth,
            shape=(int(shape[0]), int(shape[1])),
            pixels=pixels,
            hidden=tp + fn,
            threshold=None if threshold is None else float(threshold),
            bins=counts.bins,
            auc=counts.auc(),
            average_precision=counts.average_precision(),
            flagged_fraction=_ratio(tp + fp, pixels),
            precision=_ratio(tp, tp + fp),
            recall=_ratio(tp, tp + fn),
            f1=_ratio(2 * tp, 2 * tp + fp + fn),
            iou=_ratio(tp, tp + fp + fn),
            counts={"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN as ``None``)."""
        return {
            "output": self.output,
            "truth": self.truth,
            "shape": list(self.shape),
            "pixels": self.pixels,
            "hidden": self.hidden,
            "threshold": self.threshold,
            "bins": self.bins,
            "auc": _json(self.auc),
            "average_precision": _json(self.average_precision),
            "flagged_fraction": _json(self.flagged_fraction),
            "precision": _json(self.precision),
            "recall": _json(self.recall),
            "f1": _json(self.f1),
            "iou": _json(self.iou),
            "counts": dict(self.counts),
        }

    def lines(self) -> list[str]:
        """A small table for people (what ``tilex evaluate`` prints)."""
        height, width = self.shape
        threshold = "unknown" if self.threshold is None else f"{self.threshold:g}"
        return [
            f"output     {self.output} ({height} x {width} px, threshold {threshold})",
            f"truth      {self.truth} ({self.hidden} hidden px, {_pct(self.hidden / self.pixels)})",
            f"ROC AUC    {_num(self.auc)}  (score histogram of {self.bins} bins)",
            f"AP         {_num(self.average_precision)}",
            f"flagged    {_pct(self.flagged_fraction)} of the pixels (winner > 0)",
            f"precision  {_num(self.precision)}",
            f"recall     {_num(self.recall)}",
            f"F1         {_num(self.f1)}",
            f"IoU        {_num(self.iou)}",
        ]


def evaluate_output(
    out: Any, truth: str | os.PathLike[str], *, bins: int = DEFAULT_BINS
) -> Detection:
    """Measure a finished output's detection against a truth mask, streaming level 0.

    Parameters
    ----------
    out : path-like or tilex.omezarr.Output
        A complete tilex output (``OUT`` of ``tilex run``).
    truth : path-like
        A single-plane image tilex reads (TIFF, PNG, BMP, JPEG, Zarr) of the
        output's size; nonzero pixels are hidden.
    bins : int
        Bins of the score histograms over ``[0, 1]``.

    Returns
    -------
    Detection
        ROC AUC and average precision of the evidence (the score before
        the threshold; the score itself for outputs older than it); flagged fraction,
        precision, recall, F1 and IoU of ``winner > 0``; the run's threshold.

    Raises
    ------
    OutputError
        ``out`` is not a complete tilex output.
    ScanError
        The mask is missing, unreadable, not single-plane, or not the output's size.

    Examples
    --------
    >>> import tilex                                               # doctest: +SKIP
    >>> scan = tilex.synth("scan", size=(512, 512), bands=4)       # doctest: +SKIP
    >>> tilex.run(scan, "out", device="cpu")                       # doctest: +SKIP
    >>> d = tilex.evaluate_output("out", "scan/hidden_mask.tif")  # doctest: +SKIP
    >>> print("\\n".join(d.lines()))                               # doctest: +SKIP
    """
    from tilex.omezarr import Output, open_output
    from tilex.readers import open_source

    output = out if isinstance(out, Output) else open_output(out)
    # the evidence ranks every pixel (the score is 0 below the run's threshold)
    ranked = "evidence" if "evidence" in output.images else "score"
    score, winner = output[ranked].levels[0], output["winner"].levels[0]
    height, width = (int(n) for n in winner.shape)
    counts = DetectionCounts.empty(bins)
    mask = open_source(truth)
    try:
        if mask.channels != 1:
            raise ScanError(
                f"truth mask {truth} has {mask.channels} channels, expected one plane", path=truth
            )
        if tuple(mask.shape) != (height, width):
            mask_h, mask_w = mask.shape
            raise ScanError(
                f"truth mask {truth} is {mask_h}x{mask_w} but the output {output.path} is "
                f"{height}x{width}",
                path=truth,
            )
        rows = int(winner.chunks[0])
        for y0 in range(0, height, rows):  # one chunk row in memory at a time
            y1 = min(height, y0 + rows)
            counts = counts.merge(
                DetectionCounts.of(
                    score[0, y0:y1, :],
                    winner[y0:y1, :] > 0,
                    mask.read(y0, y1, 0, width)[0] != 0,
                    bins=bins,
                )
            )
    finally:
        mask.close()
    return Detection.from_counts(
        counts,
        shape=(height, width),
        output=str(output.path),
        truth=str(truth),
        threshold=output.manifest.get("parameters", {}).get("threshold"),
    )


def _check_bins(bins: int) -> int:
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
    return int(bins)


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def _json(value: float) -> float | None:
    return None if math.isnan(value) else value


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.2f} %"
