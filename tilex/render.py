"""Pictures of a tilex output, region by region, at any threshold, without re-encoding the scan.

What a run stores per pixel (:mod:`tilex.omezarr.format`): ``evidence``, the
largest normalised dissimilarity over the bands *before* the threshold (0
where every band is NaN); ``score``, the evidence where it is above the run's
threshold and 0 elsewhere; ``winner``, the band that wins there (0 below the
run's threshold); the overlay drawn from ``score``. So for another threshold
``t`` a pixel is flagged exactly where ``evidence > t``, its score is the
evidence there, and the overlay can be drawn again from the visible grey; the
winning band is known only where the run flagged the pixel, so below the
run's threshold a newly flagged pixel has an *unknown* band (drawn in
:data:`UNKNOWN_BAND`, never given a band's colour).

Outputs written before ``evidence`` was stored have only ``score``: their
threshold can only be raised (``score > t`` with ``t`` at least the run's).

The visible image: outputs keep it in colour (``visible``, the scan's bytes,
:func:`tilex.colour.display_bytes`), and its grey is the luminance of those
bytes rounded as the overlay kernel rounds (:func:`grey_of`). For a scan
whose visible image is 8-bit that is, on level 0, exactly the grey the run's
overlay was drawn from; for 16-bit or float ones the bytes are rounded first,
so the grey can be 1 off. Outputs written before ``visible`` was stored
show the grey recovered from the overlay
(:func:`tilex.preview.visible_from_overlay`, 2 off at most on level 0) in
place of the colour.

Every method reads one region of one pyramid level (the chunks it overlaps,
never a whole level), so a viewer's tile or an export's tile costs the same
on any output size. Level ``k > 0`` is drawn from the stored reductions of
that level: at another threshold than the run's it is the threshold of the
mean evidence, not the mean of the thresholded level 0 that a run at ``t``
would store (the two differ only along the edges of flagged areas).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from tilex.colour import display_bytes, luminance
from tilex.errors import OutputError
from tilex.grid import Region
from tilex.omezarr import Output, band_colours

__all__ = ["UNKNOWN_BAND", "Pictures", "grey_of", "run_threshold"]

UNKNOWN_BAND = (190, 190, 190)
"""Colour of a pixel flagged below the run's threshold, whose winning band was not stored."""


def grey_of(visible: np.ndarray) -> np.ndarray:
    """``uint8 [h, w]``: the grey of visible bytes ``uint8 [3, h, w]``, as the overlay draws it.

    The luminance (:func:`tilex.colour.luminance`) of ``byte / 255`` in
    float32 (how a run reads an 8-bit scan), rounded to a byte as the overlay
    kernel rounds: for an 8-bit visible image, the very grey under the run's
    overlay.

    Examples
    --------
    >>> grey_of(np.array([[[255]], [[0]], [[0]]], np.uint8)).tolist()  # 0.299 * 255 = 76.2
    [[76]]
    """
    return display_bytes(luminance(np.divide(visible, 255, dtype=np.float32)))


def run_threshold(output: Output) -> float:
    """The threshold the run of ``output`` flagged pixels at (0 when its manifest does not say)."""
    value = output.manifest.get("parameters", {}).get("threshold")
    return 0.0 if value is None else float(value)


