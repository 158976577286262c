"""Which mask each label's map is trained and scored against (own, union, fallback)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from models.cxr_net import CXR_LABELS
from training.cxr_data import CxrData, load_cxr_data
from training.cxr_evaluate import POOLED_FINDINGS, localisation_rows
from training.cxr_synthetic import generate
from training.cxr_train import mask_inputs

TB, CONSOLIDATION = CXR_LABELS.index("tb"), CXR_LABELS.index("consolidation")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> CxrData:
    # Seed 2: image 10 has consolidation alone, image 11 TB and consolidation; image 3
    # has TB too small to draw a mask at this size.
    labels = generate(tmp_path_factory.mktemp("cxr") / "d", 12, seed=2, size=(80, 72))
    return load_cxr_data(labels, 32)


def _without_own_masks(data: CxrData) -> CxrData:
    table = data.table.drop(columns=[c for c in data.table.columns if c.startswith("mask_")])
    return dataclasses.replace(data, table=table)


def test_each_finding_gets_its_own_mask(data: CxrData) -> None:
    assert data.labels[11, [TB, CONSOLIDATION]].tolist() == [1, 1]
    tb = data.label_mask(11, "tb")
    consolidation = data.label_mask(11, "consolidation")
    union = data.label_mask(11, "abnormal")
    assert tb is not None
    assert consolidation is not None
    assert union is not None
    assert (tb[1], consolidation[1], union[1]) == ("own", "own", "union")
    assert np.array_equal(tb[0] | consolidation[0], union[0])
    assert not np.array_equal(tb[0], union[0])
    assert data.label_mask(11, "nodule") is None  # absent finding: no mask
    assert data.label_mask(0, "abnormal") is None  # normal image


def test_without_own_masks_the_union_serves_only_a_sole_finding(data: CxrData) -> None:
    union_only = _without_own_masks(data)
    assert union_only.label_mask(11, "tb") is None  # two findings: the union is neither's
    sole = union_only.label_mask(10, "consolidation")
    assert sole is not None
    assert sole[1] == "sole finding"
    assert np.array_equal(sole[0], data.mask(10))
    unknown = dataclasses.replace(union_only, labels=union_only.labels.copy())
    unknown.labels[10, TB] = np.nan  # TB unknown: the union may be TB's too
    assert unknown.label_mask(10, "consolidation") is None


def test_mask_inputs_stack_one_channel_per_label(data: CxrData) -> None:
    masks, kinds = mask_inputs(data, 32)
    assert masks.shape == (12, len(CXR_LABELS), 32, 32)
    assert masks[11, TB].any()
    assert masks[11, CONSOLIDATION].any()
    assert not np.array_equal(masks[11, TB], masks[11, CONSOLIDATION])
    assert not masks[0].any()
    positives = int((data.labels > 0).sum())
    assert sum(kinds.values()) == positives
    assert kinds["sole finding"] == 0
    assert kinds["none"] == 2  # image 3: abnormal and TB, no mask drawn
    assert kinds["own"] == positives - kinds["union"] - 2
    _, fallback = mask_inputs(_without_own_masks(data), 32)
    assert fallback["own"] == 0
    assert fallback["none"] == 4  # and image 11's two findings
    assert fallback["sole finding"] == kinds["own"] - 2


def test_localisation_scores_each_finding_map_on_its_own_mask(data: CxrData) -> None:
    n = len(data.table)
    cams = np.zeros((n, len(CXR_LABELS), 80, 72), np.float32)  # at the masks' size
    pairs = 0
    for i in range(n):
        for j, label in enumerate(CXR_LABELS):
            found = data.label_mask(i, label) if data.labels[i, j] > 0 else None
            if found is not None:
                cams[i, j] = found[0]  # peaks inside the mask
                pairs += label != "abnormal"
    own_tb, own_consolidation = data.label_mask(11, "tb"), data.label_mask(11, "consolidation")
    assert own_tb is not None
    assert own_consolidation is not None
    cams[11, CONSOLIDATION] = own_tb[0] & ~own_consolidation[0]  # peaks outside its own
    rows = {r.finding: r for r in localisation_rows(data, cams, list(CXR_LABELS))}
    assert next(iter(rows)) == "abnormal"
    assert list(rows)[-1] == POOLED_FINDINGS
    assert rows["abnormal"].model.peak_in_mask == 1.0
    assert rows["tb"].model.peak_in_mask == 1.0
    consolidation = rows["consolidation"].model
    assert consolidation.n == 2
    assert consolidation.peak_in_mask == 0.5  # its map points at the TB next to it
    pooled = rows[POOLED_FINDINGS].model
    assert pooled.n == pairs
    assert pooled.peak_in_mask == pytest.approx((pairs - 1) / pairs)
    assert "own" in rows["consolidation"].cases


def test_sidecar_is_part_of_the_manifest(data: CxrData, tmp_path: Path) -> None:
    labels = generate(tmp_path / "d", 12, seed=2, size=(80, 72))
    assert load_cxr_data(labels, 32).manifest_sha256 == data.manifest_sha256
    (labels.parent / "finding_masks.csv").unlink()
    again = load_cxr_data(labels, 32)
    assert again.manifest_sha256 != data.manifest_sha256
    assert not any(c.startswith("mask_") for c in again.table.columns)


def test_training_decodes_each_image_as_serving_does(tmp_path: Path) -> None:
    # Serving decodes with target_size=model size: stored pixels are block-averaged
    # before the intensity window. Training must see the same input (no train/serve skew).
    from models.cxr_preprocess import decode_image, to_model_input

    labels = generate(tmp_path / "d", 3, seed=5, size=(200, 180))
    data = load_cxr_data(labels, 32)
    for row, name in enumerate(data.table["image"]):
        raw = (labels.parent / name).read_bytes()
        served = to_model_input(decode_image(raw, target_size=32), size=32)
        full = to_model_input(decode_image(raw), size=32)
        assert np.array_equal(
            data.images[row], np.asarray(served, dtype=np.float32).reshape(1, 32, 32)
        )
        assert not np.array_equal(served, full), "the image must be large enough to be reduced"
