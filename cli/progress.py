"""Progress bars for long steps: pixels, Mpx/s and ETA; quiet when not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tilex.cli.main import verbosity
from tqdm import tqdm

_LABELS = {"stats": "statistics", "tiles": "fusing tiles", "synth": "writing scan"}


@contextmanager
def progress_bars(enabled: bool | None = None) -> Iterator:
    """Yield a ``progress(stage, done, total)`` callback drawing one bar per stage.

    Bars show pixels done, the rate in Mpx/s and the ETA. They are off with
    ``-q`` or when stderr is not a terminal.
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
                total=total, desc=_LABELS.get(stage, stage), unit="px", unit_scale=True,
                dynamic_ncols=True, file=sys.stderr, leave=True,
            )
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        for bar in bars.values():
            bar.close()
