"""``diabetes``: one rule (models.diabetes_status), the same value from a FHIR Bulk export
at the index date (training.fhir_bulk) and from CDS Hooks prefetch on that day
(serving.fhir_in), "no data" kept apart from "no", point-in-time correctness where a
Bulk status is from later, and the same rule deciding who already has the outcome
(training's prevalent-diabetes exclusion, serving's ``already-has-outcome``)."""

from __future__ import annotations

import json
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.config import load_config
from models.diabetes_status import (
    LAB_CUTS,
    LAB_LOOKBACK_DAYS,
    LabResult,
    diagnosed_by,
    diagnosis,
    diagnosis_counts_at,
    has_diabetes,
    lab_counts_at,
)
from serving.assess import already_has_outcome
from serving.fhir_in import extract
from serving.prefetch import TEMPLATES
from tests.models.medication_fixtures import drug, request, statement
from training.fhir_bulk import BuildReport, build_feature_table
from training.ncd_config import NcdTrainConfig
from training.ncd_table import check_table

CONFIG = Path(__file__).resolve().parents[2] / "configs"
D = date(2026, 11, 25)  # the index date; serving's "today"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
BEFORE = {"lastUpdated": "2026-02-01T09:30:00Z"}  # the status was set before D
AFTER = {"lastUpdated": "2027-03-01T08:00:00Z"}  # ... after D (a later export)
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def _dx(
    rid: str,
    code: str = "44054006",
    system: str = SNOMED,
    status: str | None = "active",
    **extra: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Condition", "id": rid, "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": system, "code": code}]}, **extra,
    }  # fmt: skip
    if status is not None:
        out["clinicalStatus"] = {"coding": [{"system": CLINICAL, "code": status}]}
    return out


def _refuted(code: str) -> dict[str, Any]:
    return {"coding": [{"system": VERIFICATION, "code": code}]}


_drug = drug
_mr = partial(request, code="A10BA02")  # metformin
_ms = partial(statement, code="A10AE04")  # insulin glargine


def _lab(rid: str, loinc: str, value: float, unit: str, day: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "id": rid, "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "effectiveDateTime": day,
        "valueQuantity": {"value": value, "unit": unit,
                          "system": "http://unitsofmeasure.org", "code": unit},
    }  # fmt: skip


def _a1c(
    value: float, day: str = "2026-10-01", unit: str = "%", rid: str = "a1c"
) -> dict[str, Any]:
    return _lab(rid, "4548-4", value, unit, day)


def _fpg(value: float, day: str = "2026-10-01", unit: str = "mmol/L") -> dict[str, Any]:
    return _lab("fpg", "1558-6", value, unit, day)


METFORMIN = {"resourceType": "Medication", "id": "m1", "code": _drug("A10BA02")}

