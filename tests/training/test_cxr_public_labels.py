"""CheXpert, PadChest and VinDr-CXR label files in their published layouts, with
placeholder images."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli import app
from training.cxr_datasets import LABELS, OUTPUT_COLUMNS
from training.cxr_public_labels import read_chexpert, read_padchest, read_vindr

CHEXPERT_HEADER = (
    "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,"
    "Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,"
    "Pleural Effusion,Pleural Other,Fracture,Support Devices"
)


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(path)


def _chexpert(base: Path) -> Path:
    root = base / "CheXpert-v1.0-small"
    prefix = "CheXpert-v1.0-small"
    train = [
        # normal, support devices only
        f"{prefix}/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0",
        # effusion positive, consolidation UNCERTAIN (-1), lung lesion positive
        f"{prefix}/train/patient00002/study2/view1_frontal.jpg,Male,87,Frontal,PA,,,-1.0,1.0,1.0,,-1.0,,,,1.0,,,",
        # the same study's lateral view: left out
        f"{prefix}/train/patient00002/study2/view2_lateral.jpg,Male,87,Lateral,,,,-1.0,1.0,1.0,,-1.0,,,,1.0,,,",
        # only uncertain findings: abnormal unknown; pneumonia 1 -> consolidation 1
        f"{prefix}/train/patient00003/study1/view1_frontal.jpg,Female,41,Frontal,AP,,,,,0.0,,,1.0,,,0.0,,,",
        f"{prefix}/train/patient00004/study1/view1_frontal.jpg,Female,50,Frontal,AP,,,,-1.0,,,,,,,,,,",
        # listed but not downloaded
        f"{prefix}/train/patient00005/study1/view1_frontal.jpg,Male,33,Frontal,PA,1.0,,,,,,,,,,,,,",
    ]
    valid = [
        f"{prefix}/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,0.0,1.0,1.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0",
    ]  # fmt: skip
    root.mkdir(parents=True)
    (root / "train.csv").write_text("\n".join([CHEXPERT_HEADER, *train]) + "\n", encoding="utf-8")
    (root / "valid.csv").write_text("\n".join([CHEXPERT_HEADER, *valid]) + "\n", encoding="utf-8")
    for line in [*train[:5], *valid]:
        _image(base / line.split(",")[0])
    return root


def test_chexpert_uncertain_labels_are_unknown(tmp_path: Path) -> None:
    root = _chexpert(tmp_path)
    table = read_chexpert(root).set_index("patient_id")
    assert list(table.columns) == [c for c in OUTPUT_COLUMNS if c != "patient_id"]
    assert len(table) == 5  # lateral and missing left out
    normal = table.loc["chexpert-patient00001"]
    assert [normal[k] for k in LABELS] == [0, 0, 0, 0, 0]
    assert normal["view"] == "AP"
    two = table.loc["chexpert-patient00002"]
    assert (two["abnormal"], two["effusion"]) == (1, 1)
    assert pd.isna(two["consolidation"])  # -1: uncertain -> unknown, never 0 or 1
    assert pd.isna(two["nodule"])  # a lung lesion may be a mass
    assert pd.isna(two["tb"])
    assert two["sex"] == "male"
    three = table.loc["chexpert-patient00003"]
    assert (three["consolidation"], three["nodule"], three["effusion"]) == (1, 0, 0)
    four = table.loc["chexpert-patient00004"]
    assert pd.isna(four["abnormal"])  # only an uncertain finding
    valid = table.loc["chexpert-patient64541"]
    assert valid["split"] == "test"
    assert (valid["abnormal"], valid["consolidation"]) == (1, 0)
    assert set(table.loc[table.index != "chexpert-patient64541", "split"]) == {""}


def test_chexpert_wrong_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="CheXpert"):
        read_chexpert(tmp_path)
    (tmp_path / "train.csv").write_text("Path,Sex\nx.jpg,Male\n", encoding="utf-8")
    with pytest.raises(ValueError, match="missing column"):
        read_chexpert(tmp_path)


PADCHEST_COLUMNS = [
    "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth",
    "PatientSex_DICOM", "ViewPosition_DICOM", "Projection", "MethodProjection", "Labels",
    "Localizations", "LabelsLocalizationsBySentence", "labelCUIS", "LocalizationsCUIS",
]  # fmt: skip


def _padchest(root: Path) -> None:
    rows = [
        ("a.png", "0", "20150103", "s1", "p1", "1950", "M", "POSTEROANTERIOR", "PA", "['normal']"),
        ("b.png", "0", "20160105", "s2", "p2", "1939", "F", "AP", "AP_horizontal",
         "['pleural effusion', 'cardiomegaly', 'infiltrates']"),
        ("c.png", "1", "20120611", "s3", "p3", "1980", "M", "", "PA",
         "['tuberculosis', 'pulmonary mass']"),
        ("d.png", "1", "20120611", "s3", "p3", "1980", "M", "LATERAL", "L", "['normal']"),
        ("e.png", "1", "20130611", "s4", "p4", "1960", "F", "PA", "PA", ""),  # unlabelled
    ]  # fmt: skip
    frame = pd.DataFrame(
        [
            (*r[:8], r[8], "Supine" if r[8] == "AP_horizontal" else "Standing", r[9], "[]",
             "[]", "[]", "[]")
            for r in rows
        ],
        columns=PADCHEST_COLUMNS,
    )  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    csv = frame.to_csv(index=True)  # the published file starts with an unnamed index column
    with gzip.open(root / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz", "wt") as f:
        f.write(csv)
    for image, folder in (("a.png", "0"), ("b.png", "0"), ("c.png", "1"), ("e.png", "1")):
        _image(root / folder / image)


def test_padchest_report_labels(tmp_path: Path) -> None:
    _padchest(tmp_path)
    table = read_padchest(tmp_path).set_index(pd.Index(["a", "b", "c", "e"]))
    assert [table.loc["a", k] for k in LABELS] == [0, 0, 0, 0, 0]
    b = table.loc["b"]
    assert (b["abnormal"], b["effusion"], b["tb"], b["nodule"]) == (1, 1, 0, 0)
    assert pd.isna(b["consolidation"])  # infiltrates may hide consolidation
    assert b["view"] == "AP"
    assert b["age"] == 77
    c = table.loc["c"]
    assert (c["tb"], c["abnormal"]) == (1, 1)
    assert pd.isna(c["nodule"])  # a mass, not asserted "no nodule"
    assert all(pd.isna(table.loc["e", k]) for k in LABELS)  # no labels: all unknown
    assert table.loc["c", "patient_id"] == "padchest-p3"


def test_padchest_missing_images_counted(tmp_path: Path) -> None:
    _padchest(tmp_path)
    for png in tmp_path.rglob("*.png"):
        png.unlink()
    with pytest.raises(FileNotFoundError, match="none of the 4 images"):
        read_padchest(tmp_path)


VINDR_LABELS = [
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Clavicle fracture",
    "Consolidation", "Edema", "Emphysema", "Enlarged PA", "ILD", "Infiltration",
    "Lung Opacity", "Lung cavity", "Lung cyst", "Mediastinal shift", "Nodule/Mass",
    "Pleural effusion", "Pleural thickening", "Pneumothorax", "Pulmonary fibrosis",
    "Rib fracture", "Other lesion", "COPD", "Lung tumor", "Pneumonia", "Tuberculosis",
    "Other disease", "No finding",
]  # fmt: skip


def _vindr_row(image: str, rad: str | None, **on: int) -> dict[str, object]:
    row: dict[str, object] = {"image_id": image}
    if rad is not None:
        row["rad_id"] = rad
    row |= dict.fromkeys(VINDR_LABELS, 0) | on
    return row


def _vindr(root: Path) -> None:
    tb = {"Tuberculosis": 1, "Other disease": 1}
    train = [
        _vindr_row("n1", "R8", **{"No finding": 1}),
        _vindr_row("n1", "R9", **{"No finding": 1}),
        _vindr_row("n1", "R10", **{"No finding": 1}),
        _vindr_row("t1", "R8", **tb),  # two of three readers: TB
        _vindr_row("t1", "R9", **tb),
        _vindr_row("t1", "R10", **{"No finding": 1}),
        _vindr_row("m1", "R1", **{"Nodule/Mass": 1, "Infiltration": 1}),
        _vindr_row("m1", "R2", **{"Nodule/Mass": 1, "Infiltration": 1}),
        _vindr_row("m1", "R3", **{"Pleural effusion": 1}),
    ]
    test = [_vindr_row("x1", None, **{"Consolidation": 1, "Pleural effusion": 1})]
    (root / "annotations").mkdir(parents=True)
    pd.DataFrame(train).to_csv(root / "annotations" / "image_labels_train.csv", index=False)
    pd.DataFrame(test).to_csv(root / "annotations" / "image_labels_test.csv", index=False)
    for image in ("n1", "t1", "m1"):
        (root / "train").mkdir(exist_ok=True)
        (root / "train" / f"{image}.dicom").write_bytes(b"placeholder")
    (root / "test").mkdir()
    (root / "test" / "x1.dicom").write_bytes(b"placeholder")


def test_vindr_majority_of_readers(tmp_path: Path) -> None:
    _vindr(tmp_path)
    table = read_vindr(tmp_path).set_index("patient_id")
    assert [table.loc["vindr-n1", k] for k in LABELS] == [0, 0, 0, 0, 0]
    t1 = table.loc["vindr-t1"]
    assert (t1["abnormal"], t1["tb"], t1["nodule"]) == (1, 1, 0)
    m1 = table.loc["vindr-m1"]
    assert m1["effusion"] == 0  # one reader of three
    assert pd.isna(m1["nodule"])  # Nodule/Mass: may be a mass
    assert pd.isna(m1["consolidation"])  # infiltration may hide it
    x1 = table.loc["vindr-x1"]
    assert (x1["consolidation"], x1["effusion"], x1["split"]) == (1, 1, "test")


def test_import_cli_reads_the_new_layouts(tmp_path: Path) -> None:
    _vindr(tmp_path / "vindr")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["data", "import-cxr", "vindr-cxr", str(tmp_path / "vindr"), str(out)]
    )
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out / "labels.csv", dtype=str, keep_default_na=False)
    assert len(written) == 4
    assert written.groupby("patient_id")["split"].nunique().max() == 1
    empty = tmp_path / "empty"
    (empty / "annotations").mkdir(parents=True)
    pd.DataFrame([_vindr_row("z", "R1")]).to_csv(
        empty / "annotations" / "image_labels_train.csv", index=False
    )
    missing = CliRunner().invoke(app, ["data", "import-cxr", "vindr-cxr", str(empty), str(out)])
    assert missing.exit_code == 4
    assert "none of the 1 images" in missing.output
