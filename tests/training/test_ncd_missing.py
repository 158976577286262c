"""What a missing optional input becomes inside a fitted model (training.ncd_missing):
measured for gradient boosting and the logistic baseline, and proven through ONNX."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from models.details import MissingInput
from models.metadata import FeatureSpec
from training.ncd_export import check_parity, to_onnx_model
from training.ncd_missing import missing_inputs, with_missing_rows

FEATURES = [
    FeatureSpec(name="sbp", description="systolic BP", unit="mm[Hg]", minimum=60, maximum=280),
    FeatureSpec(name="bp_treated", description="on BP drugs", unit="1", minimum=0, maximum=1,
                required=False),
    FeatureSpec(name="total_chol", description="total cholesterol", unit="mmol/L", minimum=1,
                maximum=20, required=False),
]  # fmt: skip


def _rows(n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """bp_treated never missing (30 % treated); cholesterol missing for 10 %."""
    rng = np.random.default_rng(42)
    x = np.column_stack(
        [rng.normal(140, 20, n), rng.random(n) < 0.3, rng.normal(5.0, 1.0, n)]
    ).astype(np.float32)
    logit = -2.0 + 0.03 * (x[:, 0] - 140) + 1.5 * x[:, 1] + 0.5 * (x[:, 2] - 5.0)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    x[rng.random(n) < 0.1, 2] = np.nan
    return x, y


@pytest.fixture(scope="module")
def hgb() -> tuple[HistGradientBoostingClassifier, np.ndarray]:
    x, y = _rows()
    with threadpool_limits(1):
        model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(x, y)
    return model, x


def test_gradient_boosting_scores_a_never_missing_flag_as_the_commoner_answer(
    hgb: tuple[HistGradientBoostingClassifier, np.ndarray],
) -> None:
    """Unknown treatment, never missing in training, is scored as untreated: the card
    has to say so, since "routed natively" would suggest the model knows "unknown"."""
    model, x = hgb
    found = missing_inputs(model, x, FEATURES)
    assert set(found) == {"bp_treated", "total_chol"}  # required features never missing
    assert found["bp_treated"] == MissingInput(missing_in_training=0.0, scored_as=0.0)
    # Missing in training: a route of its own, not any one value.
    assert found["total_chol"].missing_in_training == pytest.approx(0.1, abs=0.02)
    assert found["total_chol"].scored_as is None


def test_logistic_baseline_scores_missing_as_the_training_median() -> None:
    x, y = _rows()
    model = Pipeline(
        [("impute", SimpleImputer(strategy="median")), ("model", LogisticRegression())]
    ).fit(x, y)
    found = missing_inputs(model, x, FEATURES)
    assert found["bp_treated"].scored_as == 0.0
    median = float(np.nanmedian(x[:, 2]))
    assert found["total_chol"].scored_as == pytest.approx(median)


def test_onnx_treats_missing_inputs_as_the_fitted_model_does(
    hgb: tuple[HistGradientBoostingClassifier, np.ndarray],
) -> None:
    """The parity rows training exports with include each optional input missing."""
    model, x = hgb
    rows = with_missing_rows(x[:1000], FEATURES, per_feature=300)
    assert len(rows) == 1000 + 2 * 300
    assert np.isnan(rows[1000:1300, 1]).all()
    assert not np.isnan(rows[:, 0]).any()  # required: never made missing
    report = check_parity(model, to_onnx_model(model, len(FEATURES)), rows)
    assert report.ok, report