# (case, resources, expected at D) with the diagnoses and the medications complete.
# Every case goes through training and serving.
CASES: list[tuple[str, list[dict[str, Any]], float]] = [
    ("nothing recorded, records complete", [], 0.0),
    ("active SNOMED diagnosis", [_dx("c", onsetDateTime="2019-03-01")], 1.0),
    ("type 1 diabetes", [_dx("c", "46635009", onsetDateTime="2001-03-01")], 1.0),
    ("ICD-10 E11.9 encounter diagnosis, no clinical status",
     [_dx("c", "E11.9", ICD10, None, recordedDate="2024-05-02")], 1.0),
    ("ICD-10-CM E11.65", [_dx("c", "E11.65", ICD10 + "-cm", onsetDateTime="2022-01-01")], 1.0),
    ("ICD-10 E14 (unspecified)", [_dx("c", "E14", ICD10, recordedDate="2020-01-01")], 1.0),
    ("onset as a period", [_dx("c", onsetPeriod={"start": "2018-01-01"})], 1.0),
    ("not diabetes (ICD-10 E66 obesity)", [_dx("c", "E66.9", ICD10, onsetDateTime="2020-01-01")],
     0.0),
    ("not diabetes (SNOMED prediabetes)", [_dx("c", "714628002", onsetDateTime="2020-01-01")], 0.0),
    ("diagnosed after D", [_dx("c", onsetDateTime="2026-12-01")], 0.0),
    ("diagnosed on D", [_dx("c", onsetDateTime="2026-11-25T10:00:00+07:00")], 1.0),
    ("resolved before D", [_dx("c", status="resolved", onsetDateTime="2015-01-01", meta=BEFORE)],
     0.0),
    ("in remission before D",
     [_dx("c", status="remission", onsetDateTime="2015-01-01", meta=BEFORE)], 0.0),
    ("inactive before D", [_dx("c", status="inactive", onsetDateTime="2015-01-01", meta=BEFORE)],
     0.0),
    ("recurrence", [_dx("c", status="recurrence", onsetDateTime="2015-01-01", meta=BEFORE)], 1.0),
    ("abated before D",
     [_dx("c", status="resolved", onsetDateTime="2015-01-01", abatementDateTime="2020-06-01")],
     0.0),
    ("refuted", [_dx("c", onsetDateTime="2019-03-01", verificationStatus=_refuted("refuted"))],
     0.0),
    ("entered in error",
     [_dx("c", onsetDateTime="2019-03-01", verificationStatus=_refuted("entered-in-error"))], 0.0),
    ("undated, active, last changed before D", [_dx("c", meta=BEFORE)], 1.0),
    ("undated, no clinical status", [_dx("c", status=None, meta=BEFORE)], 0.0),
    ("metformin ordered 8 weeks ago", [_mr("r", authoredOn="2026-10-01")], 1.0),
    ("metformin ordered over a year ago", [_mr("r", authoredOn="2025-11-01")], 0.0),
    ("insulin taken, ongoing", [_ms("s", effectivePeriod={"start": "2010-01-01"})], 1.0),
    ("metformin as an included Medication",
     [{**{k: v for k, v in _mr("r", authoredOn="2026-10-01").items()
          if k != "medicationCodeableConcept"},
       "medicationReference": {"reference": "Medication/m1"}}, METFORMIN], 1.0),
    ("metformin stopped before D",
     [_ms("s", "stopped", code="A10BA02", effectiveDateTime="2026-06-01", meta=BEFORE)], 0.0),
    ("metformin proposed, not ordered", [_mr("r", intent="proposal", authoredOn="2026-10-01")],
     0.0),
    ("metformin entered in error", [_mr("r", "entered-in-error", authoredOn="2026-10-01")], 0.0),
    ("only a BP drug", [_mr("r", code="C08CA01", authoredOn="2026-10-01")], 0.0),
    ("HbA1c 6.5 %", [_a1c(6.5)], 1.0),
    ("HbA1c 6.4 %", [_a1c(6.4)], 0.0),
    ("HbA1c 48 mmol/mol", [_a1c(48, unit="mmol/mol")], 1.0),
    ("HbA1c 47 mmol/mol", [_a1c(47, unit="mmol/mol")], 0.0),
    ("fasting glucose 7.0 mmol/L", [_fpg(7.0)], 1.0),
    ("fasting glucose 126 mg/dL", [_fpg(126, unit="mg/dL")], 1.0),
    ("fasting glucose 125 mg/dL", [_fpg(125, unit="mg/dL")], 0.0),
    ("raised HbA1c too old", [_a1c(8.0, "2024-09-01")], 0.0),
    ("latest HbA1c normal, earlier raised",
     [_a1c(7.4, "2026-01-10", rid="old"), _a1c(6.1, "2026-10-01")], 0.0),
    ("one resolved, one active",
     [_dx("c1", status="resolved", onsetDateTime="2010-01-01", meta=BEFORE),
      _dx("c2", "E11", ICD10, onsetDateTime="2023-01-01")], 1.0),
]  # fmt: skip


