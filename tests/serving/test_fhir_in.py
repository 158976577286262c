"""Prefetch -> features: latest usable value, panel components, UCUM conversions shared
with training (models.ncd_features), smoking and diabetes codes, malformed input."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from serving.fhir_in import PrefetchError, extract
from serving.prefetch import TEMPLATES, keys_for
from tests.serving.cds_fixtures import observation

TODAY = date(2026, 11, 25)
Prefetch = dict[str, dict[str, Any] | None]


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
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


NO_MEDICATIONS: Prefetch = {"medicationStatements": _bundle(), "medicationRequests": _bundle()}


def test_hba1c_at_or_above_6_5_means_diabetes_without_a_condition() -> None:
    found = extract(
        {"hba1c": _bundle(observation("4548-4", 7.1, "%", TODAY, "h")), "diabetes": _bundle()},
        TODAY,
    )
    assert found.values["diabetes"] == 1.0
    none = extract(
        {
            "hba1c": _bundle(observation("4548-4", 5.2, "%", TODAY, "h")),
            "diabetes": _bundle(),
            **NO_MEDICATIONS,
        },
        TODAY,
    )
    assert none.values["diabetes"] == 0.0
    # Without the medication searches a drug used in diabetes could be missed: unknown.
    no_drugs = extract(
        {"hba1c": _bundle(observation("4548-4", 5.2, "%", TODAY, "h")), "diabetes": _bundle()},
        TODAY,
    )
    assert "diabetes" not in no_drugs.values
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


def test_a_search_with_a_further_page_is_incomplete() -> None:
    """Both shared rules say "no" only on complete data; a next page may hold the drug."""
    paged = {**_bundle(), "link": [{"relation": "next", "url": "https://ehr.example/p2"}]}
    complete = extract({**NO_MEDICATIONS, "diabetes": _bundle()}, TODAY)
    assert (complete.values["bp_treated"], complete.values["diabetes"]) == (0.0, 0.0)
    partial = extract({**NO_MEDICATIONS, "medicationRequests": paged, "diabetes": _bundle()}, TODAY)
    assert "bp_treated" not in partial.values
    assert "diabetes" not in partial.values


def test_icd10_and_resolved_conditions() -> None:
    def condition(system: str, code: str, status: str) -> dict[str, Any]:
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
        {
            "diabetes": _bundle(condition("http://snomed.info/sct", "44054006", "resolved")),
            **NO_MEDICATIONS,
        },
        TODAY,
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
def test_malformed_prefetch_names_the_key(bad: dict[str, Any]) -> None:
    with pytest.raises(PrefetchError) as caught:
        extract({"sbp": bad}, TODAY)
    assert caught.value.key == "sbp"


def test_keys_for_cover_model_and_who_inputs() -> None:
    assert keys_for(["sex", "age", "sbp"], with_who=False) == ["patient", "sbp"]
    assert set(keys_for(["sbp"], with_who=True)) == {
        "patient", "sbp", "totalChol", "hba1c", "bmi", "smoking", "diabetes", "fastingGlucose",
        "medicationStatements", "medicationRequests",  # drugs used in diabetes
    }  # fmt: skip
    # A diabetes-risk model without a diabetes input still needs what shows the outcome.
    assert set(keys_for(["sex", "age"], with_who=False, outcome="diabetes")) == {
        "patient", "diabetes", "hba1c", "fastingGlucose",
        "medicationStatements", "medicationRequests",
    }  # fmt: skip
    assert all("{{context.patientId}}" in template for template in TEMPLATES.values())


# -- diastolic blood pressure ------------------------------------------------------------


def _bp_panel(sbp: float | None, dbp: float | None, when: date, obs_id: str) -> dict[str, Any]:
    components = [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": {"value": value, "unit": "mmHg", "code": "mm[Hg]"},
        }
        for code, value in (("8480-6", sbp), ("8462-4", dbp))
        if value is not None
    ]
    return observation("85354-9", None, "mm[Hg]", when, obs_id, component=components)


def test_dbp_from_its_own_observation_and_from_the_bp_panel() -> None:
    alone = observation("8462-4", 88, "mmHg", date(2026, 3, 1), "d1")
    panel = _bp_panel(150, 95, date(2026, 9, 1), "p1")
    found = extract({"dbp": _bundle(alone, panel), "sbp": _bundle(panel)}, TODAY)
    assert found.values["dbp"] == 95  # the newer panel's diastolic component
    assert found.values["sbp"] == 150  # and its systolic one for the sbp key
    assert found.units["dbp"] == "mm[Hg]"
    assert found.dates["dbp"] == date(2026, 9, 1)
    assert found.sources["dbp"] == "Observation/p1"
    assert extract({"dbp": _bundle(alone)}, TODAY).values["dbp"] == 88


def test_dbp_kept_with_its_old_date_so_staleness_is_judged_downstream() -> None:
    old = observation("8462-4", 80, "mm[Hg]", date(2023, 1, 5), "d-old")
    wrong = observation("8462-4", 200, "mm[Hg]", TODAY, "d-bad", status="entered-in-error")
    found = extract({"dbp": _bundle(old, wrong)}, TODAY)
    assert found.values["dbp"] == 80
    assert found.dates["dbp"] == date(2023, 1, 5)  # assess() refuses it as stale-data


def test_dbp_missing_component_or_unit_gives_no_value() -> None:
    only_systolic = _bp_panel(140, None, TODAY, "p2")
    assert "dbp" not in extract({"dbp": _bundle(only_systolic)}, TODAY).values
    kpa = observation("8462-4", 11.5, "kPa", TODAY, "d2")
    found = extract({"dbp": _bundle(kpa)}, TODAY)
    assert "dbp" not in found.values
    assert found.problems["dbp"] == "unit:kPa"


# -- blood-pressure treatment -----------------------------------------------------------

ATC = "http://www.whocc.no/atc"


def _drug(code: str, system: str = ATC) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _statement(code: str, status: str = "active", **extra: object) -> dict[str, Any]:
    return {
        "resourceType": "MedicationStatement",
        "id": f"ms-{code}-{status}",
        "status": status,
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": _drug(code),
        "effectivePeriod": {"start": "2024-03-01"},  # ongoing since (no end)
        **extra,
    }


def _request(
    code: str, status: str = "active", intent: str = "order", **extra: object
) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": f"mr-{code}-{status}-{intent}",
        "status": status,
        "intent": intent,
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": _drug(code),
        "authoredOn": "2026-10-01",  # eight weeks before TODAY
        **extra,
    }


def _meds(statements: list[dict[str, Any]], requests: list[dict[str, Any]]) -> Prefetch:
    return {"medicationStatements": _bundle(*statements), "medicationRequests": _bundle(*requests)}


@pytest.mark.parametrize(
    ("statements", "requests", "expected", "source"),
    [
        ([_statement("C08CA01")], [], 1.0, "MedicationStatement/ms-C08CA01-active"),
        ([], [_request("C09AA05")], 1.0, "MedicationRequest/mr-C09AA05-active-order"),
        ([], [_request("c03aa03")], 1.0, "MedicationRequest/mr-c03aa03-active-order"),
        # An order without a validity period counts for a year after it was written
        # (models.bp_treatment): "active" alone no longer makes a 2015 order current,
        # since training cannot read a status at its index date. Validity periods count.
        ([], [_request("C07AB02", authoredOn="2015-02-01")], 0.0, None),
        ([], [_request("C07AB02", authoredOn="2025-11-26")], 1.0, None),
        ([], [_request("C07AB02", authoredOn="2025-11-24")], 0.0, None),
        (
            [],
            [
                _request(
                    "C07AB02",
                    authoredOn="2015-02-01",
                    dispenseRequest={
                        "validityPeriod": {"start": "2015-02-01", "end": "2027-01-31"}
                    },
                )
            ],
            1.0,
            None,
        ),
        ([_statement("C08CA01", "stopped"), _statement("C09AA02", "completed")], [], 0.0, None),
        (
            [],
            [_request("C02AC01", "entered-in-error"), _request("C07AB02", "cancelled")],
            0.0,
            None,
        ),
        ([], [_request("C09CA01", intent="proposal")], 0.0, None),
        ([_statement("A10BA02")], [_request("N02BE01")], 0.0, None),  # metformin, paracetamol
        # RxNorm only (amlodipine 5 mg tablet): not mapped, ATC classes only.
        ([], [_request("197361", medicationCodeableConcept=_drug("197361", "rxnorm"))], 0.0, None),
    ],
)
def test_bp_treated_from_current_antihypertensives(
    statements: list[dict[str, Any]],
    requests: list[dict[str, Any]],
    expected: float,
    source: str | None,
) -> None:
    found = extract(_meds(statements, requests), TODAY)
    assert found.values["bp_treated"] == expected
    assert found.units["bp_treated"] == "1"
    assert "bp_treated" not in found.dates
    if source is not None:
        assert found.sources["bp_treated"] == source


def test_bp_treated_through_referenced_medications() -> None:
    included = {"resourceType": "Medication", "id": "m1", "code": _drug("C09AA05")}
    by_reference = _request("x", medicationReference={"reference": "Medication/m1"})
    del by_reference["medicationCodeableConcept"]
    bundle = _bundle(by_reference, included)
    found = extract({"medicationStatements": _bundle(), "medicationRequests": bundle}, TODAY)
    assert found.values["bp_treated"] == 1.0
    contained = _statement(
        "x",
        contained=[{"resourceType": "Medication", "id": "c1", "code": _drug("C08CA01")}],
        medicationReference={"reference": "#c1"},
    )
    del contained["medicationCodeableConcept"]
    assert extract(_meds([contained], []), TODAY).values["bp_treated"] == 1.0
    dangling = {**by_reference, "medicationReference": {"reference": "Medication/nowhere"}}
    assert extract(_meds([], [dangling]), TODAY).values["bp_treated"] == 0.0


def test_bp_treatment_unknown_without_both_medication_searches() -> None:
    only_statements: Prefetch = {"medicationStatements": _bundle(_statement("A10BA02"))}
    assert "bp_treated" not in extract(only_statements, TODAY).values
    treated: Prefetch = {"medicationRequests": _bundle(_request("C09AA05"))}
    assert extract(treated, TODAY).values["bp_treated"] == 1.0  # positive evidence suffices
    assert "bp_treated" not in extract({}, TODAY).values


def test_malformed_medication_names_the_key() -> None:
    with pytest.raises(PrefetchError) as caught:
        extract({"medicationRequests": _bundle({"resourceType": "MedicationRequest"})}, TODAY)
    assert caught.value.key == "medicationRequests"


def test_models_with_dbp_and_bp_treated_ask_for_their_prefetch() -> None:
    keys = keys_for(["sex", "age", "sbp", "dbp", "bp_treated"], with_who=False)
    assert keys == ["patient", "sbp", "dbp", "medicationStatements", "medicationRequests"]
    assert "8462-4" in TEMPLATES["dbp"]
    assert TEMPLATES["medicationRequests"].startswith("MedicationRequest?patient=")
    assert "status=active" in TEMPLATES["medicationStatements"]
