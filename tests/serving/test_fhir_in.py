"""Prefetch -> features: latest usable value, panel components, UCUM conversions shared
with training (models.ncd_features), smoking and diabetes codes, malformed input."""

from __future__ import annotations

from datetime import date

import pytest

from serving.fhir_in import PrefetchError, extract
from serving.prefetch import TEMPLATES, keys_for
from tests.serving.cds_fixtures import observation

TODAY = date(2026, 11, 25)


def _bundle(*resources: dict) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


def test_latest_final_value_wins_and_bad_status_is_skipped() -> None:
    older = observation("8480-6", 150, "mm[Hg]", date(2026, 1, 1), "a")
    newer = observation("8480-6", 130, "mm[Hg]", date(2026, 6, 1), "b")
    wrong = observation("8480-6", 999, "mm[Hg]", date(2026, 9, 1), "c", status="entered-in-error")
    found = extract({"sbp": _bundle(older, wrong, newer)}, TODAY)
    assert found.values["sbp"] == 130
    assert found.dates["sbp"] == date(2026, 6, 1)
    assert found.sources["sbp"] == "Observation/b"


@pytest.mark.parametrize(
    ("key", "code", "value", "unit", "feature", "expected"),
    [
        ("totalChol", "2093-3", 193.35, "mg/dL", "total_chol", 5.0),
        ("totalChol", "2093-3", 5.0, "mmol/L", "total_chol", 5.0),
        ("hdl", "2085-9", 38.67, "mg/dL", "hdl", 1.0),
        ("hba1c", "4548-4", 48.0, "mmol/mol", "hba1c", 48.0 / 10.929 + 2.15),
        ("bmi", "39156-5", 27.5, "kg/m2", "bmi", 27.5),
    ],
)
def test_units_are_converted_like_training(
    key: str, code: str, value: float, unit: str, feature: str, expected: float
) -> None:
    found = extract({key: _bundle(observation(code, value, unit, TODAY, "x"))}, TODAY)
    assert found.values[feature] == pytest.approx(expected, rel=1e-6)


def test_unknown_unit_is_a_problem_not_a_value() -> None:
    found = extract({"totalChol": _bundle(observation("2093-3", 5, "g/L", TODAY, "x"))}, TODAY)
    assert "total_chol" not in found.values
    assert found.problems["total_chol"] == "unit:g/L"


def test_hba1c_at_or_above_6_5_means_diabetes_without_a_condition() -> None:
    found = extract(
        {"hba1c": _bundle(observation("4548-4", 7.1, "%", TODAY, "h")), "diabetes": _bundle()},
        TODAY,
    )
    assert found.values["diabetes"] == 1.0
    none = extract(
        {"hba1c": _bundle(observation("4548-4", 5.2, "%", TODAY, "h")), "diabetes": _bundle()},
        TODAY,
    )
    assert none.values["diabetes"] == 0.0
    glucose = extract(
        {
            "fastingGlucose": _bundle(observation("1558-6", 130, "mg/dL", TODAY, "g")),
            "diabetes": _bundle(),
        },
        TODAY,
    )
    assert glucose.values["fasting_glucose"] == pytest.approx(130 / 18.016)
    assert glucose.values["diabetes"] == 1.0
    assert glucose.sources["diabetes"] == "Observation/g"
    unknown = extract({"hba1c": _bundle(observation("4548-4", 5.2, "%", TODAY, "h"))}, TODAY)
    assert "diabetes" not in unknown.values  # no Condition search given: unknown, not "no"


def test_icd10_and_resolved_conditions() -> None:
    def condition(system: str, code: str, status: str) -> dict:
        return {
            "resourceType": "Condition",
            "id": code,
            "clinicalStatus": {"coding": [{"code": status}]},
            "code": {"coding": [{"system": system, "code": code}]},
        }

    icd = extract(
        {"diabetes": _bundle(condition("http://hl7.org/fhir/sid/icd-10", "E11.9", "active"))}, TODAY
    )
    assert icd.values["diabetes"] == 1.0
    resolved = extract(
        {"diabetes": _bundle(condition("http://snomed.info/sct", "44054006", "resolved"))}, TODAY
    )
    assert resolved.values["diabetes"] == 0.0


def test_unknown_smoking_answer_is_missing() -> None:
    answer = {"coding": [{"system": "http://snomed.info/sct", "code": "266927001"}]}
    unknown = observation("72166-2", None, "", TODAY, "s", valueCodeableConcept=answer)
    assert "smoking" not in extract({"smoking": _bundle(unknown)}, TODAY).values


def test_patient_age_and_sex() -> None:
    patient = {"resourceType": "Patient", "id": "p", "gender": "female", "birthDate": "1960-11-26"}
    found = extract({"patient": patient}, TODAY)
    assert found.values["sex"] == "female"
    assert found.values["age"] == 65.0  # birthday tomorrow
    other = extract({"patient": {**patient, "gender": "unknown"}}, TODAY)
    assert "sex" not in other.values


@pytest.mark.parametrize(
    "bad",
    [
        {"resourceType": "Patient"},
        {"resourceType": "Bundle", "entry": "nope"},
        _bundle({"resourceType": "Observation", "status": "final"}),
    ],
)
def test_malformed_prefetch_names_the_key(bad: dict) -> None:
    with pytest.raises(PrefetchError) as caught:
        extract({"sbp": bad}, TODAY)
    assert caught.value.key == "sbp"


def test_keys_for_cover_model_and_who_inputs() -> None:
    assert keys_for(["sex", "age", "sbp"], with_who=False) == ["patient", "sbp"]
    assert set(keys_for(["sbp"], with_who=True)) == {
        "patient", "sbp", "totalChol", "hba1c", "bmi", "smoking", "diabetes", "fastingGlucose",
    }  # fmt: skip
    assert all("{{context.patientId}}" in template for template in TEMPLATES.values())
