"""Chest X-ray data for training and evaluation: a labels CSV plus DICOM / PNG files.

The layout is contract C7's (``training/cxr_synthetic.py`` writes it, and the generic
"folder of DICOM or PNG + labels CSV" adapter uses it): ``labels.csv`` with columns
``image``, ``patient_id``, ``sex``, ``age``, ``site``, the five label columns, and
``mask`` (path of the union finding mask, empty for normal), paths relative to the
CSV's folder. Every image goes through ``models.cxr_preprocess`` - the same code
serving uses - exactly once, and the resulting tensors are kept in memory.

Per-finding masks are optional: a column ``mask_<finding>`` (e.g. ``mask_nodule``)
names that finding's own mask, in ``labels.csv`` itself or in ``finding_masks.csv``
beside it (columns ``image`` and ``mask_<finding>``, joined on ``image``; the synthetic
generator writes this file). An empty cell means the finding's own extent is not known.
:meth:`CxrData.label_mask` gives the mask a label's map is trained and scored against:
``abnormal`` -> the union mask; a finding -> its own mask, else the union mask when the
finding is the image's only one (every other finding known absent), else none.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
from PIL import Image

from models.cxr_drift import image_statistics
from models.cxr_net import CXR_LABELS
from models.cxr_preprocess import decode_image, to_model_input
from training.cxr_datasets import (
    FINDING_MASK_COLUMNS,
    FINDING_MASKS_CSV,
    SPLITS,
    assign_splits,
    finding_mask_column,
)

__all__ = ["CxrData", "PatientSplit", "load_cxr_data", "patient_split"]

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("image", "patient_id", "sex", "age", "site", *CXR_LABELS, "mask")
_ABNORMAL = "abnormal"


def _read_mask(path: Path) -> npt.NDArray[np.bool_]:
    with Image.open(path) as img:
        return np.asarray(img.convert("L")) > 0


@dataclass
class CxrData:
    """Preprocessed images and their labels, row-aligned with ``table``."""

    root: Path
    table: pd.DataFrame
    images: npt.NDArray[np.float32]  # [N, 1, S, S]
    labels: npt.NDArray[np.float32]  # [N, L] in CXR_LABELS order
    manifest_sha256: str  # hash of labels.csv and every image file
    # Per image, models.cxr_drift.image_statistics (the drift reference); [] if not taken.
    statistics: list[dict[str, float]] = field(default_factory=list)

    def subset(self, index: npt.NDArray[np.int64]) -> CxrData:
        """The rows ``index`` (same root and manifest)."""
        return CxrData(
            root=self.root,
            table=self.table.iloc[index].reset_index(drop=True),
            images=self.images[index],
            labels=self.labels[index],
            manifest_sha256=self.manifest_sha256,
            statistics=[self.statistics[i] for i in index] if self.statistics else [],
        )

    def mask(self, row: int) -> npt.NDArray[np.bool_]:
        """The union finding mask of ``row`` at its stored resolution (all False if none)."""
        return self._mask_file(row, "mask")

    def _mask_file(self, row: int, column: str) -> npt.NDArray[np.bool_]:
        name = self.table[column].iloc[row] if column in self.table.columns else ""
        if not isinstance(name, str) or not name:
            return np.zeros((1, 1), dtype=bool)
        return _read_mask(self.root / name)

    def label_mask(self, row: int, label: str) -> tuple[npt.NDArray[np.bool_], str] | None:
        """The mask ``label``'s map is trained and scored against in ``row``, and its kind.

        Returns:
            ``(mask, kind)`` with kind ``"union"`` (``abnormal``: the union of findings),
            ``"own"`` (the finding's own mask) or ``"sole finding"`` (no own mask: the
            union mask of an image whose only finding this is, every other finding
            known absent); ``None`` when no such mask is known or it is empty. The
            label's truth is not checked here.
        """
        if label == _ABNORMAL:
            union = self.mask(row)
            return (union, "union") if union.any() else None
        own = self._mask_file(row, finding_mask_column(label))
        if own.any():
            return own, "own"
        findings = [j for j, name in enumerate(CXR_LABELS) if name != _ABNORMAL]
        others = [j for j in findings if CXR_LABELS[j] != label]
        truth = self.labels[row]
        if truth[CXR_LABELS.index(label)] > 0 and np.all(truth[others] == 0):
            union = self.mask(row)
            if union.any():
                return union, "sole finding"
        return None


def _decode(path: Path, size: int) -> tuple[npt.NDArray[np.float32], dict[str, float]]:
    """The model input of one image, decoded exactly as serving decodes it (same
    reduction to ``size`` before the intensity window), and its drift statistics."""
    decoded = decode_image(path.read_bytes(), target_size=size)
    image = np.asarray(to_model_input(decoded, size=size), dtype=np.float32)
    return image, image_statistics(image, decoded)


def load_cxr_data(
    labels_csv: Path,
    size: int,
    progress: Callable[[int, int], None] | None = None,
) -> CxrData:
    """Read ``labels_csv`` and preprocess every image to ``[1, size, size]``.

    Args:
        labels_csv: the labels file; image and mask paths are relative to its folder.
        size: model input side in pixels.
        progress: called as ``progress(done, total)`` after each image.

    Raises:
        ValueError: missing columns, or an image that cannot be decoded (named).
    """
    text = ["patient_id", "image", "mask", "split", "view", *FINDING_MASK_COLUMNS]
    # Text columns stay text when every cell is empty (an import without masks).
    table = pd.read_csv(labels_csv, dtype=dict.fromkeys(text, str))
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{labels_csv} lacks column(s) {missing}; needs {list(REQUIRED_COLUMNS)}")
    table["mask"] = table["mask"].fillna("")
    root = labels_csv.parent
    digest = hashlib.sha256(labels_csv.read_bytes())
    sidecar = root / FINDING_MASKS_CSV
    if sidecar.is_file():
        table = _join_finding_masks(table, sidecar)
        digest.update(hashlib.sha256(sidecar.read_bytes()).digest())
    for label in CXR_LABELS:
        column = finding_mask_column(label)
        if label != _ABNORMAL and column in table.columns:
            table[column] = table[column].fillna("").astype(str)
    images = np.empty((len(table), 1, size, size), dtype=np.float32)
    statistics: list[dict[str, float]] = []
    for i, name in enumerate(table["image"]):
        path = root / name
        try:
            images[i], stats = _decode(path, size)
            statistics.append(stats)
        except Exception as exc:  # any decoder failure names the file
            raise ValueError(f"cannot preprocess {path}: {exc}") from exc
        digest.update(hashlib.sha256(path.read_bytes()).digest())
        if progress is not None:
            progress(i + 1, len(table))
    labels = table[list(CXR_LABELS)].to_numpy(dtype=np.float32)
    return CxrData(
        root=root,
        table=table,
        images=images,
        labels=labels,
        manifest_sha256=digest.hexdigest(),
        statistics=statistics,
    )


def _join_finding_masks(table: pd.DataFrame, sidecar: Path) -> pd.DataFrame:
    """Add the ``mask_<finding>`` columns of ``sidecar`` that ``table`` lacks, by image."""
    own = pd.read_csv(sidecar, dtype=str, keep_default_na=False)
    if "image" not in own.columns:
        raise ValueError(f"{sidecar} lacks column 'image'; has {list(own.columns)}")
    wanted = [finding_mask_column(f) for f in CXR_LABELS if f != _ABNORMAL]
    columns = [c for c in own.columns if c in wanted and c not in table.columns]
    if own["image"].duplicated().any():
        raise ValueError(f"{sidecar} lists an image twice")
    joined = table.merge(own[["image", *columns]], on="image", how="left", validate="m:1")
    return joined.reset_index(drop=True)


@dataclass(frozen=True)
class PatientSplit:
    """Row indices of each split, and where the assignment came from (for the card)."""

    train: npt.NDArray[np.int64]
    validation: npt.NDArray[np.int64]
    test: npt.NDArray[np.int64]
    source: str


def patient_split(
    table: pd.DataFrame, fractions: tuple[float, float, float], seed: int
) -> PatientSplit:
    """Split rows into train / validation / test, never splitting a patient.

    A ``split`` column (``tonle data import-cxr`` writes one, keeping official test
    lists) is used as given; rows it leaves empty are placed by a hash of
    ``(seed, patient_id)`` with ``fractions`` (:func:`~training.cxr_datasets.assign_splits`),
    so a patient keeps its split when data are added.

    Raises:
        ValueError: the fractions do not sum to 1, a bad or patient-mixing ``split``
            column, or an empty split.
    """
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions {fractions} must sum to 1")
    given = (
        table["split"].fillna("").astype(str).str.strip() != ""
        if "split" in table.columns
        else pd.Series(False, index=table.index)
    )
    filled = assign_splits(table, fractions[1], fractions[2], seed)["split"].to_numpy()
    out = [np.flatnonzero(filled == name).astype(np.int64) for name in SPLITS]
    for name, idx in zip(("train", "validation", "test"), out, strict=True):
        if idx.size == 0:
            raise ValueError(
                f"the {name} split is empty ({table['patient_id'].nunique()} patients); "
                "add data or set its share in the split column or data.split"
            )
    if given.all():
        source = "the labels file's split column"
    elif given.any():
        source = (
            f"the labels file's split column ({int(given.sum())} rows), the rest by patient "
            f"hash (seed {seed}, validation {fractions[1]:g}, test {fractions[2]:g})"
        )
    else:
        source = (
            f"patient hash (seed {seed}): fractions train {fractions[0]:g}, validation "
            f"{fractions[1]:g}, test {fractions[2]:g}"
        )
    return PatientSplit(train=out[0], validation=out[1], test=out[2], source=source)
