"""Model factors checked against the known clinical direction of each input."""

from __future__ import annotations

import pytest

from models.ncd_predictor import Contribution
from serving.ui.explanations import unlike_clinical

REFERENCE = {"age": 50.0, "sbp": 120.0, "smoking": 0.0, "bmi": 23.0, "sex": 0.0}


def _factor(feature: str, value: float, delta: float) -> Contribution:
    return Contribution(feature=feature, value=value, unit="1", delta_risk=delta, text="")


@pytest.mark.parametrize(
    ("factor", "flagged"),
    [
        (_factor("bmi", 29.3, -0.041), True),  # a higher BMI lowering CVD risk
        (_factor("sbp", 165.0, -0.01), True),
        (_factor("smoking", 1.0, -0.02), True),
        (_factor("age", 40.0, 0.02), True),  # younger than the reference, yet raises
        (_factor("bmi", 29.3, 0.02), False),
        (_factor("sbp", 165.0, 0.05), False),
        (_factor("age", 40.0, -0.02), False),
        (_factor("sex", 1.0, -0.03), False),  # no clinical direction asserted
        (_factor("sbp", 165.0, -0.0001), False),  # no effect worth a flag
    ],
)
def test_direction_unlike_clinical_knowledge_is_flagged(
    factor: Contribution, flagged: bool
) -> None:
    assert unlike_clinical("cvd", factor, REFERENCE) is flagged


def test_unknown_reference_flags_nothing() -> None:
    assert unlike_clinical("cvd", _factor("bmi", 29.3, -0.041), {}) is False
