"""Contact sheets of chest X-ray data sets: a grid of images with finding outlines."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from models.cxr_preprocess import decode_image, to_model_input

__all__ = ["contact_sheet"]

_FINDING_COLOURS = {
    "tb": (255, 80, 80),
    "nodule": (255, 200, 0),
    "consolidation": (80, 200, 255),
    "effusion": (120, 255, 120),
}


def contact_sheet(
    labels_csv: Path, out_png: Path, *, n: int = 10, columns: int = 5, tile: int = 192
) -> Path:
    """Draw the first ``n`` images of a labels CSV (contract C7 layout) as a grid.

    Each tile is the image as the model sees it (``models.cxr_preprocess``), with the
    finding mask outlined in the colour of the first finding and the labels written
    underneath. Images are read through the same preprocessing as training.

    Returns:
        ``out_png``.
    """
    root = labels_csv.parent
    with labels_csv.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:n]
    if not rows:
        raise ValueError(f"{labels_csv} has no rows")
    grid_rows = -(-len(rows) // columns)
    caption = 14
    sheet = Image.new("RGB", (columns * tile, grid_rows * (tile + caption)), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(rows):
        pixels = to_model_input(decode_image((root / row["image"]).read_bytes()), tile)[0]
        rgb = np.repeat((pixels * 255).astype(np.uint8)[..., None], 3, axis=2)
        found = [f for f in _FINDING_COLOURS if row.get(f) == "1"]
        if row.get("mask"):
            with Image.open(root / row["mask"]) as m:
                mask = np.asarray(m.convert("L").resize((tile, tile), Image.Resampling.NEAREST)) > 0
            edge = mask & ~(
                np.roll(mask, 1, 0)
                & np.roll(mask, -1, 0)
                & np.roll(mask, 1, 1)
                & np.roll(mask, -1, 1)
            )
            rgb[edge] = _FINDING_COLOURS[found[0]] if found else (255, 255, 255)
        x, y = (i % columns) * tile, (i // columns) * (tile + caption)
        sheet.paste(Image.fromarray(rgb), (x, y))
        text = ", ".join(found) or "normal"
        draw.text(
            (x + 3, y + tile + 1),
            f"{row['sex'][0].upper()}{row['age']} {text}",
            fill=(230, 230, 230),
        )
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png, optimize=True)
    return out_png