def _kinds(resources: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["resourceType"] in kinds]


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": r} for r in resources]}  # fmt: skip


def _prefetch(
    resources: list[dict[str, Any]], *, conditions: bool = True, medications: bool = True
) -> dict[str, dict[str, Any] | None]:
    """The prefetch keys models.diabetes_status needs, answered from ``resources``."""
    meds = _kinds(resources, "Medication")
    prefetch: dict[str, dict[str, Any] | None] = {
        "hba1c": _bundle([r for r in _kinds(resources, "Observation") if "4548-4" in str(r)]),
        "fastingGlucose": _bundle(
            [r for r in _kinds(resources, "Observation") if "1558-6" in str(r)]
        ),
    }
    if conditions:
        prefetch["diabetes"] = _bundle(_kinds(resources, "Condition"))
    if medications:
        prefetch["medicationStatements"] = _bundle(_kinds(resources, "MedicationStatement") + meds)
        prefetch["medicationRequests"] = _bundle(_kinds(resources, "MedicationRequest") + meds)
    return prefetch


def _serving(
    resources: list[dict[str, Any]],
    today: date,
    *,
    conditions: bool = True,
    medications: bool = True,
) -> float | None:
    """diabetes from CDS Hooks prefetch."""
    prefetch = _prefetch(resources, conditions=conditions, medications=medications)
    value = extract(prefetch, today).values.get("diabetes")
    assert value is None or isinstance(value, float)
    return value


def _write(folder: Path, kind: str, resources: list[dict[str, Any]]) -> None:
    lines = [json.dumps(r) + "\n" for r in resources if r["resourceType"] == kind]
    (folder / f"{kind}.ndjson").write_text("".join(lines), encoding="utf-8")


