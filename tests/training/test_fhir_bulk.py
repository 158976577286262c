"""FHIR Bulk NDJSON -> point-in-time feature table, and the synthetic cohort round trip."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from training.fhir_bulk import BuildReport, FeatureTableError, build_feature_table, check_leakage
from training.synthetic_ncd import INDEX_DATE, generate, simulate

INDEX = date(2020, 1, 1)


def _qty(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}


def _obs(pid: str, day: str, loinc: str, value: float, unit: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "status": "final", "effectiveDateTime": day,
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": f"Patient/{pid}"}, "valueQuantity": _qty(value, unit),
    }  # fmt: skip


def _cond(pid: str, day: str, system: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition", "onsetDateTime": day,
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
    }  # fmt: skip


def _write(folder: Path, resources: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    by_type: dict[str, list[str]] = {}
    for res in resources:
        by_type.setdefault(res["resourceType"], []).append(json.dumps(res))
    for rtype, lines in by_type.items():
        (folder / f"{rtype}.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _patient(pid: str, gender: str = "male", birth: str = "1960-01-01") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": gender, "birthDate": birth}


SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"


@pytest.fixture
def export(tmp_path: Path) -> Path:
    return _write(tmp_path / "bulk", [
        _patient("a"), _patient("b", "female", "1970-06-15"), _patient("c"),
        # a: most recent SBP before index wins; the one after index is ignored
        _obs("a", "2018-05-01", "8480-6", 150, "mm[Hg]"),
        _obs("a", "2019-11-01", "8480-6", 142, "mm[Hg]"),
        _obs("a", "2020-02-01", "8480-6", 190, "mm[Hg]"),
        # a: cholesterol in mg/dL converted; one duplicated identically (fine)
        _obs("a", "2019-10-01", "2093-3", 232.02, "mg/dL"),
        _obs("a", "2019-10-01", "2093-3", 232.02, "mg/dL"),
        # a: too old for a 365-day look-back
        _obs("a", "2017-01-01", "39156-5", 27, "kg/m2"),
        # b: conflicting values the same day -> missing + issue
        _obs("b", "2019-12-01", "8480-6", 120, "mm[Hg]"),
        _obs("b", "2019-12-01", "8480-6", 160, "mm[Hg]"),
        # b: unit not allowed, impossible value
        _obs("b", "2019-12-01", "2093-3", 5.2, "g/L"),
        _obs("b", "2019-12-01", "39156-5", 250, "kg/m2"),
        # a: stroke after index (event); b: MI before index (not at risk)
        _cond("a", "2023-07-01", SNOMED, "230690007"),
        _cond("b", "2015-03-01", ICD10, "I21.9"),
        # c: diabetes before index; a follow-up contact in 2025
        _cond("c", "2012-01-01", ICD10, "E11"),
        _obs("c", "2025-01-01", "8480-6", 130, "mm[Hg]"),
    ])  # fmt: skip


def test_point_in_time_features_and_outcomes(export: Path) -> None:
    report = BuildReport()
    df = build_feature_table(export, index_date=INDEX, lookback_days=365, report=report)
    row = df.set_index("patient_id")
    assert row.loc["a", "sbp"] == 142
    assert row.loc["a", "sbp_date"] == pd.Timestamp("2019-11-01")
    assert row.loc["a", "total_chol"] == pytest.approx(6.0)
    assert np.isnan(row.loc["a", "bmi"])  # outside the look-back: missing, not a default
    assert row.loc["a", "age"] == pytest.approx(60.0, abs=0.01)
    assert row.loc["a", "cvd_event"] == 1
    assert row.loc["a", "cvd_time"] == pytest.approx(3.5, abs=0.01)
    assert np.isnan(row.loc["a", "diabetes"])  # never tested, no history: unknown
    # b: conflicting SBP, bad unit and impossible BMI all missing, each reported
    assert np.isnan(row.loc["b", "sbp"])
    assert np.isnan(row.loc["b", "total_chol"])
    assert np.isnan(row.loc["b", "bmi"])
    assert np.isnan(row.loc["b", "cvd_event"])  # prior MI: not at risk
    counts = report.counts()
    assert counts["sbp:conflicting values on the same date"] == 1
    assert any(k.startswith("total_chol:unit not accepted") for k in counts)
    assert any(k.startswith("bmi:impossible value") for k in counts)
    assert any(k.startswith("cvd_event:prior-disease") for k in counts)
    assert {i.patient_id for i in report.issues} == {"b"}
    # c: prior diabetes; censored at the last contact, 5 years after index
    assert row.loc["c", "diabetes"] == 1
    assert row.loc["c", "cvd_event"] == 0
    assert row.loc["c", "cvd_time"] == pytest.approx(5.0, abs=0.01)
    assert np.isnan(row.loc["c", "diabetes_event"])
    assert check_leakage(df) == []


def test_strict_mode_raises_naming_patient_field_and_rule(export: Path) -> None:
    with pytest.raises(FeatureTableError) as err:
        build_feature_table(export, index_date=INDEX, lookback_days=365, strict=True)
    assert "patient b" in str(err.value)


def test_per_patient_index_dates(export: Path) -> None:
    df = build_feature_table(export, index_date={"a": date(2018, 6, 1)}, lookback_days=365)
    assert list(df["patient_id"]) == ["a"]
    assert df.loc[0, "sbp"] == 150


def test_leakage_detected() -> None:
    df = pd.DataFrame({
        "patient_id": ["x", "y"], "index_date": pd.to_datetime(["2020-01-01"] * 2),
        "sbp_date": pd.to_datetime(["2019-06-01", "2020-03-01"]),
        "cvd_time": [-0.5, 2.0], "diabetes_time": [1.0, 1.0],
    })  # fmt: skip
    found = {(i.patient_id, i.field) for i in check_leakage(df)}
    assert found == {("x", "cvd_time"), ("y", "sbp_date")}


@pytest.mark.parametrize(
    ("line", "rule"),
    [("{oops", "not valid JSON"), ('{"resourceType": "Observation"}', "not a Patient resource")],
)
def test_bad_ndjson_line_is_refused(tmp_path: Path, line: str, rule: str) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "Patient.ndjson").write_text(f'{{"resourceType": "Patient", "id": "a"}}\n{line}\n')
    with pytest.raises(FeatureTableError) as err:
        build_feature_table(folder, index_date=INDEX)
    (issue,) = err.value.issues
    assert issue.field == "Patient.ndjson:2"
    assert issue.rule.startswith(rule)


def test_synthetic_cohort_round_trips_through_fhir(tmp_path: Path) -> None:
    n = 3000
    out = generate(tmp_path / "syn", n=n, seed=7)
    report = BuildReport()
    df = build_feature_table(out, index_date=INDEX_DATE, report=report).set_index("patient_id")
    truth = simulate(n, seed=7)
    assert report.issues == []
    assert len(df) == n
    # Values survive FHIR + unit conversion (written with 1-2 decimals).
    np.testing.assert_allclose(df["sbp"].to_numpy(), truth.sbp, atol=0.051)
    np.testing.assert_allclose(df["total_chol"].to_numpy(), truth.total_chol, atol=0.01)
    np.testing.assert_allclose(df["hba1c"].to_numpy(), truth.hba1c, atol=0.051)
    np.testing.assert_array_equal(df["smoking"].to_numpy(), truth.smoking)
    np.testing.assert_array_equal(df["diabetes"].to_numpy(), truth.diabetes)
    np.testing.assert_array_equal(df["sex"].to_numpy() == "male", truth.male)
    events = (truth.cvd_years <= truth.followup_years).astype(float)
    np.testing.assert_array_equal(df["cvd_event"].to_numpy(), events)
    assert df["cvd_time"].max() <= 12.01
    assert check_leakage(df.reset_index()) == []
    # Seeded: same seed, same cohort; another seed, another cohort.
    assert np.array_equal(simulate(50, 7).sbp, simulate(50, 7).sbp)
    assert not np.array_equal(simulate(50, 7).sbp, simulate(50, 8).sbp)


def test_synthetic_outcomes_follow_the_who_model() -> None:
    truth = simulate(40000, seed=3)
    # The 10-year cumulative incidence without censoring equals the WHO risk on average.
    observed = float(np.mean(truth.cvd_years <= 10.0))
    assert observed == pytest.approx(float(truth.cvd_risk10.mean()), rel=0.08)
    high = truth.cvd_risk10 > np.quantile(truth.cvd_risk10, 0.8)
    assert np.mean(truth.cvd_years[high] <= 10) > 2 * np.mean(truth.cvd_years[~high] <= 10)
