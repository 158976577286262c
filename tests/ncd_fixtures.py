"""A tiny but real NCD risk artifact (contract C3), for predictor and serving tests.

``make_ncd_artifact`` fits a small scikit-learn model on synthetic rows whose risk
follows a known logistic formula, exports it with skl2onnx through the same code as
``tonle train`` (parity checked on 10,000 rows), and saves it in the current model
store. Use it together with the ``model_store`` fixture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from models.details import MetricCI, NcdDetails, WhoComparison
from models.metadata import FeatureSpec, ModelMetadata
from models.registry import StoredModel

__all__ = [
    "FIXTURE_FEATURES",
    "fixture_rows",
    "make_ncd_artifact",
    "synthetic",
    "who_comparison",
    "with_details",
]


def who_comparison(good: bool = True, **changes: Any) -> WhoComparison:
    """A recorded comparison with the WHO chart: at least as good, or not (``good``)."""
    metric = MetricCI(value=0.7)
    fields: dict[str, Any] = {
        "rule": "test rule",
        "chart": "WHO 2019 lab chart, region SEAR",
        "n": 1000,
        "events": 100,
        "auroc_model": metric,
        "auroc_who": metric,
        "auroc_difference": MetricCI(value=0.0),
        "calibration_slope_model": MetricCI(value=1.0),
        "calibration_slope_who": MetricCI(value=1.0),
        "observed_expected_model": MetricCI(value=1.0),
        "observed_expected_who": MetricCI(value=1.0),
        "auroc_margin": 0.02,
        "slope_limits": (0.8, 1.2),
        "oe_limits": (0.8, 1.2),
        "discrimination_ok": good,
        "calibration_ok": good,
        "at_least_as_good": good,
    }
    return WhoComparison.model_validate({**fields, **changes})


def synthetic(meta: ModelMetadata, value: bool = True) -> ModelMetadata:
    """``meta`` (NCD or X-ray) as if training had recorded synthetic data, or not."""
    assert meta.extra is not None, f"{meta.tag} has no details to flag"
    flagged = meta.extra.model_copy(update={"synthetic_training_data": value})
    return meta.model_copy(update={"extra": flagged})


def with_details(meta: ModelMetadata, **changes: Any) -> ModelMetadata:
    """``meta`` with some of its NCD details replaced, validated as loading would."""
    details = NcdDetails.model_validate({**meta.ncd.model_dump(exclude_unset=True), **changes})
    return meta.model_copy(update={"extra": details})


FIXTURE_FEATURES = [
    FeatureSpec(
        name="sex", description="sex (0 = female, 1 = male)", unit="1", minimum=0, maximum=1
    ),
    FeatureSpec(name="age", description="age", unit="a", minimum=40, maximum=74),
    FeatureSpec(
        name="smoking",
        description="current smoking",
        unit="1",
        minimum=0,
        maximum=1,
        loinc="72166-2",
    ),
    FeatureSpec(
        name="sbp",
        description="systolic BP",
        unit="mm[Hg]",
        minimum=60,
        maximum=260,
        loinc="8480-6",
    ),
    FeatureSpec(
        name="total_chol",
        description="total cholesterol",
        unit="mmol/L",
        minimum=1.5,
        maximum=15,
        loinc="2093-3",
        required=False,
    ),
    FeatureSpec(
        name="diabetes", description="diabetes", unit="1", minimum=0, maximum=1, required=False
    ),
    FeatureSpec(
        name="bmi",
        description="BMI",
        unit="kg/m2",
        minimum=12,
        maximum=70,
        loinc="39156-5",
        required=False,
    ),
]
_REFERENCE = {
    "sex": 0.0, "age": 55.0, "smoking": 0.0, "sbp": 120.0, "total_chol": 4.5,
    "diabetes": 0.0, "bmi": 23.0,
}  # fmt: skip
_COEF = np.array([0.4, 0.07, 0.6, 0.025, 0.25, 0.7, 0.03])


def fixture_rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic feature rows (float32, ~5 % missing cholesterol/BMI) and outcomes.

    The log-odds rise with every feature, most per unit with SBP, age and smoking.
    """
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.integers(0, 2, n),
            rng.uniform(40, 74, n),
            rng.random(n) < 0.25,
            np.clip(rng.normal(135, 20, n), 80, 240),
            np.clip(rng.normal(5.0, 1.0, n), 2, 10),
            rng.random(n) < 0.12,
            np.clip(rng.normal(24, 4, n), 15, 45),
        ]
    ).astype(np.float32)
    ref = np.array([_REFERENCE[f.name] for f in FIXTURE_FEATURES])
    logit = -2.7 + (np.nan_to_num(x - ref) @ _COEF)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    for column in (4, 6):
        x[rng.random(n) < 0.05, column] = np.nan
    return x, y


def make_ncd_artifact(
    tmp_path: Path,
    outcome: Literal["cvd", "diabetes"] = "cvd",
    *,
    version: str = "1.0.0",
    name: str | None = None,
) -> StoredModel:
    """Fit, export (parity-checked) and store a small calibrated gradient-boosting model.

    Args:
        tmp_path: scratch folder (the model card is written there first).
        outcome: ``extra.outcome`` of the artifact.
        version: semantic version to store.
        name: model name; defaults to ``cvd-risk`` / ``diabetes-risk``.

    Returns:
        The verified artifact from the current model store.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    from training.ncd_export import save_verified

    x, y = fixture_rows(3000, seed=1)
    # One OpenMP thread: on a shared machine spin-waiting threads made this fit 20-50x slower.
    with threadpool_limits(1):
        model = CalibratedClassifierCV(
            HistGradientBoostingClassifier(max_iter=40, max_depth=3, random_state=0),
            method="sigmoid",
            cv=3,
            ensemble=False,
        ).fit(x, y)
    x_parity, _ = fixture_rows(10_000, seed=2)
    card = tmp_path / f"card-{outcome}-{version}"
    card.mkdir(parents=True, exist_ok=True)
    (card / "model-card.md").write_text(
        f"# Test fixture {outcome} model\n\nSynthetic data only; not for clinical use.\n",
        encoding="utf-8",
    )
    metadata = ModelMetadata(
        name=name or f"{outcome}-risk",
        version=version,
        task="ncd-risk",
        description=f"Test fixture: 10-year {outcome} risk (synthetic, not for clinical use)",
        features=FIXTURE_FEATURES,
        intended_use="Automated tests only.",
        extra=NcdDetails(
            outcome=outcome,
            horizon_years=10,
            reference=_REFERENCE,
            labels={"sbp": "systolic BP", "age": "age", "bmi": "BMI"},
            encodings={"sex": {"female": 0, "male": 1}},
        ),
    )
    stored, _ = save_verified(model, x_parity, metadata, card)
    return stored