@dataclass(frozen=True)
class Pictures:
    """Regions of an output's images as they are at ``threshold`` (default: the run's).

    Parameters
    ----------
    output : Output
        A complete output (:func:`tilex.open_output`).
    threshold : float, optional
        Flag pixels whose evidence is above this. Any value >= 0 when the
        output stores ``evidence``; otherwise at least the run's threshold.

    Raises
    ------
    OutputError
        A threshold the output cannot be drawn at.

    Examples
    --------
    >>> from tilex.omezarr import Output
    >>> out = Output(None, {"parameters": {"threshold": 0.5}}, {})  # no images: score only
    >>> Pictures(out, threshold=0.3)
    Traceback (most recent call last):
    ...
    tilex.errors.OutputError: threshold 0.3 is below the run's 0.5 and the output stores no evidence (only the score above 0.5): choose 0.5 or more, or run again
    """

    output: Output
    threshold: float | None = None
    run: float = field(init=False)

    def __post_init__(self) -> None:
        run = run_threshold(self.output)
        object.__setattr__(self, "run", run)
        t = run if self.threshold is None else float(self.threshold)
        if not math.isfinite(t) or t < 0:
            raise OutputError(f"threshold must be a number >= 0, got {self.threshold!r}")
        if t < run and not self.has_evidence:
            raise OutputError(
                f"threshold {t:g} is below the run's {run:g} and the output stores no evidence"
                f" (only the score above {run:g}): choose {run:g} or more, or run again"
            )
        object.__setattr__(self, "threshold", t)

    @property
    def has_evidence(self) -> bool:
        """Whether the output stores ``evidence`` (any threshold >= 0 can be drawn)."""
        return "evidence" in self.output.images

    @property
    def has_colour(self) -> bool:
        """Whether the output stores the visible image in colour (``visible``)."""
        return "visible" in self.output.images

    @property
    def lowest(self) -> float:
        """The lowest threshold this output can be drawn at."""
        return 0.0 if self.has_evidence else self.run

    @property
    def t(self) -> float:
        return float(self.threshold)  # type: ignore[arg-type]  (set in __post_init__)

    @property
    def at_run(self) -> bool:
        """Whether this is the run's own threshold (the stored images are the pictures)."""
        return self.t == self.run

    def require_winner(self, what: str) -> None:
        """Refuse pictures that need the winning band below the run's threshold.

        Raises
        ------
        OutputError
            ``what`` needs the winner and the threshold is below the run's.
        """
        if self.t < self.run:
            raise OutputError(
                f"{what} needs the winning band, which the output stores only above its run's"
                f" threshold {self.run:g}: choose a threshold of {self.run:g} or more for it"
            )

    # ---------------------------------------------------------------- raw regions

    def read(self, name: str, level: int, region: Region) -> np.ndarray:
        """The stored ``[..., h, w]`` region of image ``name`` at ``level`` (chunks it overlaps only)."""
        y0, y1, x0, x1 = region
        return np.asarray(self.output[name].levels[level][..., y0:y1, x0:x1])

    def evidence(self, level: int, region: Region) -> np.ndarray:
        """``float32 [h, w]``: the evidence (the score for outputs without evidence)."""
        name = "evidence" if self.has_evidence else "score"
        return self.read(name, level, region)[0].astype(np.float32, copy=False)

    def flagged(self, level: int, region: Region) -> np.ndarray:
        """``bool [h, w]``: evidence above the threshold (NaN never flagged)."""
        with np.errstate(invalid="ignore"):
            return self.evidence(level, region) > np.float32(self.t)

    def score(self, level: int, region: Region) -> np.ndarray:
        """``float32 [h, w]``: the score at this threshold (the evidence where flagged, else 0)."""
        if self.at_run:
            return self.read("score", level, region)[0]
        evidence = self.evidence(level, region)
        with np.errstate(invalid="ignore"):
            return np.where(evidence > np.float32(self.t), evidence, np.float32(0))

    def winner(self, level: int, region: Region) -> np.ndarray:
        """``uint8 [h, w]``: the winning band where flagged, 0 elsewhere and where unknown."""
        winner = self.read("winner", level, region)
        if self.t <= self.run:
            return winner
        return np.where(self.flagged(level, region), winner, np.uint8(0))

    # ---------------------------------------------------------------- pictures

    def visible(self, level: int, region: Region) -> np.ndarray:
        """``uint8 [3, h, w]``: the visible image in colour, as the scan encodes it.

        Outputs without the colour image give their grey in all three channels.
        """
        if self.has_colour:
            return self.read("visible", level, region)
        return np.repeat(self.grey(level, region)[None], 3, axis=0)

    def grey(self, level: int, region: Region) -> np.ndarray:
        """``uint8 [h, w]``: the visible image in grey, the background of the overlay.

        :func:`grey_of` the colour image when the output stores it; otherwise
        recovered from the overlay (:func:`tilex.preview.visible_from_overlay`).
        """
        if self.has_colour:
            return grey_of(self.read("visible", level, region))
        from tilex.preview import visible_from_overlay

        overlay = self.read("overlay", level, region)
        return visible_from_overlay(overlay, self.read("score", level, region)[0])

    def overlay(self, level: int, region: Region) -> np.ndarray:
        """``uint8 [3, h, w]``: the visible grey with flagged pixels tinted blue.

        At the run's threshold the stored overlay itself; at another, drawn
        again from :meth:`grey`: on level 0 within 1 of the overlay a run at
        that threshold would store (the grey's byte is at most 1 from the
        run's float grey, and the blend scales that by ``1 - a``; tested for
        8-bit and float visible images, and for the grey older outputs recover).
        Levels above 0 differ more along the edges of flagged areas (see the
        module docstring).
        """
        if self.at_run:
            return self.read("overlay", level, region)
        from tilex.kernels.reference import overlay_reference

        grey = self.grey(level, region).astype(np.float32) / np.float32(255)
        return overlay_reference(grey, self.score(level, region))

    def collage_features(self, level: int, region: Region) -> np.ndarray:
        """``float32 [C, h, w]``: the winning band's features where it wins at this threshold.

        Raises
        ------
        OutputError
            Below the run's threshold (the winner is not stored there).
        """
        self.require_winner("the collage")
        collage = self.read("collage", level, region)
        if self.at_run or self.t < self.run:
            return collage
        return np.where(self.winner(level, region)[None] > 0, collage, np.float32(0))

    def collage_rgb(self, level: int, region: Region) -> np.ndarray:
        """``uint8 [3, h, w]``: each flagged pixel in its band's colour, bright where its features are.

        Brightness is the mean of the collage features normalised by their
        1st and 99th percentiles over the winning pixels of the smallest
        level (:attr:`collage_range`), as in ``tilex preview``; black where
        nothing is flagged, :data:`UNKNOWN_BAND` where the band is unknown.
        """
        winner = self.read("winner", level, region)
        flagged = self.flagged(level, region)
        value = np.nan_to_num(self.read("collage", level, region).mean(axis=0, dtype=np.float32))
        lo, hi = self.collage_range
        brightness = 0.25 + 0.75 * np.clip((value - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
        n = len(self.output.bands)
        palette = np.array([UNKNOWN_BAND, *band_colours(n)], np.float32)
        rgb = palette[np.minimum(winner, n)] * brightness[..., None]
        rgb[winner == 0] = UNKNOWN_BAND
        rgb[~flagged] = 0
        return np.ascontiguousarray(np.moveaxis(np.rint(rgb).astype(np.uint8), -1, 0))

    @cached_property
    def collage_range(self) -> tuple[float, float]:
        """The 1st and 99th percentiles of the mean collage feature over winning pixels (top level)."""
        top = len(self.output["collage"].levels) - 1
        collage = np.asarray(self.output["collage"].levels[top][...])
        winner = np.asarray(self.output["winner"].levels[top][...])
        value = np.nan_to_num(collage.mean(axis=0, dtype=np.float32))[winner > 0]
        if value.size == 0:
            return 0.0, 1.0
        lo, hi = np.percentile(value, (1, 99))
        return float(lo), float(hi)

    def describe(self) -> dict[str, Any]:
        """What a viewer needs to know about the thresholds (JSON-ready)."""
        return {
            "run": self.run,
            "threshold": self.t,
            "lowest": self.lowest,
            "source": "evidence" if self.has_evidence else "score",
            "unknown_band": list(UNKNOWN_BAND),
        }
