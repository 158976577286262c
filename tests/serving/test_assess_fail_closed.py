"""The fail-closed branches of serving/assess.py, run: a model output that is not a
probability, and the WHO chart unavailable for a patient the model accepts."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import pytest

from models.metadata import FeatureSpec
from models.ncd_predictor import NcdPredictor
from serving.assess import NoAdvice, WhoSettings, assess
from serving.cards import ncd_card
from serving.runtime import Runtime
from tests.ncd_fixtures import who_comparison, with_details
from tests.serving.cds_fixtures import runtime_for, shared_store

VALUES: dict[str, float | str] = {
    "sex": "female", "age": 66.0, "smoking": 0.0, "sbp": 150.0, "total_chol": 5.5,
    "bmi": 27.0, "diabetes": 0.0,
}  # fmt: skip


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with runtime_for(shared_store(), tmp_path_factory.mktemp("rt")) as rt:
        yield rt


@pytest.mark.parametrize("risk", [math.nan, math.inf, -0.01, 1.01, -math.inf])
def test_model_output_that_is_not_a_probability_gives_no_advice(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, risk: float
) -> None:
    predictor = runtime.ncd["ncd-cvd-risk"]
    monkeypatch.setattr(predictor, "explain", lambda row, top=3: (risk, []))
    with pytest.raises(NoAdvice) as caught:
        assess(predictor, VALUES, who=WhoSettings())
    assert caught.value.code == "model-output"


@pytest.mark.parametrize("risk", [0.0, 1.0, 0.37])
def test_probabilities_at_and_inside_the_bounds_are_advice(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, risk: float
) -> None:
    predictor = runtime.ncd["ncd-cvd-risk"]
    monkeypatch.setattr(predictor, "explain", lambda row, top=3: (risk, []))
    assert assess(predictor, VALUES, who=WhoSettings()).risk == risk


def _older_ages(predictor: NcdPredictor, validated: bool) -> NcdPredictor:
    """The fixture model as if validated up to age 90 (the WHO chart stops at 74)."""
    copied = copy.copy(predictor)
    features = [
        FeatureSpec(**{**f.model_dump(), "maximum": 90.0}) if f.name == "age" else f
        for f in copied.metadata.features
    ]
    changed = with_details(copied.metadata, who_comparison=who_comparison(validated))
    copied.metadata = changed.model_copy(update={"features": features})
    return copied


@pytest.mark.parametrize("lang", ["en", "km"])
def test_who_chart_unavailable_is_written_for_clinicians(runtime: Runtime, lang: str) -> None:
    """The old card said "pass allow_extrapolation=True" (developer text)."""
    predictor = _older_ages(runtime.ncd["ncd-cvd-risk"], validated=False)
    advice = assess(predictor, {**VALUES, "age": 80.0}, who=WhoSettings())
    assert advice.who is None
    assert advice.who_reason == "outside:age"
    assert advice.who_note == "age is outside the range the WHO chart covers (40 to under 75)"
    card = ncd_card(
        advice, lang=lang, indicators=runtime.config.indicators, patient_id="p1",
        encounter_id=None, explain_url="https://example.org/x", region="",
    )  # fmt: skip
    text = card.summary + (card.detail or "")
    assert "allow_extrapolation" not in text
    assert "extrapolat" not in text
    expected = {
        "en": "No WHO chart risk for this patient: Age is outside the range the WHO chart covers",
        "km": "គ្មានហានិភ័យតាមតារាង WHO សម្រាប់អ្នកជំងឺនេះ៖ អាយុ នៅក្រៅចន្លោះដែលតារាង WHO គ្របដណ្តប់",
    }[lang]
    assert card.summary == expected
    assert card.indicator == "info"
    assert f"{advice.percent}%" not in card.summary  # the unvalidated model is not shown


def test_validated_model_leads_where_the_chart_cannot(runtime: Runtime) -> None:
    predictor = _older_ages(runtime.ncd["ncd-cvd-risk"], validated=True)
    advice = assess(predictor, {**VALUES, "age": 80.0}, who=WhoSettings())
    card = ncd_card(
        advice, lang="en", indicators=runtime.config.indicators, patient_id="p1",
        encounter_id=None, explain_url="https://example.org/x", region="",
    )  # fmt: skip
    assert card.summary == (
        f"10-year heart attack or stroke risk {advice.percent}% ({advice.band}; local model, "
        "the WHO chart does not cover this patient)"
    )
    assert card.indicator == runtime.config.indicators[advice.band_index]
    assert card.detail is not None
    assert "The WHO 2019 chart cannot be used for this patient: Age is outside" in card.detail
