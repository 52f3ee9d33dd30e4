"""First view of ``tilex view`` in a real browser, for a small output and a large one.

The large output is written without running the encoder: procedural tiles
(a grey gradient with texture, discs of evidence, their winners, the overlay
drawn by the kernels' reference) go through :class:`tilex.omezarr.OmeZarrSink`,
the writer a run uses, so it has a run's layout, pyramid and manifest. Then
``tilex view``'s server serves it and headless Chromium (Debian's, driven by
Playwright) loads the page: the figure is the page's own
``tilexViewer.firstViewMs``, milliseconds from navigation to the first frame
with every tile of the view drawn, over fresh page loads (the server warm);
then the time from a jump to 1:1 at a third of the image to that view drawn.

Usage::

    python benchmarks/bench_view.py --size 16384 --out /tmp/bench-view   # 268 Mpx, writes ~4 min
    python benchmarks/bench_view.py --size 1024 --out /tmp/bench-view-1mpx

An existing output at ``--out`` is reused (``--rewrite`` makes it again).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

BANDS = ("uv365", "vis610", "ir1018", "ir1700")


def unit_result(y0: int, y1: int, x0: int, x1: int, size: int):
    """One procedural region: what a run would hand the sink there."""
    from tilex.kernels.reference import overlay_reference

    from tilex.sink import TileResult

    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    grey = 0.35 + 0.3 * (xx / size) + 0.08 * np.sin(xx / 37.0) * np.cos(yy / 23.0)
    evidence = 0.1 + 0.25 * (0.5 + 0.5 * np.sin(xx / 211.0 + yy / 97.0))
    period = max(size // 8, 64)
    cy, cx = (yy % period) - period / 2, (xx % period) - period / 2
    disc = np.hypot(cy, cx) / (period / 3)
    evidence = np.where(disc < 1, np.maximum(evidence, 1.0 - 0.5 * disc), evidence)
    evidence = evidence.astype(np.float32)
    flagged = evidence > np.float32(0.5)
    score = np.where(flagged, evidence, 0).astype(np.float32)
    band = ((yy // period + xx // period) % len(BANDS) + 1).astype(np.uint8)
    winner = np.where(flagged, band, 0).astype(np.uint8)
    overlay = overlay_reference(grey.astype(np.float32), score)
    tint = np.stack([grey * 1.1, grey, grey * 0.8 + 0.05 * np.sin(yy / 53.0)])
    visible = np.floor(np.clip(tint, 0, 1) * 255 + 0.5).astype(np.uint8)  # a warm painting
    return TileResult(
        (y0, y1, x0, x1), winner, score, score[None].copy(), overlay, None, evidence, visible
    )


def write_output(out: Path, size: int) -> None:
    from tilex.grid import morton_order
    from tilex.omezarr import OmeZarrSink
    from tilex.sink import RunInfo

    unit = 4096
    sink = OmeZarrSink(out, unit=unit, chunk=512)
    provenance = {"parameters": {"threshold": 0.5}, "note": "bench_view.py: procedural, no encoder"}
    info = RunInfo(
        shape=(size, size),
        band_names=BANDS,
        wavelengths=(365.0, 610.0, 1018.0, 1700.0),
        channels=1,
        pixel_size_um=20.0,
        keep_evidence=True,
        keep_visible=True,
        provenance=provenance,
    )
    sink.open(info)
    n = -(-size // unit)
    started = time.perf_counter()
    for i, (row, col) in enumerate(morton_order(n, n)):
        y0, x0 = row * unit, col * unit
        sink.write(unit_result(y0, min(y0 + unit, size), x0, min(x0 + unit, size), size))
        print(f"  unit {i + 1}/{n * n}  {time.perf_counter() - started:.0f} s", file=sys.stderr)
    sink.close()


def first_views(out: Path, size: int, loads: int) -> list[tuple[float, float]]:
    """Per page load: ms to the first full view, and ms to a full view at 1:1 after a jump."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import CHROMIUM_FLAGS
    from playwright.sync_api import sync_playwright

    from tilex.viewer import ViewServer

    server = ViewServer(out)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    found = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"), headless=True, args=list(CHROMIUM_FLAGS)
        )
        for _ in range(loads):
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(server.url)
            page.evaluate("window.tilexViewer.ready")
            page.evaluate("window.tilexViewer.idle()")
            first = page.evaluate("window.tilexViewer.firstViewMs")
            zoom = page.evaluate(
                """async (side) => { const v = window.tilexViewer, t0 = performance.now();
                                     v.setView(side / 3, side / 3, 1); await v.idle();
                                     return performance.now() - t0; }""",
                size,
            )
            found.append((first, zoom))
            page.close()
        browser.close()
    server.shutdown()
    server.server_close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="side of the square output, px")
    parser.add_argument("--out", type=Path, required=True, help="output folder (reused)")
    parser.add_argument("--loads", type=int, default=5, help="page loads to time")
    parser.add_argument("--rewrite", action="store_true", help="write the output again")
    args = parser.parse_args()
    if args.rewrite:
        shutil.rmtree(args.out, ignore_errors=True)
    if not (args.out / "tilex.json").is_file():
        started = time.perf_counter()
        write_output(args.out, args.size)
        print(
            f"wrote {args.out} ({args.size**2 / 1e6:.0f} Mpx) in {time.perf_counter() - started:.0f} s"
        )
    found = first_views(args.out, args.size, args.loads)
    for name, times in (
        ("first view", [f for f, _ in found]),
        ("jump to 1:1", [z for _, z in found]),
    ):
        print(
            f"{args.size}x{args.size} ({args.size**2 / 1e6:.0f} Mpx): {name}"
            f" median {statistics.median(times):.0f} ms, min {min(times):.0f},"
            f" max {max(times):.0f} over {len(times)} loads (1600x1000 page)"
        )


if __name__ == "__main__":
    main()
