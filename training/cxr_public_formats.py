"""Label files in the published layouts of public chest X-ray data sets, with
placeholder images: what the importers (:mod:`training.cxr_datasets`) are tested and
timed on when the real data set (tens of GB, behind a licence click) is not at hand.

:func:`write_nih` writes NIH ChestX-ray14's ``Data_Entry_2017.csv`` (the published
column layout, including the header's split ``OriginalImage[Width,Height]`` columns and
trailing comma), ``BBox_List_2017.csv`` (boxes in the 1024 x 1024 pixels of NIH's PNGs),
``test_list.txt`` / ``train_val_list.txt`` (patient-wise) and one placeholder PNG per
image, hard-linked from one file per folder so that 112,120 of them cost 12 images of
disk. At the
full size the per-label counts are NIH's own (Nodule 6,331, Effusion 13,317, No Finding
60,361, ...); smaller files scale them.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["NIH_COUNTS", "NIH_ROWS", "write_nih"]

NIH_ROWS = 112_120
NIH_PATIENTS = 30_805
# Images per label in Data_Entry_2017.csv (Wang et al. 2017, as published).
NIH_COUNTS: dict[str, int] = {
    "No Finding": 60_361,
    "Infiltration": 19_894,
    "Effusion": 13_317,
    "Atelectasis": 11_559,
    "Nodule": 6_331,
    "Mass": 5_782,
    "Pneumothorax": 5_302,
    "Consolidation": 4_667,
    "Pleural_Thickening": 3_385,
    "Cardiomegaly": 2_776,
    "Emphysema": 2_516,
    "Edema": 2_303,
    "Fibrosis": 1_686,
    "Pneumonia": 1_431,
    "Hernia": 227,
}
_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
    "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)
_BOX_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule",
               "Pneumonia", "Pneumothorax")  # fmt: skip


def _labels(n: int, rng: np.random.Generator) -> list[list[str]]:
    """Per-row label lists with exactly the scaled :data:`NIH_COUNTS`."""
    scale = n / NIH_ROWS
    counts = {k: max(1, round(v * scale)) for k, v in NIH_COUNTS.items()}
    normal = counts.pop("No Finding")
    rows: list[list[str]] = [["No Finding"] if i < normal else [] for i in range(n)]
    abnormal = np.arange(normal, n)
    tokens = [label for label, k in counts.items() for _ in range(k)]
    rng.shuffle(tokens)  # type: ignore[arg-type]
    for first, label in zip(abnormal, tokens, strict=False):  # one label each first
        rows[int(first)].append(label)
    for label in tokens[len(abnormal) :]:
        while True:
            row = int(rng.choice(abnormal))
            if label not in rows[row]:
                rows[row].append(label)
                break
    order = rng.permutation(n)
    return [rows[i] for i in order]


def write_nih(
    root: Path,
    n_rows: int = NIH_ROWS,
    *,
    n_images: int | None = None,
    image_side: int = 1024,
    n_boxes: int = 50,
    gz: bool = False,
    distinct: bool = False,
    seed: int = 0,
) -> dict[str, int]:
    """Write an NIH ChestX-ray14 folder in the published layout.

    Args:
        root: the folder (created).
        n_rows: rows of ``Data_Entry_2017.csv``.
        n_images: placeholder PNGs for the first this many rows (None: every row).
        image_side: side of the placeholder PNGs (1024 as NIH ships; smaller for
            resized copies, which the box scaling must handle).
        n_boxes: rows of ``BBox_List_2017.csv`` (on images that have a placeholder).
        gz: write ``Data_Entry_2017.csv.gz`` instead.
        distinct: one smooth random image per row instead of hard links to one
            placeholder (for a short training run; costs a file each).
        seed: RNG seed.

    Returns:
        Images per NIH label in the written file (for checking an import).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    labels = _labels(n_rows, rng)
    n_patients = max(1, round(n_rows * NIH_PATIENTS / NIH_ROWS))
    patient = np.sort(rng.integers(1, n_patients + 1, n_rows))
    follow = np.zeros(n_rows, dtype=int)
    for i in range(1, n_rows):
        follow[i] = follow[i - 1] + 1 if patient[i] == patient[i - 1] else 0
    ages = rng.integers(1, 95, n_patients + 1)
    sexes = rng.choice(["M", "F"], n_patients + 1)
    views = np.where(rng.random(n_rows) < 0.4, "AP", "PA")
    names = [f"{p:08d}_{f:03d}.png" for p, f in zip(patient, follow, strict=True)]
    lines = [_HEADER]
    for i, name in enumerate(names):
        p = int(patient[i])
        lines.append(
            f"{name},{'|'.join(labels[i])},{follow[i]},{p},{ages[p]:03d}Y,{sexes[p]},"
            f"{views[i]},2500,2048,0.168,0.168,"
        )
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(root / "Data_Entry_2017.csv.gz", "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        (root / "Data_Entry_2017.csv").write_text(text, encoding="utf-8")
    test = [n for n, p in zip(names, patient, strict=True) if p % 5 == 0]  # patient-wise
    rest = [n for n, p in zip(names, patient, strict=True) if p % 5 != 0]
    (root / "test_list.txt").write_text("\n".join(test) + "\n", encoding="utf-8")
    (root / "train_val_list.txt").write_text("\n".join(rest) + "\n", encoding="utf-8")
    with_image = names[: n_rows if n_images is None else n_images]
    pixels = Image.fromarray(np.full((image_side, image_side), 128, np.uint8))
    for i, name in enumerate(with_image):
        folder = root / f"images_{i // 10_000 + 1:03d}" / "images"
        if i % 10_000 == 0:  # one placeholder per folder (a file has at most ~65,000 links)
            folder.mkdir(parents=True, exist_ok=True)
            placeholder = folder.parent / "placeholder.png"
            pixels.save(placeholder)
        if distinct:
            coarse = rng.integers(60, 200, (8, 8)).astype(np.uint8)
            Image.fromarray(coarse).resize(
                (image_side, image_side), Image.Resampling.BILINEAR
            ).save(folder / name)
        else:
            os.link(placeholder, folder / name)
    box_lines = ["Image Index,Finding Label,Bbox [x,y,w,h],,,"]
    for name in rng.choice(with_image, min(n_boxes, len(with_image)), replace=False):
        x, y = rng.uniform(100, 700, 2)
        w, h = rng.uniform(40, 300, 2)
        box_lines.append(f"{name},{rng.choice(_BOX_LABELS)},{x},{y},{w},{h},,,")
    (root / "BBox_List_2017.csv").write_text("\n".join(box_lines) + "\n", encoding="utf-8")
    counts = dict.fromkeys(NIH_COUNTS, 0)
    for row in labels:
        for label in row:
            counts[label] += 1
    return counts
