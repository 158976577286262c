"""NCD input contract and UCUM unit conversion."""

from __future__ import annotations

import numpy as np
import pytest

from models.ncd_features import (
    FEATURE_BY_NAME,
    LOINC_TO_FEATURE,
    UnitError,
    allowed_units,
    convert,
    convert_array,
    feature_columns,
    icd10_is_cvd,
    icd10_is_diabetes,
)


@pytest.mark.parametrize(
    ("quantity", "value", "unit", "expected"),
    [
        ("total_chol", 193.35, "mg/dL", 5.0),
        ("total_chol", 5.0, "mmol/L", 5.0),
        ("hdl", 38.67, "mg/dL", 1.0),
        ("fasting_glucose", 126.112, "mg/dL", 7.0),
        ("hba1c", 48.0, "mmol/mol", 48.0 / 10.929 + 2.15),
        ("hba1c", 6.5, "%", 6.5),
        ("sbp", 140.0, "mmHg", 140.0),
    ],
)
def test_convert(quantity: str, value: float, unit: str, expected: float) -> None:
    assert convert(quantity, value, unit) == pytest.approx(expected, rel=1e-9)


def test_hba1c_round_trip_matches_standards_formula() -> None:
    percent = np.array([5.0, 6.5, 9.0])
    ifcc = (percent - 2.15) * 10.929  # docs/standards.md
    assert convert_array("hba1c", ifcc, "mmol/mol") == pytest.approx(percent)


@pytest.mark.parametrize(
    ("quantity", "unit"), [("total_chol", "g/L"), ("sbp", "kPa"), ("hba1c", "mg/dL")]
)
def test_unknown_unit_refused_with_allowed_list(quantity: str, unit: str) -> None:
    with pytest.raises(UnitError) as err:
        convert(quantity, 1.0, unit)
    assert err.value.quantity == quantity
    assert err.value.allowed == allowed_units(quantity)
    assert unit in str(err.value)


def test_contract_columns_and_codes() -> None:
    cols = feature_columns()
    for name in (
        "patient_id",
        "index_date",
        "site",
        "sex",
        "age",
        "sbp",
        "total_chol",
        "sbp_date",
        "cvd_event",
        "cvd_time",
        "diabetes_event",
        "diabetes_time",
    ):
        assert name in cols
    assert len(cols) == len(set(cols))
    assert LOINC_TO_FEATURE["8480-6"] == "sbp"
    assert LOINC_TO_FEATURE["2093-3"] == "total_chol"
    assert FEATURE_BY_NAME["sbp"].unit == "mm[Hg]"
    assert icd10_is_cvd("I21.4")
    assert icd10_is_cvd("I63")
    assert not icd10_is_cvd("I10")
    assert icd10_is_diabetes("E11.9")
    assert not icd10_is_diabetes("E78")
