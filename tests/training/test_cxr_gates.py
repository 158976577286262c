"""Operating points on labels with unknowns, pre-flight checks and held-out gates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from models.cxr_net import CXR_LABELS
from training.cxr_data import CxrData
from training.cxr_evaluate import evaluate_predictions
from training.cxr_gates import GatesConfig, PreflightError, held_out_failures, preflight
from training.cxr_metrics import sens_spec
from training.cxr_package import choose_operating_points
from training.cxr_synthetic import generate
from training.cxr_train import CxrTrainConfig

ABNORMAL, TB = CXR_LABELS.index("abnormal"), CXR_LABELS.index("tb")


def _validation(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits that rank positives higher; TB unknown everywhere (as in NIH)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(CXR_LABELS))) < 0.3).astype(np.float32)
    logits = (labels * 2.0 + rng.normal(0, 1.0, labels.shape)).astype(np.float32)
    labels[:, TB] = np.nan
    labels[: n // 4, CXR_LABELS.index("nodule")] = np.nan  # a quarter unknown
    return logits, labels


def _cfg(**gates: object) -> CxrTrainConfig:
    return CxrTrainConfig.model_validate(
        {"data": {"labels_csv": "unused.csv"}, "gates": {"min_known_positives": 10, **gates}}
    )


def test_stored_operating_point_reproduces_its_validation_sensitivity() -> None:
    logits, labels = _validation()
    cfg = _cfg()
    calibration, points, missing = choose_operating_points(logits, labels, cfg)
    assert [p.label for p in points] == [label for label in CXR_LABELS if label != "tb"]
    for point in points:
        j = CXR_LABELS.index(point.label)
        params = calibration[point.label]
        probs = expit(params["scale"] * logits[:, j] + params["offset"])
        sens, spec = sens_spec(labels[:, j], probs, point.threshold)
        assert sens == pytest.approx(point.sensitivity)  # what it claims, on known cases
        assert spec == pytest.approx(point.specificity)
        assert sens >= cfg.sensitivity_targets[point.label]
        known = int((~np.isnan(labels[:, j])).sum())
        assert f"n={known} with a known" in point.chosen_on
    # A label with no known positive: no operating point, and the reason says why.
    assert set(missing) == {"tb"}
    assert "0 known positive(s) among 0 validation images" in missing["tb"]
    assert "min_known_positives = 10" in missing["tb"]


def test_too_few_known_positives_and_no_operating_point_at_all() -> None:
    logits, labels = _validation(n=40)
    _, points, missing = choose_operating_points(logits, labels, _cfg(min_known_positives=1000))
    assert points == []
    assert set(missing) == set(CXR_LABELS)
    data = CxrData(
        root=Path("."),
        table=pd.DataFrame({"sex": ["female"] * 40, "age": [50] * 40, "site": ["a"] * 40}),
        images=np.zeros((40, 1, 4, 4), np.float32),
        labels=labels,
        manifest_sha256="x",
    )
    report = evaluate_predictions(
        data,
        logits.astype(np.float64),
        expit(logits.astype(np.float64)),
        np.zeros((40, len(CXR_LABELS), 2, 2), np.float32),
        {},
        list(CXR_LABELS),
        model="m:1",
        sha256="0",
        reps=0,
        no_operating_point=missing,
    )
    abnormal = report.label("abnormal")
    assert abnormal.threshold is None
    assert abnormal.sensitivity is None
    assert abnormal.auroc.value is not None  # still reported
    assert report.label("tb").n_known == 0
    failures = held_out_failures(report, GatesConfig())
    assert len(failures) == 1
    assert failures[0].startswith("abnormal: no operating point (")
    assert "min_known_positives = 1000" in failures[0]


def test_held_out_gate_refuses_specificity_zero() -> None:
    logits, labels = _validation(n=200)
    labels[:, TB] = 0.0
    data = CxrData(
        root=Path("."),
        table=pd.DataFrame({"sex": ["male"] * 200, "age": [40] * 200, "site": ["a"] * 200}),
        images=np.zeros((200, 1, 4, 4), np.float32),
        labels=labels,
        manifest_sha256="x",
    )
    probs = expit(logits.astype(np.float64))
    good = dict.fromkeys(CXR_LABELS, 0.5)
    kwargs = {"model": "m:1", "sha256": "0", "reps": 0}
    cams = np.zeros((200, len(CXR_LABELS), 2, 2), np.float32)
    report = evaluate_predictions(
        data, logits.astype(np.float64), probs, cams, good, list(CXR_LABELS), **kwargs
    )
    assert held_out_failures(report, GatesConfig()) == []
    flags_everyone = good | {"nodule": 0.0}
    report = evaluate_predictions(
        data, logits.astype(np.float64), probs, cams, flags_everyone, list(CXR_LABELS), **kwargs
    )
    assert report.label("nodule").specificity == 0.0
    assert held_out_failures(report, GatesConfig()) == [
        "nodule: test specificity 0.000 at its operating point < gates.min_specificity 0.05"
    ]
    strict = GatesConfig(min_auroc=0.99)
    assert any(f.startswith("abnormal: test AUROC") for f in held_out_failures(report, strict))


@pytest.fixture(scope="module")
def labels_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("cxr") / "d", 30, seed=4, size=64)


def _preflight(labels: Path, gates: GatesConfig, version: str = "9.9.9") -> object:
    return preflight(
        labels,
        gates,
        name="cxr-preflight-test",
        version=version,
        fractions=(0.5, 0.25, 0.25),
        seed=0,
        sensitivity_labels=["abnormal"],
    )


def test_preflight_refuses_before_training(
    labels_csv: Path, tmp_path: Path, model_store: Path
) -> None:
    assert _preflight(labels_csv, GatesConfig(min_known_positives=1)) is not None
    with pytest.raises(PreflightError, match="required label 'abnormal' has too few known"):
        _preflight(labels_csv, GatesConfig(min_known_positives=1000))
    with pytest.raises(PreflightError, match=r"unknown label\(s\) \['pneumothorax'\]"):
        _preflight(labels_csv, GatesConfig(required_labels=["pneumothorax"]))
    table = pd.read_csv(labels_csv, dtype=str)
    table.loc[3, "image"] = "gone.dcm"
    broken = labels_csv.parent / "broken.csv"
    table.to_csv(broken, index=False)
    with pytest.raises(PreflightError, match=r"1 of 30 images .* not on disk \(first: gone.dcm"):
        _preflight(broken, GatesConfig(min_known_positives=1))
    with pytest.raises(PreflightError, match="cannot read"):
        _preflight(tmp_path / "absent.csv", GatesConfig())
    unknown_abnormal = table.assign(abnormal="", image=pd.read_csv(labels_csv)["image"])
    unknown_abnormal.to_csv(broken, index=False)
    with pytest.raises(PreflightError, match="'abnormal' has too few known positives"):
        _preflight(broken, GatesConfig(min_known_positives=1))


def test_view_position_is_a_subgroup() -> None:
    logits, labels = _validation(n=40)
    view = ["AP"] * 15 + ["PA"] * 20 + [np.nan] * 5  # NaN: not recorded
    data = CxrData(
        root=Path("."),
        table=pd.DataFrame(
            {"sex": ["male"] * 40, "age": [40] * 40, "site": ["a"] * 40, "view": view}
        ),
        images=np.zeros((40, 1, 4, 4), np.float32),
        labels=labels,
        manifest_sha256="x",
    )
    report = evaluate_predictions(
        data,
        logits.astype(np.float64),
        expit(logits.astype(np.float64)),
        np.zeros((40, len(CXR_LABELS), 2, 2), np.float32),
        dict.fromkeys(CXR_LABELS, 0.5),
        list(CXR_LABELS),
        model="m:1",
        sha256="0",
        reps=0,
    )
    groups = {s.group: s for s in report.subgroups}
    assert groups["view=AP"].n == 15
    assert groups["view=PA"].n == 20
    assert "view=" not in groups
    assert "view=nan" not in groups
