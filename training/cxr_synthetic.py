"""Seeded synthetic frontal chest radiographs with labelled findings and masks.

No public X-ray data can be downloaded where Tonle is built and tested, so the demo
and the tests use these images. Each image is composed in a "display density" space
(0 = black air, 1 = white bone; MONOCHROME2) from simple vectorised shapes:

* soft tissue of the trunk, shoulders and (for women) breast shadows;
* two lung fields with apices, lateral costophrenic angles and diaphragm domes
  (the right hemidiaphragm higher), hila and radiating vascular markings;
* heart and mediastinum, vertebral column, posterior ribs, clavicles;
* findings: a solitary nodule, a lobar-style consolidation, an upper-zone
  cavitating TB-like pattern, a pleural effusion with a meniscus.

Exposure (gain, offset, gamma, heel effect), quantum noise and detector blur vary per
image. The result is written as a real DICOM file (CR or DX, MONOCHROME1 or
MONOCHROME2, 12-16 bits stored, PixelSpacing, synthetic patient and study
attributes, valid UIDs), the union mask of the findings as a PNG, one row per image in
``labels.csv`` (columns in :data:`LABEL_COLUMNS`, contract C7), and each finding's own
mask as a bilevel TIFF listed in ``finding_masks.csv`` (``image`` plus one
``mask_<finding>`` column per finding; see :mod:`training.cxr_data`). With two findings
in one image the union mask is no finding's own, so training and scoring a finding's map
needs the per-finding masks. They sit beside ``labels.csv`` rather than in it so that
``labels.csv`` and the union PNGs stay byte for byte what earlier versions wrote.

Every image depends only on ``(seed, index)``, so a data set is reproducible.

This module writes data sets; the anatomy is in :mod:`training.cxr_synthetic_anatomy`,
findings and one case's rendering in :mod:`training.cxr_synthetic_render`, the DICOM
file in :mod:`training.cxr_synthetic_dicom`.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from training.cxr_datasets import FINDING_MASKS_CSV, finding_mask_column
from training.cxr_synthetic_dicom import write_dicom
from training.cxr_synthetic_render import FINDINGS, SyntheticCase, render_case

__all__ = [
    "FINDINGS",
    "LABEL_COLUMNS",
    "SyntheticCase",
    "generate",
    "parse_size",
    "render_case",
    "write_dicom",
]

logger = logging.getLogger(__name__)

LABEL_COLUMNS: tuple[str, ...] = (
    "image",
    "patient_id",
    "sex",
    "age",
    "site",
    "abnormal",
    "tb",
    "nodule",
    "consolidation",
    "effusion",
    "mask",
)
SITES: tuple[str, ...] = ("site-a", "site-b", "site-c")


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"512"`` (square) or ``"3000x2500"`` (rows x columns).

    Raises:
        ValueError: when the text is not a size between 64 and 4096 pixels.
    """
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError as exc:
        raise ValueError(f"size {text!r} is not N or ROWSxCOLS") from exc
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(64 <= v <= 4096 for v in values):
        raise ValueError(f"size {text!r}: rows and columns must each be 64-4096 pixels")
    return values[0], values[1]


def generate(
    out_dir: Path,
    n: int,
    seed: int,
    size: int | tuple[int, int] = 512,
    *,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write ``n`` synthetic radiographs as DICOM, their masks and ``labels.csv``.

    About one image in seven is a follow-up of the previous patient (same person,
    anatomy, sex and age band), so patient-level splits matter.

    Args:
        out_dir: output folder (created); files go to ``images/`` and ``masks/``.
        n: number of images (>= 1).
        seed: data set seed; the same seed gives the same data set.
        size: square side, or (rows, columns), in pixels.
        progress: called with 1 after each image (for progress bars).

    Returns:
        Path of ``labels.csv`` (columns :data:`LABEL_COLUMNS`; paths relative to it).
        ``finding_masks.csv`` beside it names each finding's own mask
        (``masks/NNNNNN_<finding>.tif``).
    """
    if n < 1:
        raise ValueError(f"n={n}: must be at least 1")
    shape = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = np.random.default_rng([seed, 99])
    labels_path = out_dir / "labels.csv"
    patient_no = -1
    own_columns = ["image", *(finding_mask_column(f) for f in FINDINGS)]
    with (
        labels_path.open("w", newline="", encoding="utf-8") as fh,
        (out_dir / FINDING_MASKS_CSV).open("w", newline="", encoding="utf-8") as own_fh,
    ):
        writer = csv.DictWriter(fh, fieldnames=list(LABEL_COLUMNS))
        writer.writeheader()
        own_writer = csv.DictWriter(own_fh, fieldnames=own_columns)
        own_writer.writeheader()
        for i in range(n):
            follow_up = i > 0 and plan.random() < 1 / 7
            if not follow_up:
                patient_no += 1
            patient_id = f"SYN-{seed:03d}-{patient_no:06d}"
            site = SITES[int(np.random.default_rng([seed, patient_no, 5]).integers(len(SITES)))]
            case = render_case(seed, i, shape, patient=patient_no)
            image_rel = f"images/{i:06d}.dcm"
            write_dicom(
                case, out_dir / image_rel, seed=seed, index=i, patient_id=patient_id, site=site
            )
            mask_rel = ""
            if case.mask.any():
                mask_rel = f"masks/{i:06d}.png"
                (out_dir / "masks").mkdir(exist_ok=True)
                Image.fromarray(case.mask.astype(np.uint8) * 255).save(out_dir / mask_rel)
            own_row = {"image": image_rel}
            for name, finding_mask in case.finding_masks.items():
                if not finding_mask.any():  # none drawn at this size: unknown, not empty
                    continue
                own_rel = f"masks/{i:06d}_{name}.tif"
                # Bilevel, CCITT group 4: ~200 bytes a mask, read by PIL like the PNG.
                Image.fromarray(finding_mask).save(out_dir / own_rel, compression="group4")
                own_row[finding_mask_column(name)] = own_rel
            own_writer.writerow(own_row)
            writer.writerow(
                {
                    "image": image_rel,
                    "patient_id": patient_id,
                    "sex": case.sex,
                    "age": case.age,
                    "site": site,
                    "abnormal": int(any(case.findings.values())),
                    **{k: int(v) for k, v in case.findings.items()},
                    "mask": mask_rel,
                }
            )
            if progress is not None:
                progress(1)
    logger.info("wrote %d synthetic radiographs to %s", n, out_dir)
    return labels_path
