"""Adapters from public chest X-ray data set layouts to Tonle's labels CSV (contract C7).

Each reader takes the folder a user downloaded (unchanged, as the data set ships)
and returns a table with the C7 columns (``image``, ``patient_id``, ``sex``, ``age``,
``site``, ``abnormal``, ``tb``, ``nodule``, ``consolidation``, ``effusion``, ``mask``)
plus ``split`` (``train`` / ``val`` / ``test``), ``source_labels`` (the data set's
own labels, for audit) and the optional per-finding masks ``mask_tb``, ``mask_nodule``,
``mask_consolidation``, ``mask_effusion`` (that finding's own mask; empty = not known:
training and evaluation then fall back to the union ``mask`` only where the finding is
the image's only one, see :meth:`training.cxr_data.CxrData.label_mask`). Label cells
are 1, 0, or empty when the data set does not say (e.g. NIH has no TB label): an empty
cell means *unknown*, never *absent*, and a training loss must mask it. Images are
referenced by absolute path; nothing is copied except masks drawn from bounding boxes.

Splits are by patient: every image of a patient lands in the same split. Official
test lists are kept (NIH ``test_list.txt``; TBX11K's public labels end at its
validation list, which becomes our test split); the rest is assigned by a hash of
``(seed, patient_id)``, so a patient keeps its split when more data arrives.

Readers: :func:`read_nih_cxr14`, :func:`read_shenzhen`, :func:`read_montgomery`,
:func:`read_tbx11k`, :func:`read_folder`; :func:`training.cxr_import.import_dataset`
runs one and writes ``labels.csv``. The dataset cards in ``datasets/<name>/README.md`` describe each
layout, licence and how to obtain it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import xml.etree.ElementTree as ET  # local annotation files the user downloaded
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from PIL import Image
from pydantic import BaseModel, ConfigDict

from models.cxr_labels import CXR_LABELS

__all__ = [
    "FINDING_MASKS_CSV",
    "FINDING_MASK_COLUMNS",
    "LABELS",
    "NIH_LABEL_MAP",
    "OUTPUT_COLUMNS",
    "SPLITS",
    "LabelMap",
    "assign_splits",
    "finding_mask_column",
    "labels_table",
    "read_folder",
    "read_montgomery",
    "read_nih_cxr14",
    "read_shenzhen",
    "read_tbx11k",
    "write_labels",
]

logger = logging.getLogger(__name__)

LABELS = CXR_LABELS  # the model's label order, one column each in labels.csv


def finding_mask_column(finding: str) -> str:
    """The C7 column naming ``finding``'s own mask: ``mask_<finding>``."""
    return f"mask_{finding}"


FINDING_MASK_COLUMNS: tuple[str, ...] = tuple(finding_mask_column(f) for f in LABELS[1:])
# Optional file beside labels.csv: ``image`` plus ``mask_<finding>`` columns, joined on
# ``image`` (the synthetic generator writes it; its labels.csv stays as it was).
FINDING_MASKS_CSV = "finding_masks.csv"
OUTPUT_COLUMNS: tuple[str, ...] = (
    "image", "patient_id", "sex", "age", "site", *LABELS, "mask", "split", "source_labels",
    *FINDING_MASK_COLUMNS, "view",
)  # fmt: skip
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom"}

# NIH ChestX-ray14 label -> ours (labels not listed only make the image abnormal).
Finding = Literal["nodule", "consolidation", "effusion", "tb"]
NIH_MAP: dict[str, Finding] = {
    "Nodule": "nodule",
    "Consolidation": "consolidation",
    "Pneumonia": "consolidation",
    "Effusion": "effusion",
}
# NIH labels under which one of ours may hide: that label is unknown, never asserted
# absent (an "Infiltration" may be consolidation, a "Mass" a large nodule).
NIH_UNKNOWN: dict[str, Finding] = {"Infiltration": "consolidation", "Mass": "nodule"}
# BBox_List_2017.csv gives pixels of the 1024 x 1024 PNGs NIH distributes.
NIH_BOX_SPACE = (1024, 1024)
_NIH_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "Patient Age", "Patient Gender")