def _training(
    folder: Path,
    resources: list[dict[str, Any]],
    index_date: date,
    *,
    conditions: bool = True,
    medications: bool = True,
    report: BuildReport | None = None,
) -> float | None:
    """diabetes from a FHIR Bulk export (Condition / medication files when complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    patient = {"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1960-01-01"}
    _write(folder, "Patient", [patient])
    _write(folder, "Observation", resources)
    if conditions:
        _write(folder, "Condition", resources)
    if medications:
        for kind in ("MedicationStatement", "MedicationRequest", "Medication"):
            _write(folder, kind, resources)
    table = build_feature_table(folder, index_date=index_date, report=report)
    value = float(table.loc[0, "diabetes"])
    return None if np.isnan(value) else value


@pytest.mark.parametrize(
    ("resources", "expected"), [pytest.param(r, e, id=case) for case, r, e in CASES]
)
def test_training_and_serving_agree(
    tmp_path: Path, resources: list[dict[str, Any]], expected: float
) -> None:
    assert _serving(resources, D) == expected
    assert _training(tmp_path / "bulk", resources, D) == expected


@pytest.mark.parametrize(
    ("resources", "conditions", "medications", "expected"),
    [
        pytest.param([], False, False, None, id="no data at all"),
        pytest.param([_a1c(5.4)], False, True, None, id="normal HbA1c, no diagnoses"),
        pytest.param([_a1c(5.4)], True, False, None, id="normal HbA1c, no medications"),
        pytest.param([_dx("c", onsetDateTime="2019-03-01")], True, False, 1.0,
                     id="a diagnosis shows it without medications"),
        pytest.param([_mr("r", authoredOn="2026-10-01")], False, True, 1.0,
                     id="a drug shows it without diagnoses"),
        pytest.param([_a1c(7.2)], False, False, 1.0, id="a raised HbA1c shows it alone"),
    ],
)  # fmt: skip
def test_no_data_is_unknown_not_no(
    tmp_path: Path,
    resources: list[dict[str, Any]],
    conditions: bool,
    medications: bool,
    expected: float | None,
) -> None:
    assert _serving(resources, D, conditions=conditions, medications=medications) == expected
    found = _training(
        tmp_path / "bulk", resources, D, conditions=conditions, medications=medications
    )
    assert found == expected


def test_serving_a_partial_search_cannot_say_no() -> None:
    """A searchset with a further page may hold the diagnosis on that page."""
    paged = _bundle([_dx("c", "E66.9", ICD10, onsetDateTime="2020-01-01")])
    paged["link"] = [{"relation": "next", "url": "https://ehr.example/fhir?page=2"}]
    empty = _bundle([])
    prefetch: dict[str, dict[str, Any] | None] = {
        "diabetes": paged, "medicationStatements": empty, "medicationRequests": empty,
    }  # fmt: skip
    assert "diabetes" not in extract(prefetch, D).values
    assert extract({**prefetch, "diabetes": empty}, D).values["diabetes"] == 0.0


def test_status_set_after_the_index_date_is_not_read_in_training(tmp_path: Path) -> None:
    """Diabetic at D, resolved in 2027 (perhaps after treatment the model is to inform):
    the 2028 export says ``resolved``. Reading it would leak the future; the dates
    decide, as serving on D would have seen the Condition (active)."""
    exported = _dx("c", status="resolved", onsetDateTime="2019-03-01", meta=AFTER)
    as_on_d = {**exported, "clinicalStatus": _dx("x")["clinicalStatus"], "meta": BEFORE}
    assert _serving([as_on_d], D) == 1.0
    assert _training(tmp_path / "a", [exported], D) == 1.0
    # Once the status is known to hold (an index date after the change), it applies.
    assert _training(tmp_path / "b", [exported], date(2027, 6, 1)) == 0.0
    # Metformin stopped after D without an end date: the order's dates decide.
    stopped = _mr("r", "stopped", authoredOn="2026-10-01", meta=AFTER)
    assert _serving([{**stopped, "status": "active", "meta": BEFORE}], D) == 1.0
    assert _training(tmp_path / "c", [stopped], D) == 1.0
    # An undated Condition changed after D cannot be placed at D: not counted, reported.
    report = BuildReport()
    assert _training(tmp_path / "d", [_dx("c", meta=AFTER)], D, report=report) == 0.0
    assert report.counts() == {"diabetes:condition without onsetDateTime or recordedDate": 1}


def test_rule_functions() -> None:
    dx = diagnosis(_dx("c", status="resolved", onsetDateTime="2019-03-01"))
    assert (dx.reference, dx.diabetes, dx.status) == ("Condition/c", True, "resolved")
    assert diagnosis_counts_at(dx, D, status_read_on=None)  # read later: ignored
    assert not diagnosis_counts_at(dx, D, status_read_on=D)  # read on D: applies
    assert not diagnosis_counts_at(dx, date(2019, 2, 28), status_read_on=None)
    lab = LabResult("hba1c", 6.5, D - timedelta(days=LAB_LOOKBACK_DAYS))
    assert lab_counts_at(lab, D)
    assert not lab_counts_at(lab, D + timedelta(days=1))
    assert not lab_counts_at(LabResult("hba1c", 7.0, D + timedelta(days=1)), D)  # after D
    assert LAB_CUTS["fasting_glucose"] == pytest.approx(6.994, abs=1e-3)
    assert has_diabetes([], [], [], D, status_read_on=D, complete=False).value is None
    assert has_diabetes([], [], [], D, status_read_on=D, complete=True).value == 0.0
    found = has_diabetes([dx], [], [lab], D, status_read_on=None, complete=False)
    assert (found.value, found.reference, found.day) == (1.0, "Condition/c", None)
    assert diagnosed_by([dx], D) == dx  # resolved since: still not at risk of an onset
    assert diagnosed_by([dx], date(2019, 2, 28)) is None
    assert diagnosed_by([diagnosis(_dx("c", meta=BEFORE))], D) is None  # undated
    with pytest.raises(ValueError, match="'Observation' is not Condition"):
        diagnosis({"resourceType": "Observation"})


def test_serving_cites_the_evidence() -> None:
    lab = extract({"hba1c": _bundle([_a1c(7.1)])}, D)
    assert lab.sources["diabetes"] == "Observation/a1c"
    assert lab.dates["diabetes"] == date(2026, 10, 1)  # a result's age is checked
    drug = extract({"medicationRequests": _bundle([_mr("r", authoredOn="2026-10-01")])}, D)
    assert drug.sources["diabetes"] == "MedicationRequest/r"
    assert "diabetes" not in drug.dates


def test_prefetch_asks_for_what_the_rule_can_count() -> None:
    """Every Condition status: the rule reads clinicalStatus itself, and a Condition
    without one counts by its dates, as in training."""
    assert TEMPLATES["diabetes"].startswith("Condition?patient={{context.patientId}}&")
    assert "clinical-status" not in TEMPLATES["diabetes"]
    no_status = _dx("c", "E11.9", ICD10, None, recordedDate="2024-05-02")
    assert _serving([no_status], D) == 1.0


def test_prevalent_exclusion_in_training_is_serving_refusal(tmp_path: Path) -> None:
    """Whom the diabetes model was trained on is whom serving advises: the same rule
    gives serving's ``already-has-outcome`` and training's exclusions (diabetes at the
    index date, ``exclude_prevalent_diabetes``; diagnosed before it, no outcome)."""
    people: dict[str, list[dict[str, Any]]] = {
        "dx": [_dx("c", onsetDateTime="2019-03-01")],
        "metformin": [_mr("r", authoredOn="2026-10-01")],
        "a1c": [_a1c(6.8)],
        "resolved": [_dx("c", status="resolved", onsetDateTime="2015-01-01",
                         abatementDateTime="2016-01-01")],
        "healthy": [_a1c(5.3)],
    }  # fmt: skip
    folder = tmp_path / "bulk"
    folder.mkdir()
    rows: list[dict[str, Any]] = []
    for pid, resources in people.items():
        rows.append({"resourceType": "Patient", "id": pid, "gender": "male",
                     "birthDate": "1970-01-01"})  # fmt: skip
        rows += [{**r, "id": f"{pid}-{r['id']}", "subject": {"reference": f"Patient/{pid}"}}
                 for r in resources]  # fmt: skip
        # Seen again three years on (follow-up), with the BMI the config requires.
        rows.append(
            {
                **_lab(f"{pid}-bmi", "39156-5", 24.0, "kg/m2", "2026-09-01"),
                "subject": {"reference": f"Patient/{pid}"},
            }
        )
        rows.append({**_lab(f"{pid}-late", "39156-5", 25.0, "kg/m2", "2029-11-25"),
                     "subject": {"reference": f"Patient/{pid}"}})  # fmt: skip
    for kind in ("Patient", "Condition", "MedicationRequest", "Observation"):
        _write(folder, kind, rows)
    table = build_feature_table(folder, index_date=D).set_index("patient_id")
    refused = set()
    for pid, resources in people.items():
        found = extract(_prefetch(resources), D)
        if already_has_outcome("diabetes", found.values, found.prior):
            refused.add(pid)
    assert refused == {"dx", "metformin", "a1c", "resolved"}
    assert set(table.index[table["diabetes"] == 1.0]) == refused - {"resolved"}
    assert np.isnan(table.loc["resolved", "diabetes_event"])  # had it: no onset to predict
    # training.ncd_table leaves exactly those out of the diabetes-risk cohort.
    cfg = load_config(CONFIG / "diabetes-risk.yaml", NcdTrainConfig)
    kept = check_table(table.reset_index(), cfg, lambda _: None)
    assert set(kept["patient_id"]) == set(people) - refused == {"healthy"}
