"""Readers for the label files of CheXpert, PadChest and VinDr-CXR, in their published
layouts, to Tonle's labels table (:data:`training.cxr_datasets.OUTPUT_COLUMNS`).

Each reads the folder as downloaded; images are referenced by absolute path and must
exist (those missing are left out and counted; none at all is an error with counts).
Label cells are 1, 0, or empty for unknown: a source label that may hide one of ours
makes ours unknown, never absent (an uncertain CheXpert ``-1``, a CheXpert "Lung
Lesion" or VinDr "Nodule/Mass" for ``nodule``, a PadChest "infiltrates" for
``consolidation``). None of them has a TB-free guarantee except where it has a TB
label (PadChest, VinDr-CXR) or the image is labelled normal. Only frontal views are
kept (the model is frontal-only); the view (PA / AP) goes into ``view``.

* CheXpert (Irvin et al. 2019): ``train.csv`` and ``valid.csv``, ``Path`` relative to
  the folder above the data set's. ``valid.csv`` (radiologist consensus) is our test
  split.
* PadChest (Bustos et al. 2020): ``PADCHEST_chest_x_ray_images_labels_160K*.csv``
  (or ``.gz``), images under ``<root>/<ImageDir>/<ImageID>``; ``Labels`` is a
  Python-style list of report findings.
* VinDr-CXR (Nguyen et al. 2022): ``annotations/image_labels_train.csv`` (one row
  per image and radiologist: majority vote, a tie is unknown) and
  ``annotations/image_labels_test.csv`` (consensus, our test split); DICOM under
  ``train/`` and ``test/``. The data set has no patient ids: each image is its own
  patient.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.cxr_datasets import FINDING_MASK_COLUMNS, labels_table

__all__ = ["READERS", "read_chexpert", "read_padchest", "read_vindr"]

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

CHEXPERT_FINDINGS = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
)  # fmt: skip  (Support Devices is not a finding)
_CHEXPERT_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding")


def _any_of(*columns: F64) -> F64:
    """1 if any is 1, else unknown if any is unknown, else 0."""
    stacked = np.vstack(columns)
    positive = (stacked == 1).any(axis=0)
    unknown = np.isnan(stacked).any(axis=0)
    return np.where(positive, 1.0, np.where(unknown, np.nan, 0.0))


def _finish(
    found: pd.DataFrame,
    labels: dict[str, F64],
    *,
    images: pd.Series,
    patients: pd.Series,
    site: str,
    sex: pd.Series,
    age: pd.Series,
    view: pd.Series,
    split: pd.Series,
    source: pd.Series,
) -> pd.DataFrame:
    """Rows whose image exists, as a labels table; raises when none does."""
    exists = images.map(lambda p: Path(p).is_file()).to_numpy()
    if not exists.any():
        raise FileNotFoundError(
            f"{site}: none of the {len(images)} images its label file lists exists "
            f"(first expected: {images.iloc[0] if len(images) else '-'})"
        )
    if not exists.all():
        logger.warning(
            "%s: %d of %d listed images found; %d missing left out",
            site, int(exists.sum()), len(images), int((~exists).sum()),
        )  # fmt: skip
    table = pd.DataFrame(
        {
            "image": images.to_numpy(),
            "patient_id": patients.to_numpy(),
            "sex": sex.to_numpy(),
            "age": age.to_numpy(),
            "site": site,
            **labels,
            "mask": "",
            "split": split.to_numpy(),
            "source_labels": source.to_numpy(),
            **dict.fromkeys(FINDING_MASK_COLUMNS, ""),
            "view": view.to_numpy(),
        },
        index=found.index,
    )
    return labels_table(table[exists].reset_index(drop=True))


def _chexpert_value(series: pd.Series) -> F64:
    """CheXpert cells: 1 positive, 0 negative, -1 uncertain -> unknown, empty
    (not mentioned in the report) -> 0."""
    values = pd.to_numeric(series.replace("", "0"), errors="coerce").to_numpy(dtype=float)
    return np.where(values == -1, np.nan, values)


def read_chexpert(root: Path) -> pd.DataFrame:
    """CheXpert ``train.csv`` + ``valid.csv`` (``valid.csv`` -> test split).

    ``abnormal``: 0 with "No Finding" = 1, 1 when any finding is 1, else unknown;
    ``consolidation``: Consolidation or Pneumonia; ``effusion``: Pleural Effusion;
    ``nodule``: 0 when Lung Lesion is 0 or empty, else unknown (a lesion may be a
    mass); ``tb``: 0 only for "No Finding" images. Lateral views are left out.

    Raises:
        FileNotFoundError: no ``train.csv`` / ``valid.csv``, or no listed image exists.
        ValueError: a column of the published layout is missing.
    """
    parts = [(name, root / f"{name}.csv") for name in ("train", "valid")]
    present = [(name, path) for name, path in parts if path.is_file()]
    if not present:
        raise FileNotFoundError(f"{root}: no train.csv or valid.csv (CheXpert layout)")
    frames = []
    for name, path in present:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in (*_CHEXPERT_COLUMNS, *CHEXPERT_FINDINGS) if c not in frame]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing} (CheXpert layout)")
        frames.append(frame.assign(_split="test" if name == "valid" else ""))
    rows = pd.concat(frames, ignore_index=True)
    frontal = rows["Frontal/Lateral"].str.strip().str.lower() == "frontal"
    if (~frontal).any():
        logger.info("CheXpert: %d lateral images left out", int((~frontal).sum()))
    rows = rows[frontal].reset_index(drop=True)
    value = {c: _chexpert_value(rows[c]) for c in (*CHEXPERT_FINDINGS, "No Finding")}
    normal = value["No Finding"] == 1
    any_finding = np.vstack([value[c] == 1 for c in CHEXPERT_FINDINGS]).any(axis=0)
    lesion = value["Lung Lesion"]
    labels = {
        "abnormal": np.where(normal, 0.0, np.where(any_finding, 1.0, np.nan)),
        "tb": np.where(normal, 0.0, np.nan),
        "nodule": np.where(lesion == 0, 0.0, np.nan),
        "consolidation": _any_of(value["Consolidation"], value["Pneumonia"]),
        "effusion": value["Pleural Effusion"],
    }
    for key in ("nodule", "consolidation", "effusion"):
        labels[key] = np.where(normal, 0.0, labels[key])
    # Path: "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    paths = rows["Path"].str.strip()
    images = paths.map(lambda p: str((root.parent / p).resolve()))
    patients = "chexpert-" + paths.str.extract(r"(patient\d+)", expand=False).fillna(paths)
    source = rows.apply(
        lambda r: "|".join(f"{c}={r[c]}" for c in CHEXPERT_FINDINGS if r[c] not in ("", "0.0")),
        axis=1,
    )
    age = pd.to_numeric(rows["Age"], errors="coerce")
    return _finish(
        rows,
        labels,
        images=images,
        patients=patients,
        site="chexpert",
        sex=rows["Sex"].str.lower().map({"male": "male", "female": "female"}),
        age=age.where((age >= 0) & (age <= 120)),
        view=rows["AP/PA"].str.strip().str.upper(),
        split=rows["_split"],
        source=source,
    )


_PADCHEST_COLUMNS = ("ImageID", "ImageDir", "PatientID", "PatientBirth",
                     "PatientSex_DICOM", "StudyDate_DICOM", "Projection", "Labels")  # fmt: skip
_PADCHEST_FRONTAL = {"PA", "AP", "AP_HORIZONTAL"}
# PadChest report findings -> ours (positive), and those under which ours may hide.
PADCHEST_POSITIVE = {
    "tuberculosis": "tb",
    "nodule": "nodule",
    "multiple nodules": "nodule",
    "consolidation": "consolidation",
    "pneumonia": "consolidation",
    "pleural effusion": "effusion",
}
PADCHEST_UNKNOWN = {
    "tuberculosis sequelae": "tb",
    "mass": "nodule",
    "pulmonary mass": "nodule",
    "infiltrates": "consolidation",
    "alveolar pattern": "consolidation",
    "loculated pleural effusion": "effusion",
}


def _padchest_labels(text: str) -> set[str] | None:
    try:
        parsed = ast.literal_eval(text) if text.strip() else None
    except (ValueError, SyntaxError):
        return None
    if not isinstance(parsed, list):
        return None
    found = {str(item).strip().lower() for item in parsed if str(item).strip()}
    return found or None


def read_padchest(root: Path) -> pd.DataFrame:
    """PadChest: the 160K labels CSV (``.csv`` or ``.csv.gz``), frontal projections.

    ``abnormal``: 0 for ``['normal']``, else 1; a finding of
    :data:`PADCHEST_POSITIVE` makes ours 1, one of :data:`PADCHEST_UNKNOWN` unknown,
    others leave ours 0 (the labels are every finding its report names). Rows with no
    parseable labels are unknown throughout. Images: ``<root>/<ImageDir>/<ImageID>``.

    Raises:
        FileNotFoundError: no labels CSV, or no listed image exists.
        ValueError: a column of the published layout is missing.
    """
    found = sorted(root.glob("PADCHEST_chest_x_ray_images_labels_160K*.csv*"))
    if not found:
        raise FileNotFoundError(
            f"{root}: no PADCHEST_chest_x_ray_images_labels_160K*.csv[.gz] (PadChest layout)"
        )
    rows = pd.read_csv(found[0], dtype=str, keep_default_na=False)
    missing = [c for c in _PADCHEST_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"{found[0]}: missing column(s) {missing} (PadChest layout)")
    frontal = rows["Projection"].str.strip().str.upper().isin(_PADCHEST_FRONTAL)
    rows = rows[frontal].reset_index(drop=True)
    parsed = rows["Labels"].map(_padchest_labels)
    unknown_row = parsed.isna().to_numpy()
    sets = parsed.map(lambda s: s or set())
    normal = sets.map(lambda s: s == {"normal"}).to_numpy()
    labels: dict[str, F64] = {"abnormal": np.where(normal, 0.0, 1.0)}
    for ours in ("tb", "nodule", "consolidation", "effusion"):
        pos = {k for k, v in PADCHEST_POSITIVE.items() if v == ours}
        hide = {k for k, v in PADCHEST_UNKNOWN.items() if v == ours}
        positive = sets.map(lambda s, p=pos: bool(s & p)).to_numpy()
        unknown = sets.map(lambda s, h=hide: bool(s & h)).to_numpy()
        labels[ours] = np.where(positive, 1.0, np.where(unknown, np.nan, 0.0))
    for key in labels:
        labels[key] = np.where(unknown_row, np.nan, labels[key])
    images = (rows["ImageDir"].str.strip() + "/" + rows["ImageID"].str.strip()).map(
        lambda p: str((root / p).resolve())
    )
    birth = pd.to_numeric(rows["PatientBirth"], errors="coerce")
    study_year = pd.to_numeric(rows["StudyDate_DICOM"].str[:4], errors="coerce")
    age = study_year - birth
    projection = rows["Projection"].str.strip().str.upper()
    return _finish(
        rows,
        labels,
        images=images,
        patients="padchest-" + rows["PatientID"].str.strip(),
        site="padchest",
        sex=rows["PatientSex_DICOM"].str.strip().map({"M": "male", "F": "female"}),
        age=age.where((age >= 0) & (age <= 120)),
        view=projection.where(projection != "AP_HORIZONTAL", "AP"),
        split=pd.Series("", index=rows.index),
        source=sets.map(lambda s: "|".join(sorted(s))),
    )


VINDR_POSITIVE = {
    "Tuberculosis": "tb",
    "Consolidation": "consolidation",
    "Pneumonia": "consolidation",
    "Pleural effusion": "effusion",
}
VINDR_UNKNOWN = {"Nodule/Mass": "nodule", "Infiltration": "consolidation"}


def _vindr_votes(path: Path) -> pd.DataFrame:
    """Image -> mean vote per label (one row per image; several readers averaged)."""
    frame = pd.read_csv(path)
    if "image_id" not in frame.columns or "No finding" not in frame.columns:
        raise ValueError(f"{path}: needs image_id and the label columns (VinDr-CXR layout)")
    labels = [c for c in frame.columns if c not in ("image_id", "rad_id")]
    return frame.groupby("image_id", sort=True)[labels].mean()


def _majority(votes: pd.Series) -> F64:
    """Mean vote -> 1 above 0.5, 0 below, unknown on a tie."""
    v = votes.to_numpy(dtype=float)
    return np.where(v > 0.5, 1.0, np.where(v < 0.5, 0.0, np.nan))


def read_vindr(root: Path) -> pd.DataFrame:
    """VinDr-CXR: majority of the readers per image; the test labels are our test split.

    ``abnormal``: 0 when "No finding" wins, else 1; a label of
    :data:`VINDR_POSITIVE` maps to ours; "Nodule/Mass" makes ``nodule`` unknown (a
    mass is not a nodule) and is its only source (0 when the readers say no).

    Raises:
        FileNotFoundError: no label file, or no listed image exists.
        ValueError: a label file without the published columns.
    """
    notes = root / "annotations"
    parts = [
        (notes / "image_labels_train.csv", "train", ""),
        (notes / "image_labels_test.csv", "test", "test"),
    ]
    frames = []
    for path, folder, split in parts:
        if path.is_file():
            votes = _vindr_votes(path)
            frames.append(votes.assign(_folder=folder, _split=split))
    if not frames:
        raise FileNotFoundError(f"{root}: no annotations/image_labels_*.csv (VinDr-CXR layout)")
    rows = pd.concat(frames).reset_index()
    vote = {
        c: _majority(rows[c]) for c in rows.columns if c not in ("image_id", "_folder", "_split")
    }
    missing = [c for c in (*VINDR_POSITIVE, *VINDR_UNKNOWN) if c not in vote]
    if missing:
        raise ValueError(f"{root}: label column(s) {missing} missing (VinDr-CXR layout)")
    normal = vote["No finding"] == 1
    labels: dict[str, F64] = {"abnormal": np.where(normal, 0.0, 1.0)}
    for ours in ("tb", "consolidation", "effusion"):
        sources = [vote[k] for k, v in VINDR_POSITIVE.items() if v == ours]
        labels[ours] = _any_of(*sources)
    labels["nodule"] = np.zeros(len(rows))
    for source, ours in VINDR_UNKNOWN.items():  # a yes (or a tie) leaves ours unknown
        hidden = vote[source] != 0
        labels[ours] = np.where(hidden & (labels[ours] != 1), np.nan, labels[ours])
    for key in ("tb", "nodule", "consolidation", "effusion"):
        labels[key] = np.where(normal, 0.0, labels[key])
    images = pd.Series(
        [
            str((root / folder / f"{image}.dicom").resolve())
            for folder, image in zip(rows["_folder"], rows["image_id"], strict=True)
        ],
        index=rows.index,
    )
    names = [c for c in vote if c != "No finding"]
    source = pd.Series(
        ["|".join(c for c in names if vote[c][i] == 1) for i in range(len(rows))], index=rows.index
    )
    none = pd.Series(np.full(len(rows), None, dtype=object), index=rows.index)
    return _finish(
        rows,
        labels,
        images=images,
        patients="vindr-" + rows["image_id"].astype(str),
        site="vindr-cxr",
        sex=none,
        age=none,
        view=pd.Series("", index=rows.index),
        split=rows["_split"],
        source=source,
    )


READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "chexpert": read_chexpert,
    "padchest": read_padchest,
    "vindr-cxr": read_vindr,
}
