"""Dataset adapters on tiny fake folders built with the real layouts."""

from __future__ import annotations

import gzip
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
    NIH_LABEL_MAP,
    OUTPUT_COLUMNS,
    LabelMap,
    assign_splits,
    read_folder,
    read_montgomery,
    read_nih_cxr14,
    read_shenzhen,
    read_tbx11k,
)
from training.cxr_import import import_dataset
from training.cxr_public_formats import write_nih
from training.cxr_synthetic import generate


def _png(path: Path, size: tuple[int, int] = (32, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros(size[::-1], np.uint8)).save(path)


def _nih(root: Path, side: int = 256) -> None:
    """NIH's published layout; images resized to ``side`` (NIH ships 1024 x 1024)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [
        ("00000001_000.png", "Cardiomegaly|Effusion", 0, 1, "058Y", "M", "PA"),
        ("00000001_001.png", "No Finding", 1, 1, "058Y", "M", "PA"),
        ("00000002_000.png", "Nodule|Pneumonia", 0, 2, "414Y", "F", "AP"),
        ("00000003_000.png", "No Finding", 0, 3, "030Y", "F", "PA"),
        ("00000003_001.png", "Infiltration|Mass", 1, 3, "030Y", "F", "AP"),
        ("00000004_000.png", "Mass", 0, 4, "044Y", "M", "PA"),  # listed but not downloaded
    ]
    lines = [
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
        "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
    ]
    lines += [f"{n},{f},{u},{p},{a},{g},{v},2500,2048,0.168,0.168," for n, f, u, p, a, g, v in rows]
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name in ("00000001_000.png", "00000001_001.png"):
        _png(root / "images_001" / "images" / name, (side, side))
    for name in ("00000002_000.png", "00000003_000.png", "00000003_001.png"):
        _png(root / "images_002" / "images" / name, (side, side))
    (root / "test_list.txt").write_text("00000002_000.png\n", encoding="utf-8")
    # Boxes in the 1024 x 1024 pixels of NIH's PNGs, rows ending ",,," as published.
    (root / "BBox_List_2017.csv").write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        "00000002_000.png,Nodule,128.0,256.0,64.0,128.0,,,\n"
        "00000002_000.png,Pneumonia,512,512,100,100,,,\n",
        encoding="utf-8",
    )
    (root / "train_val_list.txt").write_text(
        "00000001_000.png\n00000001_001.png\n00000003_000.png\n00000003_001.png\n",
        encoding="utf-8",
    )


def _by_name(table: pd.DataFrame) -> pd.DataFrame:
    return table.set_index(pd.Series([Path(p).name for p in table["image"]]))


def test_nih_labels_patients_and_official_test_list(tmp_path: Path) -> None:
    _nih(tmp_path)
    table = _by_name(read_nih_cxr14(tmp_path))
    assert len(table) == 5  # the image not on disk is left out
    first = table.loc["00000001_000.png"]
    assert (first["abnormal"], first["effusion"], first["nodule"]) == (1, 1, 0)
    assert pd.isna(first["tb"])  # NIH has no TB label: unknown, not 0
    assert first["age"] == 58
    assert first["sex"] == "male"
    second = table.loc["00000002_000.png"]
    assert (second["nodule"], second["consolidation"]) == (1, 1)
    assert pd.isna(second["age"])  # 414 is a known error in the CSV
    assert list(table["view"]) == ["PA", "PA", "AP", "PA", "AP"]  # kept for subgroups
    normal = table.loc["00000001_001.png"]
    assert [normal[k] for k in LABELS] == [0, 0, 0, 0, 0]
    # Infiltration may be consolidation, a Mass a large nodule: unknown, never absent.
    hidden = table.loc["00000003_001.png"]
    assert pd.isna(hidden["consolidation"])
    assert pd.isna(hidden["nodule"])
    assert hidden["effusion"] == 0
    assert hidden["source_labels"] == "Infiltration|Mass"
    # ... unless a label map says otherwise.
    custom = LabelMap(positive=NIH_LABEL_MAP.positive | {"Infiltration": "consolidation"},
                      unknown={})  # fmt: skip
    remapped = _by_name(read_nih_cxr14(tmp_path, label_map=custom)).loc["00000003_001.png"]
    assert (remapped["consolidation"], remapped["nodule"]) == (1, 0)
    split = assign_splits(read_nih_cxr14(tmp_path), seed=0)
    by_name = dict(zip([Path(p).name for p in split["image"]], split["split"], strict=True))
    assert by_name["00000002_000.png"] == "test"
    assert by_name["00000001_000.png"] == by_name["00000001_001.png"]  # same patient
    assert "test" not in {by_name["00000001_000.png"], by_name["00000003_000.png"]}


@pytest.mark.parametrize("side", [256, 1024])
def test_nih_boxes_are_scaled_to_the_real_image_size(tmp_path: Path, side: int) -> None:
    _nih(tmp_path, side)
    masked = read_nih_cxr14(tmp_path, tmp_path / "masks")
    drawn = masked.loc[masked["mask"] != ""]
    assert len(drawn) == 1
    boxed = drawn.iloc[0]
    mask = np.asarray(Image.open(boxed["mask"])) > 0
    assert mask.shape == (side, side)
    k = side / 1024  # the boxes are given in 1024 x 1024 pixels
    nodule = np.asarray(Image.open(boxed["mask_nodule"])) > 0
    pneumonia = np.asarray(Image.open(boxed["mask_consolidation"])) > 0
    rows, cols = np.nonzero(nodule)
    assert (rows.min(), cols.min()) == (round(256 * k), round(128 * k))
    assert (rows.max() + 1, cols.max() + 1) == (round(384 * k), round(192 * k))
    assert int(nodule.sum()) == round(64 * k) * round(128 * k)
    assert pneumonia[round(550 * k), round(550 * k)]
    assert not pneumonia[round(300 * k), round(150 * k)]
    assert np.array_equal(mask, nodule | pneumonia)  # the union keeps every box
    assert boxed["mask_effusion"] == ""
    assert boxed["mask_tb"] == ""


def test_nih_accepts_a_gzipped_label_file(tmp_path: Path) -> None:
    _nih(tmp_path)
    plain = tmp_path / "Data_Entry_2017.csv"
    with gzip.open(tmp_path / "Data_Entry_2017_v2020.csv.gz", "wb") as f:
        f.write(plain.read_bytes())
    expected = read_nih_cxr14(tmp_path)
    plain.unlink()
    pd.testing.assert_frame_equal(read_nih_cxr14(tmp_path), expected)


def test_nih_without_images_fails_with_counts(tmp_path: Path) -> None:
    _nih(tmp_path)
    for png in list(tmp_path.glob("images_*/images/*.png")):
        png.rename(tmp_path / png.name)  # flattened into the wrong folder
    with pytest.raises(FileNotFoundError) as caught:
        read_nih_cxr14(tmp_path)
    message = str(caught.value)
    assert "none of the 6 images listed in Data_Entry_2017.csv is under images*/" in message
    assert "(0 PNG files there; 5 of them elsewhere, e.g." in message
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["data", "import-cxr", "nih-cxr14", str(tmp_path), str(out)])
    assert result.exit_code == 4
    assert "none of the 6 images" in result.output
    assert not (out / "labels.csv").exists()


def test_nih_test_list_is_required_and_must_be_patient_wise(tmp_path: Path) -> None:
    _nih(tmp_path)
    (tmp_path / "test_list.txt").write_text("00000001_000.png\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"not patient-wise: 1 patient\(s\) .*nih-1: 1 of 2"):
        read_nih_cxr14(tmp_path)
    (tmp_path / "test_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"no test_list.txt .* --hashed-test"):
        read_nih_cxr14(tmp_path)
    out = tmp_path / "out"
    refused = CliRunner().invoke(app, ["data", "import-cxr", "nih-cxr14", str(tmp_path), str(out)])
    assert refused.exit_code == 4
    hashed = CliRunner().invoke(
        app,
        ["data", "import-cxr", "nih-cxr14", str(tmp_path), str(out), "--hashed-test",
         "--test", "0.5"],
    )  # fmt: skip
    assert hashed.exit_code == 0, hashed.output
    written = pd.read_csv(out / "labels.csv", dtype=str, keep_default_na=False)
    assert set(written["split"]) <= {"train", "val", "test"}
    assert written.groupby("patient_id")["split"].nunique().max() == 1


def test_nih_label_map_option(tmp_path: Path) -> None:
    _nih(tmp_path)
    mapping = tmp_path / "map.yaml"
    mapping.write_text("positive: {Mass: nodule}\nunknown: {}\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["data", "import-cxr", "nih-cxr14", str(tmp_path), str(out)]
    result = CliRunner().invoke(app, [*args, "--label-map", str(mapping)])
    assert result.exit_code == 0, result.output
    written = _by_name(pd.read_csv(out / "labels.csv", dtype=str, keep_default_na=False))
    assert written.loc["00000003_001.png", "nodule"] == "1"
    assert written.loc["00000003_001.png", "consolidation"] == "0"  # as the map says
    assert written.loc["00000002_000.png", "nodule"] == "0"  # Nodule is no longer mapped
    mapping.write_text("positive: {Mass: lesion}\nunknown: {}\n", encoding="utf-8")
    bad = CliRunner().invoke(app, [*args, "--label-map", str(mapping)])
    assert bad.exit_code == 4
    assert "positive.Mass" in bad.output


def test_nih_generated_file_in_the_published_layout(tmp_path: Path) -> None:
    counts = write_nih(tmp_path / "nih", 3000, n_images=3000, image_side=64, n_boxes=20)
    path = import_dataset("nih-cxr14", tmp_path / "nih", tmp_path / "out")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert len(table) == 3000
    source = table["source_labels"].str.split("|")
    for label, n in counts.items():  # per-label counts equal the file's
        assert int(source.map(lambda f, lab=label: lab in f).sum()) == n
    assert int((table["nodule"] == "1").sum()) == counts["Nodule"]
    assert int((table["effusion"] == "1").sum()) == counts["Effusion"]
    assert int((table["abnormal"] == "0").sum()) == counts["No Finding"]
    with_pneumonia = source.map(lambda f: "Consolidation" in f or "Pneumonia" in f)
    assert int((table["consolidation"] == "1").sum()) == int(with_pneumonia.sum())
    infiltration_only = source.map(lambda f: "Infiltration" in f) & ~with_pneumonia
    assert (table.loc[infiltration_only, "consolidation"] == "").all()
    assert table.groupby("patient_id")["split"].nunique().max() == 1  # no patient in two
    listed = set((tmp_path / "nih" / "test_list.txt").read_text().split())
    names = table["image"].map(lambda p: Path(p).name)
    assert set(names[table["split"] == "test"]) == listed
    assert (table["mask"] != "").sum() >= 15  # boxed images, masks drawn
    assert set(table["view"]) == {"PA", "AP"}


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
