"""CXR metrics: thresholds, AUROC CI, calibration, localisation and baselines, patient split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.cxr_data import PatientSplit, patient_split
from training.cxr_metrics import (
    auroc_ci,
    calibration_bins,
    centre_map,
    choose_threshold,
    expected_calibration_error,
    fit_platt,
    localisation,
    prior_map,
    proportion_ci,
    sens_spec,
    sensitivity_lower_bound,
)


def test_choose_threshold_reaches_sensitivity_with_best_specificity() -> None:
    y = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.85, 0.8, 0.7, 0.65, 0.6, 0.5, 0.45, 0.4, 0.1, 0.42, 0.3, 0.2, 0.05])
    choice = choose_threshold(y, p, 0.9)
    assert 0.3 < choice.threshold < 0.4  # 9 of 10 positives (>= 0.4) kept, midway to 0.3
    assert choice.sensitivity == pytest.approx(0.9)
    assert choice.specificity == pytest.approx(0.75)  # 0.42 is flagged
    assert sens_spec(y, p, choice.threshold) == (choice.sensitivity, choice.specificity)
    assert 0.05 < choose_threshold(y, p, 1.0).threshold < 0.1
    assert choose_threshold(y, p, 1.0).sensitivity == 1.0


def test_conservative_threshold_keeps_a_sampling_margin() -> None:
    rng = np.random.default_rng(2)
    y = np.r_[np.ones(60, int), np.zeros(60, int)]
    p = np.r_[rng.uniform(0.3, 1.0, 60), rng.uniform(0.0, 0.6, 60)]
    plain = choose_threshold(y, p, 0.9)
    bound = choose_threshold(y, p, 0.9, confidence=0.9)
    assert plain.sensitivity == pytest.approx(54 / 60)
    # 58/60 is the least count whose one-sided 90 % exact lower bound reaches 0.90.
    assert sensitivity_lower_bound(57, 60, 0.9) < 0.9 <= sensitivity_lower_bound(58, 60, 0.9)
    assert bound.sensitivity == pytest.approx(58 / 60)
    assert bound.threshold < plain.threshold
    assert "lower bound" in bound.rule
    # Too few positives for the bound to reach the target: every positive is flagged.
    few = choose_threshold(y[50:70], p[50:70], 0.9, confidence=0.9)
    assert few.sensitivity == 1.0


def test_proportion_ci_is_exact() -> None:
    low, high = proportion_ci(45, 50)
    assert low == pytest.approx(0.7819, abs=1e-3)  # Clopper-Pearson (scipy's binomtest agrees)
    assert high == pytest.approx(0.9667, abs=1e-3)
    assert proportion_ci(0, 10)[0] == 0.0
    assert proportion_ci(10, 10)[1] == 1.0
    assert np.isnan(proportion_ci(0, 0)[0])


def test_auroc_ci_brackets_value_and_handles_one_class() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = y * 0.8 + rng.normal(0, 0.5, 300)
    result = auroc_ci(y, p, reps=200)
    assert result.value is not None
    assert result.ci_low is not None
    assert result.ci_high is not None
    assert result.ci_low < result.value < result.ci_high
    assert 0.8 < result.value < 0.95
    assert auroc_ci(np.zeros(5), np.arange(5.0)).value is None


def test_platt_recovers_a_known_scale() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-(0.5 * logits - 1.0)))).astype(int)
    params = fit_platt(logits, y)
    assert params["scale"] == pytest.approx(0.5, abs=0.05)
    assert params["offset"] == pytest.approx(-1.0, abs=0.08)
    p = 1 / (1 + np.exp(-(params["scale"] * logits + params["offset"])))
    assert expected_calibration_error(y, p) < 0.02
    assert expected_calibration_error(y, 1 / (1 + np.exp(-logits))) > 0.05
    assert fit_platt(logits[:5], np.zeros(5)) == {"scale": 1.0, "offset": 0.0}


def test_platt_does_not_saturate_on_separable_data() -> None:
    # Validation scores of a strong model: every positive above every negative. A plain
    # maximum-likelihood fit sends the scale towards infinity (probabilities 0 or 1).
    logits = np.r_[np.linspace(2, 12, 50), np.linspace(-12, -2, 50)]
    y = np.r_[np.ones(50), np.zeros(50)]
    params = fit_platt(logits, y)
    assert 0.3 < params["scale"] < 1.0
    p = 1 / (1 + np.exp(-(params["scale"] * logits + params["offset"])))
    assert 0.9 < p[:50].mean() < 0.99  # Platt's target for 50 positives: 51/52
    assert p[:50].min() < 0.9  # the weakest positives keep room below 1


def test_localisation_peak_and_iou() -> None:
    mask = np.zeros((64, 64), bool)
    mask[12:36, 32:52] = True
    on_target = np.zeros((4, 4), np.float32)
    on_target[1, 2] = 3.0  # cell covering rows 16-32, cols 32-48 upsampled
    off_target = np.zeros((4, 4), np.float32)
    off_target[3, 0] = 3.0
    result = localisation(np.stack([on_target, off_target]), [mask, mask])
    assert result.n == 2
    assert result.peak_in_mask == pytest.approx(0.5)
    assert result.mean_iou is not None
    assert 0.0 < result.mean_iou < 0.5
    empty = localisation(np.stack([on_target]), [np.zeros((8, 8), bool)])
    assert empty.n == 0
    assert empty.peak_in_mask is None


def test_localisation_baselines() -> None:
    central = np.zeros((64, 64), bool)
    central[24:40, 24:40] = True
    lateral = np.zeros((64, 64), bool)
    lateral[40:60, 2:20] = True
    masks = [central, lateral, lateral]
    centre = localisation(np.repeat(centre_map()[None], 3, axis=0), masks)
    assert centre.peak_in_mask == pytest.approx(1 / 3)
    prior = prior_map(masks)
    assert prior.shape == (32, 32)
    assert prior.max() == pytest.approx(2 / 3)  # the lateral region, in 2 of 3 masks
    fixed = localisation(np.repeat(prior[None], 3, axis=0), masks)
    assert fixed.peak_in_mask == pytest.approx(2 / 3)


def test_patient_split_never_shares_a_patient() -> None:
    table = pd.DataFrame({"patient_id": [f"p{i // 2}" for i in range(1000)]})  # 2 per patient
    split = patient_split(table, (0.6, 0.2, 0.2), seed=3)
    parts = (split.train, split.validation, split.test)
    assert sum(len(idx) for idx in parts) == 1000
    sets = [set(table["patient_id"].iloc[idx]) for idx in parts]
    assert not (sets[0] & sets[1])
    assert not (sets[0] & sets[2])
    assert not (sets[1] & sets[2])
    assert 70 <= len(sets[1]) <= 130  # 20 % of 500 patients, by hash
    assert "patient hash" in split.source
    again = patient_split(table, (0.6, 0.2, 0.2), seed=3)
    assert all((a == b).all() for a, b in zip((again.train, again.validation), parts, strict=False))
    with pytest.raises(ValueError, match="sum to 1"):
        patient_split(table, (0.6, 0.2, 0.1), seed=3)


def test_patient_split_is_stable_when_data_are_added() -> None:
    first = pd.DataFrame({"patient_id": [f"p{i}" for i in range(300)]})
    more = pd.DataFrame({"patient_id": [f"new{i}" for i in range(200)]})
    before = patient_split(first, (0.6, 0.2, 0.2), seed=0)
    after = patient_split(pd.concat([more, first], ignore_index=True), (0.6, 0.2, 0.2), seed=0)

    def where(split: PatientSplit, ids: pd.Series) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, idx in (("t", split.train), ("v", split.validation), ("x", split.test)):
            out |= dict.fromkeys(ids.iloc[idx], name)
        return out

    old = where(before, first["patient_id"])
    new = where(after, pd.concat([more, first], ignore_index=True)["patient_id"])
    assert all(new[p] == s for p, s in old.items())  # nobody moved


def test_patient_split_uses_the_split_column_as_given() -> None:
    # As import-cxr writes it: an official test list, the rest train/val.
    table = pd.DataFrame(
        {
            "patient_id": ["a", "a", "b", "c", "d", "e"],
            "split": ["test", "test", "train", "val", "train", "validation"],
        }
    )
    split = patient_split(table, (0.1, 0.1, 0.8), seed=0)  # fractions unused
    assert split.test.tolist() == [0, 1]
    assert split.train.tolist() == [2, 4]
    assert split.validation.tolist() == [3, 5]
    assert split.source == "the labels file's split column"
    mixed = table.assign(split=["test", "train", "train", "val", "train", "val"])
    with pytest.raises(ValueError, match=r"1 patient\(s\) have images in two splits"):
        patient_split(mixed, (0.6, 0.2, 0.2), seed=0)
    with pytest.raises(ValueError, match="'holdout'"):
        patient_split(table.assign(split="holdout"), (0.6, 0.2, 0.2), seed=0)
    # Rows left empty are placed by hash; with a given test split none go to test.
    partial = pd.DataFrame(
        {
            "patient_id": [f"p{i}" for i in range(200)],
            "split": ["test"] * 20 + [""] * 180,
        }
    )
    split = patient_split(partial, (0.6, 0.2, 0.2), seed=0)
    assert split.test.tolist() == list(range(20))
    assert len(split.validation) > 10
    assert "20 rows" in split.source


def test_unknown_labels_are_left_out_of_every_metric() -> None:
    y = np.array([1, 0, np.nan, 1, 0, np.nan, 1, 0])
    p = np.array([0.9, 0.1, 0.99, 0.8, 0.2, 0.01, 0.7, 0.3])
    keep = ~np.isnan(y)
    assert sens_spec(y, p, 0.5) == sens_spec(y[keep], p[keep], 0.5) == (1.0, 1.0)
    assert auroc_ci(y, p, reps=0).value == 1.0
    assert auroc_ci(y, p, reps=0).n == 6
    assert calibration_bins(y, p) == calibration_bins(y[keep], p[keep])
    logits = np.log(p / (1 - p))
    assert fit_platt(logits, y) == fit_platt(logits[keep], y[keep])  # used to raise on NaN
    assert fit_platt(logits, np.full(8, np.nan)) == {"scale": 1.0, "offset": 0.0}
    choice = choose_threshold(y, p, 1.0)
    assert choice == choose_threshold(y[keep], p[keep], 1.0)
    assert 0.3 < choice.threshold < 0.7  # the unknown 0.01 is not a "lower score"


def test_no_known_positive_gives_no_threshold() -> None:
    with pytest.raises(ValueError, match="no known positive"):
        choose_threshold(np.array([0, 0, np.nan]), np.array([0.1, 0.2, 0.9]), 0.9)
