"""``tonle data import-cxr``: any supported public layout, or a hospital's own folder,
into Tonle's ``labels.csv`` (contract C7) with patient-wise splits.

The readers live in :mod:`training.cxr_datasets` (NIH, Shenzhen, Montgomery, TBX11K,
a labelled folder) and :mod:`training.cxr_public_labels` (CheXpert, PadChest,
VinDr-CXR); this module only chooses one and writes its table.
"""

from __future__ import annotations

import logging
from pathlib import Path

from training.cxr_datasets import (
    NIH_LABEL_MAP,
    LabelMap,
    assign_splits,
    read_folder,
    read_montgomery,
    read_nih_cxr14,
    read_shenzhen,
    read_tbx11k,
    write_labels,
)
from training.cxr_public_labels import READERS

__all__ = ["ADAPTERS", "import_dataset"]

logger = logging.getLogger(__name__)

ADAPTERS: dict[str, str] = {
    "nih-cxr14": "NIH ChestX-ray14 (Data_Entry_2017.csv, images*/, train_val_list/test_list)",
    "shenzhen": "Shenzhen TB set (CXR_png/CHNCXR_*.png, ClinicalReadings/)",
    "montgomery": "Montgomery County TB set (CXR_png/MCUCXR_*.png, ClinicalReadings/)",
    "tbx11k": "TBX11K (imgs/, lists/, annotations/xml/)",
    "folder": "a folder of DICOM/PNG/JPEG with labels.csv (C7 columns)",
    "chexpert": "CheXpert (train.csv, valid.csv; -1 = uncertain -> unknown; frontal only)",
    "padchest": "PadChest (PADCHEST_chest_x_ray_images_labels_160K*.csv[.gz], <ImageDir>/)",
    "vindr-cxr": "VinDr-CXR (annotations/image_labels_{train,test}.csv, train/, test/)",
}


def import_dataset(
    kind: str,
    source: Path,
    out_dir: Path,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    labels_csv: Path | None = None,
    label_map: LabelMap | None = None,
    official_test: bool = True,
) -> Path:
    """Read a data set in its own layout and write Tonle's ``labels.csv`` for it.

    Args:
        kind: one of :data:`ADAPTERS`.
        source: the data set's folder, as downloaded.
        out_dir: where ``labels.csv`` (and box masks) go.
        seed: split seed.
        val_fraction: share of (non-official-test) patients for validation.
        test_fraction: share for test when the data set has no official test list.
        labels_csv: for ``folder``: the CSV (default ``source/labels.csv``).
        label_map: the data set's labels -> ours, where the reader takes one (NIH).
        official_test: NIH: require ``test_list.txt`` as the test split (False: the
            test split comes from the patient hash, ``test_fraction``).

    Returns:
        Path of the written ``labels.csv``.

    Raises:
        FileNotFoundError: the layout's files are missing (with counts).
        ValueError: bad content, or no image at all to import.
    """
    if kind == "nih-cxr14":
        table = read_nih_cxr14(
            source,
            out_dir / "masks",
            label_map=label_map or NIH_LABEL_MAP,
            official_test=official_test,
        )
    elif kind == "shenzhen":
        table = read_shenzhen(source)
    elif kind == "montgomery":
        table = read_montgomery(source)
    elif kind == "tbx11k":
        table = read_tbx11k(source, out_dir / "masks")
    elif kind == "folder":
        table = read_folder(source, labels_csv)
    elif kind in READERS:
        table = READERS[kind](source)
    else:
        raise ValueError(f"unknown data set kind {kind!r}; choose from {sorted(ADAPTERS)}")
    if table.empty:
        raise ValueError(f"{source}: no image to import ({kind} layout); nothing written")
    table = assign_splits(table, val_fraction, test_fraction, seed)
    path = write_labels(table, out_dir)
    counts = table["split"].value_counts().to_dict()
    logger.info("%s: %d images, splits %s -> %s", kind, len(table), counts, path)
    return path
