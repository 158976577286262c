"""A patient unlike the training patients gets no model estimate; the WHO chart leads.

The fixture artifact (tests/ncd_fixtures.py) is given a known training range; older
artifacts without one keep working, and their explanation says the range is unknown.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pytest

from models.metadata import ModelMetadata
from models.ncd_predictor import NcdPredictor
from models.ncd_support import InputSupport
from serving.assess import NoAdvice, WhoSettings, assess, model_shown
from serving.cards import ncd_card
from serving.runtime import Runtime
from serving.ui.explanations import NcdExplanation
from tests.ncd_fixtures import FIXTURE_FEATURES, fixture_rows, who_comparison, with_details
from tests.serving.cds_fixtures import runtime_for, shared_store

VALUES: dict[str, float | str] = {
    "sex": "male", "age": 60.0, "smoking": 1.0, "sbp": 150.0, "total_chol": 5.5,
    "bmi": 27.0, "diabetes": 0.0,
}  # fmt: skip
SUPPORT = {
    "features": {
        "age": {"low": 41.0, "high": 73.0, "missing_rate": 0.0},
        "sbp": {"low": 95.0, "high": 200.0, "missing_rate": 0.0},
        "smoking": {"low": 0.0, "high": 1.0, "missing_rate": 0.0},
        "total_chol": {"low": 3.0, "high": 8.0, "missing_rate": 0.05},
    }
}


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with runtime_for(shared_store(), tmp_path_factory.mktemp("rt")) as rt:
        yield rt


def _with(predictor: NcdPredictor, **changes: object) -> NcdPredictor:
    copied = copy.copy(predictor)
    copied.metadata = with_details(copied.metadata, who_comparison=who_comparison(), **changes)
    return copied


def test_support_of_rows_uses_percentiles_and_category_extremes() -> None:
    x, _ = fixture_rows(4000, seed=3)
    support = InputSupport.of_rows(x, FIXTURE_FEATURES)
    sbp = support.features["sbp"]
    column = x[:, 3]
    assert sbp.low == pytest.approx(float(np.quantile(column, 0.001)))
    assert sbp.high == pytest.approx(float(np.quantile(column, 0.999)))
    assert (support.features["smoking"].low, support.features["smoking"].high) == (0.0, 1.0)
    assert 0.0 < support.features["bmi"].missing_rate < 0.2
    assert support.features["age"].missing_rate == 0.0
    meta = ModelMetadata(
        name="cvd-risk", version="1.0.0", task="ncd-risk", features=FIXTURE_FEATURES,
        extra={"outcome": "cvd", "input_support": support.model_dump(mode="json")},
    )  # fmt: skip
    assert meta.ncd.input_support == support


def test_inside_the_training_range_the_validated_model_is_shown(runtime: Runtime) -> None:
    predictor = _with(runtime.ncd["ncd-cvd-risk"], input_support=SUPPORT)
    advice = assess(predictor, VALUES, who=WhoSettings())
    assert advice.outside_support == []
    assert advice.support_known
    assert model_shown(advice)


def test_outside_the_training_range_no_model_estimate_and_the_reason(runtime: Runtime) -> None:
    """SBP 240 is a valid input (the model accepts 60-260) but above every training
    patient: the card leads with the WHO chart and says why the model is silent."""
    predictor = _with(runtime.ncd["ncd-cvd-risk"], input_support=SUPPORT)
    advice = assess(predictor, {**VALUES, "sbp": 240.0}, who=WhoSettings())
    assert [(o.feature, o.side, o.value) for o in advice.outside_support] == [
        ("sbp", "above", 240.0)
    ]
    assert not model_shown(advice)
    card = ncd_card(
        advice, lang="en", indicators=runtime.config.indicators, patient_id="p1",
        encounter_id=None, explain_url="https://example.org/x", region="",
    )  # fmt: skip
    detail = card.detail or ""
    assert "The local model cannot assess: unlike the patients it was trained on" in detail
    assert "240 mmHg above the training range" in detail
    assert f"{round(advice.risk * 100)}%" not in detail.split("cannot assess")[1]
    ex = NcdExplanation.from_advice(advice, card_uuid="0" * 32, service_id="ncd-cvd-risk")
    assert not ex.model_shown
    assert ex.outside_support[0].feature == "sbp"


def test_outside_without_a_chart_gives_no_advice(runtime: Runtime) -> None:
    predictor = _with(runtime.ncd["ncd-cvd-risk"], input_support=SUPPORT)
    with pytest.raises(NoAdvice) as caught:
        assess(predictor, {**VALUES, "age": 40.0}, who=None)
    assert caught.value.code == "out-of-range:age"
    assert "training range" in caught.value.problems[0].detail


def test_artifact_without_a_record_keeps_working_and_says_support_is_unknown(
    runtime: Runtime,
) -> None:
    predictor = _with(runtime.ncd["ncd-cvd-risk"], input_support=None)
    advice = assess(predictor, {**VALUES, "sbp": 240.0}, who=WhoSettings())
    assert advice.outside_support == []
    assert not advice.support_known
    assert model_shown(advice)
    ex = NcdExplanation.from_advice(advice, card_uuid="0" * 32, service_id="ncd-cvd-risk")
    assert ex.support_known is False
