"""A campaign at a glance: every scan's preview, small, in one PNG.

:func:`write_contact_sheet` reads ``OUTDIR/batch.json`` and draws one cell
per scan, in the record's order: the scan's preview (:func:`tilex.render_preview`,
collage | visible | hidden areas in blue, with its legend; drawn from a
pyramid level of at most :data:`THUMB_SIDE` px, so a gigapixel scan costs
what a small one does) shrunk to the cell, under a caption with the scan's
name, state and flagged share. A scan without a complete output (failed,
pending) gets a grey cell with its state and error.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

from tilex.campaign.record import BatchRecord, ScanRecord
from tilex.errors import OutputError, TilexError

__all__ = ["CELL_WIDTH", "COLUMNS", "SHEET_FILE", "THUMB_SIDE", "write_contact_sheet"]

SHEET_FILE = "contact-sheet.png"
COLUMNS = 4
CELL_WIDTH = 480
THUMB_SIDE = 512
"""The previews are drawn from the first pyramid level whose longest side is at most this."""


def write_contact_sheet(outdir: str | os.PathLike, dest: str | os.PathLike | None = None) -> Path:
    """Write the contact sheet of the batch in ``outdir``; returns the PNG's path.

    Parameters
    ----------
    outdir
        A batch's output folder (with ``batch.json``).
    dest
        The PNG to write; default ``OUTDIR/contact-sheet.png``.

    Raises
    ------
    OutputError
        ``outdir`` holds no batch record.
    """
    from PIL import Image

    outdir = Path(outdir)
    record = BatchRecord.read(outdir)
    if record is None or not record.scans:
        raise OutputError(f"{outdir} holds no batch record (batch.json): run `tilex batch` first")
    cells = [_cell(outdir, scan) for scan in record.scans]
    rows = [cells[i : i + COLUMNS] for i in range(0, len(cells), COLUMNS)]
    gap = 12
    heights = [max(c.height for c in row) for row in rows]
    width = gap + min(COLUMNS, len(cells)) * (CELL_WIDTH + gap)
    sheet = Image.new("RGB", (width, gap + sum(h + gap for h in heights)), (255, 255, 255))
    y = gap
    for row, height in zip(rows, heights, strict=True):
        for i, cell in enumerate(row):
            sheet.paste(cell, (gap + i * (CELL_WIDTH + gap), y))
        y += height + gap
    dest = Path(dest) if dest is not None else outdir / SHEET_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(dest, format="PNG")
    return dest


def _cell(outdir: Path, scan: ScanRecord) -> Any:
    """One scan's cell: its caption above its preview (or above a grey box saying why not)."""
    from PIL import Image, ImageDraw

    from tilex.preview import _font, render_preview

    font = _font(14)
    flagged = "" if scan.flagged is None else f", flagged {100 * scan.flagged:.1f}%"
    lines = [scan.name, f"{scan.state}{flagged}"]
    picture = None
    if scan.succeeded:
        try:
            picture = render_preview(outdir / scan.name, max_side=THUMB_SIDE)
        except (TilexError, OSError) as err:  # moved or deleted since: say so in the cell
            lines.append(f"no preview: {err}")
    elif scan.error:
        lines += textwrap.wrap(scan.error, 60)[:4]
    if picture is not None:
        picture.thumbnail((CELL_WIDTH, CELL_WIDTH))
    else:
        picture = Image.new("RGB", (CELL_WIDTH, CELL_WIDTH // 3), (200, 200, 200))
    caption_h = 6 + 18 * len(lines)
    cell = Image.new("RGB", (CELL_WIDTH, caption_h + picture.height), (255, 255, 255))
    draw = ImageDraw.Draw(cell)
    for i, line in enumerate(lines):
        draw.text((4, 2 + 18 * i), line, fill=(0, 0, 0), font=font)
    cell.paste(picture, ((CELL_WIDTH - picture.width) // 2, caption_h))
    return cell
