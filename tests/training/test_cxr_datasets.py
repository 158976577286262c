"""Dataset adapters on tiny fake folders built with the real layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli import app
from training.cxr_datasets import (
    FINDING_MASK_COLUMNS,
    FINDING_MASKS_CSV,
    LABELS,
    OUTPUT_COLUMNS,
    assign_splits,
    import_dataset,
    read_folder,
    read_montgomery,
    read_nih_cxr14,
    read_shenzhen,
    read_tbx11k,
)
from training.cxr_synthetic import generate


def _png(path: Path, size: tuple[int, int] = (32, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros(size[::-1], np.uint8)).save(path)


def _nih(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rows = [
        ("00000001_000.png", "Cardiomegaly|Effusion", 0, 1, "058Y", "M"),
        ("00000001_001.png", "No Finding", 1, 1, 58, "M"),
        ("00000002_000.png", "Nodule|Pneumonia", 0, 2, 414, "F"),
        ("00000003_000.png", "No Finding", 0, 3, 30, "F"),
        ("00000004_000.png", "Mass", 0, 4, 44, "M"),  # listed but not downloaded
    ]
    lines = [
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
        "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
    ]
    lines += [f"{n},{f},{u},{p},{a},{g},PA,2500,2048,0.168,0.168," for n, f, u, p, a, g in rows]
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _png(root / "images_001" / "images" / "00000001_000.png")
    _png(root / "images_001" / "images" / "00000001_001.png")
    _png(root / "images_002" / "images" / "00000002_000.png")
    _png(root / "images_002" / "images" / "00000003_000.png")
    (root / "test_list.txt").write_text("00000002_000.png\n", encoding="utf-8")
    (root / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        "00000002_000.png,Nodule,4.5,6.0,8.0,4.0,,,\n"
        "00000002_000.png,Pneumonia,20,20,5,5\n",
        encoding="utf-8",
    )
    (root / "train_val_list.txt").write_text(
        "00000001_000.png\n00000001_001.png\n00000003_000.png\n", encoding="utf-8"
    )


def test_nih_labels_patients_and_official_test_list(tmp_path: Path) -> None:
    _nih(tmp_path)
    table = read_nih_cxr14(tmp_path).set_index(
        pd.Series([Path(p).name for p in read_nih_cxr14(tmp_path)["image"]])
    )
    assert len(table) == 4  # the image not on disk is skipped
    first = table.loc["00000001_000.png"]
    assert (first["abnormal"], first["effusion"], first["nodule"]) == (1, 1, 0)
    assert pd.isna(first["tb"])  # NIH has no TB label: unknown, not 0
    assert first["age"] == 58
    assert first["sex"] == "male"
    second = table.loc["00000002_000.png"]
    assert (second["nodule"], second["consolidation"]) == (1, 1)
    assert pd.isna(second["age"])  # 414 is a known error in the CSV
    normal = table.loc["00000001_001.png"]
    assert [normal[k] for k in LABELS] == [0, 0, 0, 0, 0]
    masked = read_nih_cxr14(tmp_path, tmp_path / "masks")
    drawn = masked.loc[masked["mask"] != "", "mask"]
    assert len(drawn) == 1
    mask = np.asarray(Image.open(drawn.iloc[0]))
    assert int((mask > 0).sum()) == 9 * 4 + 5 * 5  # x 4.5-12.5 -> columns 4..12
    assert mask[7, 5] == 255
    assert mask[22, 22] == 255
    assert mask[0, 0] == 0
    # Each mapped box is also its finding's own mask; the union keeps every box.
    boxed = masked.loc[masked["mask"] != ""].iloc[0]
    nodule = np.asarray(Image.open(boxed["mask_nodule"])) > 0
    pneumonia = np.asarray(Image.open(boxed["mask_consolidation"])) > 0
    assert int(nodule.sum()) == 9 * 4
    assert nodule[7, 5]
    assert not nodule[22, 22]
    assert int(pneumonia.sum()) == 5 * 5
    assert pneumonia[22, 22]
    assert not pneumonia[7, 5]
    assert boxed["mask_effusion"] == ""
    assert boxed["mask_tb"] == ""
    split = assign_splits(read_nih_cxr14(tmp_path), seed=0)
    by_name = dict(zip([Path(p).name for p in split["image"]], split["split"], strict=True))
    assert by_name["00000002_000.png"] == "test"
    assert by_name["00000001_000.png"] == by_name["00000001_001.png"]  # same patient
    assert "test" not in {by_name["00000001_000.png"], by_name["00000003_000.png"]}


def _tb_set(root: Path, prefix: str, readings: dict[str, str]) -> None:
    for stem, text in readings.items():
        _png(root / "CXR_png" / f"{stem}.png")
        (root / "ClinicalReadings").mkdir(parents=True, exist_ok=True)
        (root / "ClinicalReadings" / f"{stem}.txt").write_text(text, encoding="utf-8")
    _png(root / "ManualMask" / "leftMask" / f"{prefix}_0001_0.png")  # lung masks: ignored


def test_shenzhen_file_names_and_clinical_readings(tmp_path: Path) -> None:
    _tb_set(
        tmp_path,
        "CHNCXR",
        {
            "CHNCXR_0001_0": "male 45yrs\nnormal\n",
            "CHNCXR_0002_1": "Female  32yrs\nSTB,ATB in right upper field\n",
            "CHNCXR_0003_1": "male 8 month\nPTB\n",
        },
    )
    table = read_shenzhen(tmp_path).sort_values("image").reset_index(drop=True)
    assert len(table) == 3
    assert list(table["tb"]) == [0, 1, 1]
    assert list(table["sex"]) == ["male", "female", "male"]
    assert table["age"].tolist() == pytest.approx([45, 32, 0.67])
    assert [table.loc[0, k] for k in LABELS] == [0, 0, 0, 0, 0]
    assert pd.isna(table.loc[1, "nodule"])
    assert "ATB" in table.loc[1, "source_labels"]
    assert table["patient_id"].is_unique


def test_montgomery_readings(tmp_path: Path) -> None:
    _tb_set(
        tmp_path,
        "MCUCXR",
        {
            "MCUCXR_0001_0": "Patient's Sex: F\nPatient's Age: 040Y\nnormal\n",
            "MCUCXR_0104_1": "Patient's Sex: M\nPatient's Age: 052Y\nright upper lobe cavity\n",
        },
    )
    table = read_montgomery(tmp_path).sort_values("image").reset_index(drop=True)
    assert list(table["abnormal"]) == [0, 1]
    assert list(table["sex"]) == ["female", "male"]
    assert list(table["age"]) == [40, 52]
    assert list(table["site"]) == ["montgomery", "montgomery"]


def test_tb_sets_refuse_a_wrong_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="shenzhen"):
        read_shenzhen(tmp_path)


def _tbx11k(root: Path) -> None:
    for name in ("health/h0001.png", "sick/s0001.png", "tb/tb0001.png", "tb/tb0002.png"):
        _png(root / "imgs" / name, (64, 48))
    _png(root / "imgs" / "test" / "t0001.png")
    (root / "lists").mkdir()
    (root / "lists" / "TBX11K_train.txt").write_text(
        "health/h0001.png\nsick/s0001.png\ntb/tb0001.png\n", encoding="utf-8"
    )
    (root / "lists" / "TBX11K_val.txt").write_text("tb/tb0002.png\n", encoding="utf-8")
    xml = (root / "annotations" / "xml").resolve()
    xml.mkdir(parents=True)
    (xml / "tb0001.xml").write_text(
        "<annotation><size><width>64</width><height>48</height></size>"
        "<object><name>ActiveTuberculosis</name><bndbox><xmin>4</xmin><ymin>6</ymin>"
        "<xmax>20</xmax><ymax>16</ymax></bndbox></object>"
        "<object><name>ObsoletePulmonaryTuberculosis</name><bndbox><xmin>40</xmin>"
        "<ymin>30</ymin><xmax>50</xmax><ymax>40</ymax></bndbox></object></annotation>",
        encoding="utf-8",
    )


def test_tbx11k_categories_boxes_as_masks_and_validation_as_test(tmp_path: Path) -> None:
    src, out = tmp_path / "TBX11K", tmp_path / "out"
    _tbx11k(src)
    table = read_tbx11k(src, out / "masks").set_index("patient_id")
    assert sorted(table.index) == [
        "tbx11k-h0001", "tbx11k-s0001", "tbx11k-tb0001", "tbx11k-tb0002",
    ]  # fmt: skip
    assert table.loc["tbx11k-s0001", "tb"] == 0
    assert table.loc["tbx11k-s0001", "abnormal"] == 1
    assert table.loc["tbx11k-tb0001", "tb"] == 1
    assert table.loc["tbx11k-tb0002", "split"] == "test"
    mask = np.asarray(Image.open(table.loc["tbx11k-tb0001", "mask"]))
    assert mask.shape == (48, 64)
    assert mask[10, 10] == 255
    assert mask[35, 45] == 255
    assert mask[30, 10] == 0
    assert int((mask > 0).sum()) == 16 * 10 + 10 * 10
    assert table.loc["tbx11k-tb0002", "mask"] == ""  # no annotation file
    # Every TBX11K box is a TB box: the union is TB's own mask.
    assert table.loc["tbx11k-tb0001", "mask_tb"] == table.loc["tbx11k-tb0001", "mask"]
    assert (table[["mask_nodule", "mask_consolidation", "mask_effusion"]] == "").all().all()


def test_generic_folder_reads_dicom_headers_and_validates(tmp_path: Path) -> None:
    generate(tmp_path / "syn", 8, seed=2, size=64)  # images 5-7 have findings
    src = tmp_path / "syn"
    full = pd.read_csv(src / "labels.csv", dtype=str, keep_default_na=False)
    full[["image", "abnormal", "tb"]].to_csv(src / "minimal.csv", index=False)
    table = read_folder(src, src / "minimal.csv")
    assert list(table["patient_id"]) == list(full["patient_id"])  # from PatientID
    assert list(table["sex"]) == list(full["sex"])
    assert table["nodule"].isna().all()  # not given: unknown
    assert list(table["abnormal"].astype(int)) == list(full["abnormal"].astype(int))
    # The synthetic set's per-finding masks (finding_masks.csv beside the CSV) come along.
    own = pd.read_csv(src / FINDING_MASKS_CSV, dtype=str, keep_default_na=False)
    for column in FINDING_MASK_COLUMNS:
        expected = [str((src / m).resolve()) if m else "" for m in own[column]]
        assert list(table[column]) == expected
    assert (table[list(FINDING_MASK_COLUMNS)] != "").sum().sum() >= 3
    bad = full.copy()
    bad.loc[0, "tb"] = "yes"
    bad.to_csv(src / "bad.csv", index=False)
    with pytest.raises(ValueError, match="tb='yes'"):
        read_folder(src, src / "bad.csv")
    bad = full.copy()
    bad.loc[0, "image"] = "images/missing.dcm"
    bad.to_csv(src / "bad.csv", index=False)
    with pytest.raises(ValueError, match="not found"):
        read_folder(src, src / "bad.csv")


def test_splits_are_patient_level_stable_and_near_the_fractions() -> None:
    patients = [f"p{i // 3}" for i in range(3000)]  # 1000 patients, 3 images each
    table = pd.DataFrame({"patient_id": patients, "split": [""] * 3000})
    split = assign_splits(table, val_fraction=0.2, test_fraction=0.1, seed=4)
    assert split.groupby("patient_id")["split"].nunique().max() == 1
    shares = split.drop_duplicates("patient_id")["split"].value_counts(normalize=True)
    assert shares["val"] == pytest.approx(0.2, abs=0.04)
    assert shares["test"] == pytest.approx(0.1, abs=0.03)
    # Adding patients never moves existing ones.
    more = pd.concat([table, pd.DataFrame({"patient_id": ["new"], "split": [""]})])
    again = assign_splits(more, val_fraction=0.2, test_fraction=0.1, seed=4)
    assert list(again["split"][:3000]) == list(split["split"])
    with pytest.raises(ValueError):
        assign_splits(table, val_fraction=0.6, test_fraction=0.5)


def test_import_cli_writes_a_c7_labels_csv(tmp_path: Path) -> None:
    _nih(tmp_path / "nih")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["data", "import-cxr", "nih-cxr14", str(tmp_path / "nih"), str(out)]
    )
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out / "labels.csv", dtype=str, keep_default_na=False)
    assert tuple(written.columns) == OUTPUT_COLUMNS
    assert set(written["tb"]) == {"", "0"}
    assert all(Path(p).is_file() for p in written["image"])
    bad = CliRunner().invoke(app, ["data", "import-cxr", "nope", str(tmp_path), str(out)])
    assert bad.exit_code == 2
    missing = CliRunner().invoke(app, ["data", "import-cxr", "tbx11k", str(tmp_path), str(out)])
    assert missing.exit_code == 4


def test_import_dataset_rejects_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown data set kind"):
        import_dataset("mimic", tmp_path, tmp_path / "o")
