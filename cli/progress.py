"""Progress bars for long steps: pixels, Mpx/s and ETA; quiet with ``-q`` or when not a terminal.

One unit everywhere: **scan pixels**, ``H x W`` (a scan pixel carries the
visible RGB and every band), so the bars, the final ``Mpx/s (scan pixels)``
of ``tilex run`` and ``tilex demo``, and the benchmarks' tables compare.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tilex.cli.main import verbosity
from tqdm import tqdm

_LABELS = {"stats": "statistics", "tiles": "fusing tiles", "synth": "writing scan"}
_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} scan px [{elapsed}<{remaining}, {rate_fmt}]"


def format_rate(megapixels_per_second: float) -> str:
    """The rate ``tilex run`` and ``tilex demo`` print last, with its unit.

    Examples
    --------
    >>> format_rate(0.1234)
    '0.12 Mpx/s (scan pixels)'
    """
    return f"{megapixels_per_second:.2f} Mpx/s (scan pixels)"


@contextmanager
def progress_bars(enabled: bool | None = None) -> Iterator:
    """Yield a ``progress(stage, done, total)`` callback drawing one bar per stage.

    Bars show scan pixels done, the rate in Mpx/s of scan pixels and the
    ETA. They are off with ``-q`` (before or after the command's name) or
    when stderr is not a terminal.
    """
    if enabled is None:
        enabled = verbosity() >= 0 and sys.stderr.isatty()
    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if not enabled:
            return
        bar = bars.get(stage)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[stage] = tqdm(
                total=total,
                desc=_LABELS.get(stage, stage),
                unit="px",
                unit_scale=True,
                bar_format=_FORMAT,
                dynamic_ncols=True,
                file=sys.stderr,
                leave=True,
            )
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        for bar in bars.values():
            bar.close()