def _row(
    image: Path, patient_id: str, site: str, labels: dict[str, float], **extra: object
) -> dict[str, object]:
    row: dict[str, object] = {
        "image": str(image.resolve()),
        "patient_id": patient_id,
        "sex": extra.pop("sex", None),
        "age": extra.pop("age", None),
        "site": site,
        "mask": extra.pop("mask", ""),
        "split": extra.pop("split", ""),
        "source_labels": extra.pop("source_labels", ""),
        "view": extra.pop("view", "") or "",
    }
    for column in FINDING_MASK_COLUMNS:
        row[column] = extra.pop(column, "")
    for label in LABELS:
        row[label] = labels.get(label, np.nan)
    return row


def _normal() -> dict[str, float]:
    return {label: 0.0 for label in LABELS}


def _table(rows: list[dict[str, object]]) -> pd.DataFrame:
    return labels_table(pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS)))


def labels_table(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (every :data:`OUTPUT_COLUMNS` column) in that order, labels as nullable
    0/1 integers (NaN -> <NA>: unknown), ages numeric."""
    table = table.loc[:, list(OUTPUT_COLUMNS)].copy()
    for label in LABELS:
        table[label] = table[label].astype("Float64").round().astype("Int64")
    table["age"] = pd.to_numeric(table["age"], errors="coerce")
    return table


class LabelMap(BaseModel):
    """How a data set's own labels become ours (``--label-map FILE``, YAML).

    ``positive``: source label -> our label it makes positive. ``unknown``: source
    label -> our label it makes unknown (unless a positive label says otherwise).
    """

    model_config = ConfigDict(extra="forbid")

    positive: dict[str, Finding]
    unknown: dict[str, Finding]


NIH_LABEL_MAP = LabelMap(positive=NIH_MAP, unknown=NIH_UNKNOWN)


def _nih_entries(root: Path) -> Path:
    found = sorted(root.glob("Data_Entry_2017*.csv")) + sorted(root.glob("Data_Entry_2017*.csv.gz"))
    if not found:
        raise FileNotFoundError(
            f"{root}: no Data_Entry_2017*.csv or .csv.gz (NIH ChestX-ray14 layout)"
        )
    return found[0]


def read_nih_cxr14(
    root: Path,
    masks_dir: Path | None = None,
    *,
    label_map: LabelMap = NIH_LABEL_MAP,
    official_test: bool = True,
) -> pd.DataFrame:
    """NIH ChestX-ray14: ``Data_Entry_2017*.csv`` (or ``.csv.gz``), PNGs under
    ``images*/``, ``test_list.txt``.

    Images listed in the CSV but not on disk are left out (a partial download works;
    the count is logged). TB is unknown for abnormal images (NIH has no TB label);
    ``abnormal`` is "not No Finding"; a label of :data:`NIH_UNKNOWN` (Infiltration,
    Mass) makes ours unknown, never absent, unless ``label_map`` says otherwise. The
    view position (PA / AP) is kept in ``view``. With ``masks_dir``, the boxes of
    ``BBox_List_2017.csv`` (given in the 1024 x 1024 pixels of NIH's PNGs, scaled to
    each image's real size) are drawn there as union masks, and the boxes of a label
    that maps to one of ours also as that finding's own mask.

    Args:
        root: the data set folder as downloaded.
        masks_dir: where to draw box masks (None: no masks).
        label_map: NIH label -> ours (positive or unknown).
        official_test: ``test_list.txt`` is required and is the test split; False
            (``--hashed-test``) leaves the test split to the patient hash.

    Raises:
        FileNotFoundError: no label file, no listed image under ``images*/`` (with
            counts), or no ``test_list.txt`` while ``official_test``.
        ValueError: missing columns, or a test list that splits a patient.
    """
    entries_path = _nih_entries(root)
    entries = pd.read_csv(entries_path, dtype=str, keep_default_na=False)
    missing = [c for c in _NIH_COLUMNS if c not in entries.columns]
    if missing:
        raise ValueError(f"{entries_path}: missing column(s) {missing}")
    base = root.resolve()
    files = {p.name: p for p in base.glob("images*/**/*.png")}
    names = entries["Image Index"].str.strip()
    present = names.isin(files.keys()).to_numpy()
    if not present.any():
        listed = set(names)
        elsewhere = [p for p in base.rglob("*.png") if p.name in listed]
        where = f"; {len(elsewhere)} of them elsewhere, e.g. {elsewhere[0]}" if elsewhere else ""
        raise FileNotFoundError(
            f"{root}: none of the {len(entries)} images listed in {entries_path.name} is "
            f"under images*/ ({len(files)} PNG files there{where}); NIH's layout is "
            "images_001/images/00000001_000.png"
        )
    if not present.all():
        logger.warning(
            "NIH: %d of %d listed images are under images*/; %d not on disk are left out",
            int(present.sum()), len(entries), int((~present).sum()),
        )  # fmt: skip
    rows = entries[present].reset_index(drop=True)
    names = names[present].reset_index(drop=True)
    patients = "nih-" + rows["Patient ID"].str.strip()
    split = _nih_test_split(root, names, patients, official_test)
    findings = rows["Finding Labels"].str.split("|").map(lambda f: {x.strip() for x in f})
    normal = (findings.map(lambda f: f == {"No Finding"})).to_numpy()
    labels: dict[str, npt.NDArray[np.float64]] = {
        "abnormal": np.where(normal, 0.0, 1.0),
        "tb": np.where(normal, 0.0, np.nan),
    }
    for ours in LABELS[2:]:
        sources = {k for k, v in label_map.positive.items() if v == ours}
        hiding = {k for k, v in label_map.unknown.items() if v == ours}
        positive = findings.map(lambda f, s=sources: bool(f & s)).to_numpy()
        unknown = findings.map(lambda f, h=hiding: bool(f & h)).to_numpy()
        labels[ours] = np.where(positive, 1.0, np.where(unknown, np.nan, 0.0))
    age = pd.to_numeric(rows["Patient Age"].str.strip().str.rstrip("Yy"), errors="coerce")
    table = pd.DataFrame(
        {
            "image": [str(files[n]) for n in names],
            "patient_id": patients,
            "sex": rows["Patient Gender"].str.strip().map({"M": "male", "F": "female"}),
            "age": age.where((age >= 0) & (age <= 120)),  # the CSV has a few ages like 414
            "site": "nih-cxr14",
            **labels,
            "mask": "",
            "split": split,
            "source_labels": findings.map(lambda f: "|".join(sorted(f))),
            **dict.fromkeys(FINDING_MASK_COLUMNS, ""),
            "view": rows.get("View Position", pd.Series("", index=rows.index)).str.strip(),
        }
    )
    boxes = _nih_boxes(root / "BBox_List_2017.csv")
    if masks_dir is not None and boxes:
        scaled = 0
        for i in np.flatnonzero(names.isin(boxes.keys()).to_numpy()):
            path, own_boxes = files[names[i]], boxes[names[i]]
            table.loc[i, "mask"] = str(
                _draw_mask(path, own_boxes, masks_dir / names[i], NIH_BOX_SPACE).resolve()
            )
            for column, mask in _nih_finding_masks(path, own_boxes, masks_dir, label_map).items():
                table.loc[i, column] = mask
            scaled += _image_size(path) != NIH_BOX_SPACE
        if scaled:
            logger.info("NIH: boxes scaled from 1024 x 1024 to the size of %d images", scaled)
    return labels_table(table)


def _nih_test_split(
    root: Path, names: pd.Series, patients: pd.Series, official_test: bool
) -> npt.NDArray[np.str_]:
    """``test`` for the images of ``test_list.txt``, ``""`` for the others.

    Raises:
        FileNotFoundError: no ``test_list.txt`` while ``official_test``.
        ValueError: the list has some but not all of a patient's images.
    """
    path = root / "test_list.txt"
    if not official_test:
        return np.full(len(names), "", dtype=object)
    if not path.is_file():
        raise FileNotFoundError(
            f"{root}: no test_list.txt (NIH's official, patient-wise test split); put it "
            "there, or pass --hashed-test to carve the test split by patient hash instead"
        )
    in_test = names.isin(_read_list(path)).to_numpy()
    share = pd.Series(in_test).groupby(patients.to_numpy()).agg(["sum", "count"])
    split_patients = share[(share["sum"] > 0) & (share["sum"] < share["count"])]
    if len(split_patients):
        first = split_patients.index[0]
        raise ValueError(
            f"{path} is not patient-wise: {len(split_patients)} patient(s) have images both "
            f"in it and not (e.g. {first}: {int(split_patients.loc[first, 'sum'])} of "
            f"{int(split_patients.loc[first, 'count'])} images listed); use NIH's list as "
            "published, or pass --hashed-test"
        )
    return np.where(in_test, "test", "")


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def _nih_finding_masks(
    image: Path,
    boxes: list[tuple[str, float, float, float, float]],
    masks_dir: Path,
    label_map: LabelMap,
) -> dict[str, str]:
    """``mask_<finding>`` -> path of that finding's own box mask, for mapped box labels."""
    by_finding: dict[str, list[tuple[str, float, float, float, float]]] = {}
    for box in boxes:
        finding = label_map.positive.get(box[0])
        if finding is not None:
            by_finding.setdefault(finding, []).append(box)
    return {
        f"mask_{finding}": str(
            _draw_mask(
                image, own, masks_dir / f"{image.stem}_{finding}.png", NIH_BOX_SPACE
            ).resolve()
        )
        for finding, own in sorted(by_finding.items())
    }


def _nih_boxes(path: Path) -> dict[str, list[tuple[str, float, float, float, float]]]:
    """Image -> [(label, x0, y0, x1, y1)] from BBox_List_2017.csv (x, y, w, h columns)."""
    if not path.is_file():
        return {}
    raw = pd.read_csv(path, header=None, skiprows=1, usecols=range(6), dtype=str)
    out: dict[str, list[tuple[str, float, float, float, float]]] = {}
    for name, label, *xywh in raw.itertuples(index=False):
        x, y, w, h = (float(v) for v in xywh)
        out.setdefault(str(name), []).append((str(label), x, y, x + w, y + h))
    return out


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


_SZ_NAME = re.compile(r"^CHNCXR_(\d{4})_([01])$")
_MC_NAME = re.compile(r"^MCUCXR_(\d{4})_([01])$")
_AGE = re.compile(r"(\d+)\s*(yrs?|years?|y|months?|mons?|m|days?|d)\b", re.IGNORECASE)
_AGE_SCALE = {"y": 1.0, "m": 1 / 12, "d": 1 / 365.25}


def _reading(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


def _parse_age(text: str) -> float | None:
    match = _AGE.search(text)
    if not match:
        return None
    return round(int(match.group(1)) * _AGE_SCALE[match.group(2)[0].lower()], 2)


_Reading = Callable[[str], tuple[str | None, float | None]]


def _tb_set(root: Path, pattern: re.Pattern[str], site: str, parse: _Reading) -> pd.DataFrame:
    rows: list[dict[str, object]] = []
    for path in sorted(root.rglob("*.png")):
        match = pattern.match(path.stem)
        if not match or "mask" in str(path.parent).lower():
            continue
        text = ""
        for readings in path.parents:
            candidate = readings / "ClinicalReadings" / f"{path.stem}.txt"
            if candidate.is_file():
                text = _reading(candidate)
                break
            if readings == root:
                break
        sex, age = parse(text)
        tb = match.group(2) == "1"
        labels = _normal() if not tb else {"abnormal": 1.0, "tb": 1.0}
        finding = " ".join(text.split()[2:]) if site == "shenzhen" else text
        source = ("tb: " if tb else "normal: ") + " ".join(finding.split())[:200]
        patient = f"{site}-{match.group(1)}"
        rows.append(_row(path, patient, site, labels, sex=sex, age=age, source_labels=source))
    if not rows:
        raise FileNotFoundError(f"{root}: no {pattern.pattern} PNG files ({site} layout)")
    return _table(rows)


def _shenzhen_reading(text: str) -> tuple[str | None, float | None]:
    first = text.strip().splitlines()[0].lower() if text.strip() else ""
    sex = "female" if "female" in first else "male" if "male" in first else None
    return sex, _parse_age(first)


def _montgomery_reading(text: str) -> tuple[str | None, float | None]:
    sex_match = re.search(r"Sex:\s*([MFO])", text, re.IGNORECASE)
    sexes = {"m": "male", "f": "female", "o": "other"}
    sex = sexes.get(sex_match.group(1).lower()) if sex_match else None
    age_match = re.search(r"Age:\s*0*(\d+)\s*([YMD])", text, re.IGNORECASE)
    if not age_match:
        return sex, None
    return sex, round(int(age_match.group(1)) * _AGE_SCALE[age_match.group(2).lower()], 2)


def read_shenzhen(root: Path) -> pd.DataFrame:
    """Shenzhen TB set: ``CXR_png/CHNCXR_NNNN_L.png`` (L = 1 for TB) and
    ``ClinicalReadings/CHNCXR_NNNN_L.txt`` ("male 45yrs" then the reading).

    Normal images have every finding 0; TB images have ``tb`` = 1 and the other
    findings unknown. Each image is its own patient (the set has no patient ids).
    """
    return _tb_set(root, _SZ_NAME, "shenzhen", _shenzhen_reading)


def read_montgomery(root: Path) -> pd.DataFrame:
    """Montgomery County TB set: ``CXR_png/MCUCXR_NNNN_L.png`` and
    ``ClinicalReadings/MCUCXR_NNNN_L.txt`` ("Patient's Sex: F", "Patient's Age: 040Y")."""
    return _tb_set(root, _MC_NAME, "montgomery", _montgomery_reading)


def read_tbx11k(root: Path, masks_dir: Path) -> pd.DataFrame:
    """TBX11K: ``imgs/{health,sick,tb}/*.png``, ``lists/*.txt`` and Pascal VOC boxes in
    ``annotations/xml/``. TB boxes are drawn as union masks into ``masks_dir``.

    ``health`` -> normal; ``sick`` -> abnormal, not TB, other findings unknown;
    ``tb`` -> abnormal and TB. The official validation list becomes our test split
    (the official test labels are not public); ``imgs/test`` and ``extra`` are not read.
    Every box is a TB box, so the union mask is also ``mask_tb``, TB's own mask (the
    other findings are unknown, so without it the TB map could not be supervised).
    """
    imgs = root / "imgs"
    if not imgs.is_dir():
        raise FileNotFoundError(f"{root}: no imgs/ folder (TBX11K layout)")
    lists = root / "lists"
    train = _read_list(lists / "TBX11K_train.txt") or _read_list(lists / "all_train.txt")
    val = _read_list(lists / "TBX11K_val.txt") or _read_list(lists / "all_val.txt")
    names = sorted(n.removeprefix("imgs/") for n in train | val)
    rows: list[dict[str, object]] = []
    for name in names:
        category = name.split("/", 1)[0]
        path = imgs / name
        if category not in {"health", "sick", "tb"} or not path.is_file():
            continue
        labels = _normal()
        if category != "health":
            labels = {"abnormal": 1.0, "tb": 1.0 if category == "tb" else 0.0}
        mask, boxes = "", _voc_boxes(root / "annotations" / "xml" / f"{Path(name).stem}.xml")
        if category == "tb" and boxes:
            mask = str(_draw_mask(path, boxes, masks_dir / f"{Path(name).stem}.png").resolve())
        split = "test" if name in val or f"imgs/{name}" in val else ""
        source = category + "".join(f"|{b[0]}" for b in boxes)
        patient = f"tbx11k-{Path(name).stem}"
        rows.append(
            _row(
                path,
                patient,
                "tbx11k",
                labels,
                mask=mask,
                mask_tb=mask,
                split=split,
                source_labels=source,
            )
        )
    if not rows:
        raise FileNotFoundError(f"{root}: no listed images found under imgs/")
    return _table(rows)


def _voc_boxes(path: Path) -> list[tuple[str, float, float, float, float]]:
    if not path.is_file():
        return []
    tree = ET.parse(path)  # noqa: S314 - local file from the data set
    boxes = []
    for obj in tree.getroot().iter("object"):
        box = obj.find("bndbox")
        if box is None:
            continue
        coords = [float(box.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax")]
        if all(np.isfinite(coords)):
            boxes.append((obj.findtext("name") or "?", *coords))
    return boxes  # type: ignore[return-value]


def _draw_mask(
    image: Path,
    boxes: list[tuple[str, float, float, float, float]],
    out: Path,
    space: tuple[int, int] | None = None,
) -> Path:
    """Draw ``boxes`` as a mask of ``image``'s size; ``space`` (width, height): the pixel
    grid the boxes are given in, when not the image's own (scaled to it)."""
    width, height = _image_size(image)
    sx, sy = (width / space[0], height / space[1]) if space else (1.0, 1.0)
    mask = np.zeros((height, width), dtype=np.uint8)
    for _, bx0, by0, bx1, by1 in boxes:
        x0, x1, y0, y1 = bx0 * sx, bx1 * sx, by0 * sy, by1 * sy
        top, bottom = max(0, int(y0)), min(height, int(np.ceil(y1)))
        left, right = max(0, int(x0)), min(width, int(np.ceil(x1)))
        mask[top:bottom, left:right] = 255
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(out)
    return out


def read_folder(root: Path, labels_csv: Path | None = None) -> pd.DataFrame:
    """A folder of DICOM or PNG/JPEG files plus a labels CSV with C7 column names.

    Only ``image`` is required. Missing label columns are unknown, and so are missing
    per-finding mask columns (``mask_<finding>``, in the CSV or in a
    ``finding_masks.csv`` beside it; passed through when given); a missing
    ``patient_id``/``sex``/``age`` is read from the DICOM header (PatientID,
    PatientSex, PatientAge), else the patient id is the file name (each image its own
    patient). Paths in the CSV are relative to the CSV.

    Raises:
        ValueError: no ``image`` column, a missing file, or a label other than 0/1/empty.
    """
    labels_csv = labels_csv or root / "labels.csv"
    given = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    if "image" not in given.columns:
        raise ValueError(f"{labels_csv}: needs an 'image' column; has {list(given.columns)}")
    sidecar = labels_csv.parent / FINDING_MASKS_CSV
    if sidecar.is_file():  # per-finding masks beside the CSV (as the synthetic set has)
        own = pd.read_csv(sidecar, dtype=str, keep_default_na=False)
        extra = [c for c in FINDING_MASK_COLUMNS if c in own.columns and c not in given]
        if "image" in own.columns and extra:
            merged = given.merge(own[["image", *extra]], on="image", how="left")
            given = merged.fillna("")
    rows: list[dict[str, object]] = []
    for i, rec in enumerate(given.to_dict("records")):
        path = labels_csv.parent / rec["image"]
        if not path.is_file():
            raise ValueError(f"{labels_csv} row {i + 2}: image {rec['image']!r} not found")
        labels: dict[str, float] = {}
        for label in LABELS:
            value = str(rec.get(label, "")).strip()
            if value not in {"", "0", "1", "0.0", "1.0"}:
                raise ValueError(f"{labels_csv} row {i + 2}: {label}={value!r}; use 0, 1 or empty")
            labels[label] = float(value) if value else np.nan
        header = _dicom_header(path) if path.suffix.lower() in {".dcm", ".dicom", ""} else {}
        mask = rec.get("mask", "")
        own = {
            column: str((labels_csv.parent / rec[column]).resolve())
            for column in FINDING_MASK_COLUMNS
            if rec.get(column)
        }
        rows.append(
            _row(
                path,
                str(rec.get("patient_id") or header.get("patient_id") or path.stem),
                rec.get("site") or root.name,
                labels,
                sex=rec.get("sex") or header.get("sex"),
                age=rec.get("age") or header.get("age"),
                mask=str((labels_csv.parent / mask).resolve()) if mask else "",
                split=rec.get("split", ""),
                view=rec.get("view") or header.get("view"),
                **own,
            )
        )
    return _table(rows)


def _dicom_header(path: Path) -> dict[str, object]:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # not DICOM after all: the preprocessing will say so
        return {}
    age = str(ds.get("PatientAge") or "")
    return {
        "patient_id": str(ds.get("PatientID") or "") or None,
        "sex": {"F": "female", "M": "male", "O": "other"}.get(str(ds.get("PatientSex") or "")),
        "age": int(age[:3]) if len(age) == 4 and age[:3].isdigit() and age[3] == "Y" else None,
        "view": str(ds.get("ViewPosition") or "").strip().upper() or None,
    }


SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "test": "test"}


def assign_splits(
    table: pd.DataFrame, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> pd.DataFrame:
    """Fill the ``split`` column by patient, keeping the splits the table already gives.

    A patient with any image in a given split (an official list, or a ``split`` column
    written by ``tonle data import-cxr``) gets that split for all its images; the
    others are placed by ``sha256(seed:patient_id)``, so a patient keeps its split when
    data are added. When any patient is given the test split, only validation is
    carved out of the rest (the official test list stays the test set).

    Raises:
        ValueError: a fraction out of range, a split name other than train / val
            (validation) / test, or a patient given two different splits (named).
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(f"val {val_fraction} + test {test_fraction} must be in [0, 1)")
    table = table.copy()
    raw = table["split"] if "split" in table.columns else pd.Series("", index=table.index)
    text = raw.fillna("").astype(str).str.strip().str.lower()
    bad = sorted(set(text[(text != "") & ~text.isin(list(_SPLIT_NAMES))]))
    if bad:
        raise ValueError(f"split value(s) {bad[:5]}; use train, val (validation) or test")
    given = text.map(lambda v: _SPLIT_NAMES.get(v, "")).to_numpy()
    patients = table["patient_id"].astype(str).to_numpy()
    has = given != ""
    per_patient = pd.Series(given[has]).groupby(patients[has]).unique()
    mixed = [p for p, values in per_patient.items() if len(values) > 1]
    if mixed:
        raise ValueError(
            f"{len(mixed)} patient(s) have images in two splits (e.g. {sorted(mixed)[:3]}); "
            "a split must keep each patient's images together"
        )
    official = per_patient.map(lambda values: str(values[0]))
    test_share = 0.0 if (official == "test").any() else test_fraction

    def place(patient: str) -> str:
        if patient in official.index:
            return str(official[patient])
        digest = hashlib.sha256(f"{seed}:{patient}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        return "test" if u < test_share else "val" if u < test_share + val_fraction else "train"

    table["split"] = [place(p) for p in patients]
    return table


def write_labels(table: pd.DataFrame, out_dir: Path) -> Path:
    """Write ``labels.csv`` (C7 columns first) into ``out_dir``; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "labels.csv"
    table.loc[:, list(OUTPUT_COLUMNS)].to_csv(path, index=False)
    return path
