"""``bp_treated``: one rule (models.bp_treatment), the same value from a FHIR Bulk export
at the index date (training.fhir_bulk) and from CDS Hooks prefetch on that day
(serving.fhir_in), and point-in-time correctness where a Bulk status is from later."""

from __future__ import annotations

import json
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.bp_treatment import RECENT_DAYS, bp_treated, counts_at, medication_use
from serving.fhir_in import extract
from serving.prefetch import TEMPLATES
from tests.models.medication_fixtures import drug, request, statement
from training.fhir_bulk import BuildReport, build_feature_table

D = date(2026, 11, 25)  # the index date; serving's "today"
_drug = drug
_ms = partial(statement, code="C08CA01")  # amlodipine
_mr = partial(request, code="C09AA05")  # ramipril


def _by_reference(resource: dict[str, Any], reference: str) -> dict[str, Any]:
    out = {k: v for k, v in resource.items() if k != "medicationCodeableConcept"}
    return {**out, "medicationReference": {"reference": reference}}


BEFORE = {"lastUpdated": "2026-02-01T09:30:00Z"}  # the status was set before D
AMLODIPINE = {"resourceType": "Medication", "id": "m1", "code": _drug("C08CA01")}

# (case, resources, expected at D). Every case goes through training and serving.
CASES: list[tuple[str, list[dict[str, Any]], float]] = [
    ("statement ongoing", [_ms("s", effectivePeriod={"start": "2019-03-01"})], 1.0),
    ("statement period covers D",
     [_ms("s", effectivePeriod={"start": "2026-01-01", "end": "2026-12-31"})], 1.0),
    ("statement period ended before D",
     [_ms("s", effectivePeriod={"start": "2025-01-01", "end": "2026-11-24"})], 0.0),
    ("statement taken 11 months ago", [_ms("s", effectiveDateTime="2025-12-20")], 1.0),
    ("statement asserted, no effective", [_ms("s", dateAsserted="2026-09-01T10:00:00+07:00")],
     1.0),
    ("statement over a year old", [_ms("s", effectiveDateTime="2025-11-01")], 0.0),
    ("order 8 weeks old", [_mr("r", authoredOn="2026-10-01")], 1.0),
    ("order exactly RECENT_DAYS old", [_mr("r", authoredOn="2025-11-25")], 1.0),
    ("order a day too old", [_mr("r", authoredOn="2025-11-24")], 0.0),
    ("old order, validity covers D",
     [_mr("r", authoredOn="2024-01-01",
          dispenseRequest={"validityPeriod": {"start": "2024-01-01", "end": "2027-01-01"}})],
     1.0),
    ("old order, validity ended",
     [_mr("r", authoredOn="2024-01-01",
          dispenseRequest={"validityPeriod": {"start": "2024-01-01", "end": "2025-01-01"}})],
     0.0),
    ("future-dated order", [_mr("r", authoredOn="2026-11-26")], 0.0),
    ("future-dated statement", [_ms("s", effectivePeriod={"start": "2027-01-01"})], 0.0),
    ("no date at all", [_mr("r")], 0.0),
    ("entered-in-error", [_ms("s", "entered-in-error", effectiveDateTime="2026-11-01")], 0.0),
    ("stopped before D",
     [_ms("s", "stopped", effectivePeriod={"start": "2024-01-01"}, meta=BEFORE)], 0.0),
    ("completed before D", [_mr("r", "completed", authoredOn="2026-01-10", meta=BEFORE)], 0.0),
    ("cancelled before D", [_mr("r", "cancelled", authoredOn="2026-01-10", meta=BEFORE)], 0.0),
    ("on hold at D", [_mr("r", "on-hold", authoredOn="2026-01-10", meta=BEFORE)], 0.0),
    ("active, last changed before D", [_mr("r", authoredOn="2026-01-10", meta=BEFORE)], 1.0),
    ("a proposal is no order", [_mr("r", intent="proposal", authoredOn="2026-11-01")], 0.0),
    ("not a BP drug (metformin)", [_mr("r", code="A10BA02", authoredOn="2026-11-01")], 0.0),
    ("RxNorm only (not mapped)",
     [_mr("r", authoredOn="2026-11-01",
          medicationCodeableConcept=_drug("197361", "http://www.nlm.nih.gov/research/umls/rxnorm"))],
     0.0),
    ("lower-case ATC", [_mr("r", code="c03aa03", authoredOn="2026-11-01")], 1.0),
    ("included Medication",
     [_by_reference(_mr("r", authoredOn="2026-11-01"), "Medication/m1"), AMLODIPINE], 1.0),
    ("contained Medication",
     [_by_reference(_ms("s", effectiveDateTime="2026-11-01",
                        contained=[{**AMLODIPINE, "id": "c1"}]), "#c1")], 1.0),
    ("dangling reference",
     [_by_reference(_mr("r", authoredOn="2026-11-01"), "Medication/nowhere")], 0.0),
    ("one stopped, one current",
     [_ms("s", "stopped", effectiveDateTime="2026-06-01", meta=BEFORE),
      _mr("r", authoredOn="2026-11-20")], 1.0),
]  # fmt: skip


def _serving(resources: list[dict[str, Any]] | None, today: date) -> float | None:
    """bp_treated from CDS Hooks prefetch, both medication searches answered."""
    if resources is None:
        value = extract({}, today).values.get("bp_treated")
    else:
        meds = [r for r in resources if r["resourceType"] == "Medication"]

        def bundle(kind: str) -> dict[str, Any]:
            found = [r for r in resources if r["resourceType"] == kind] + meds
            return {"resourceType": "Bundle", "type": "searchset",
                    "entry": [{"resource": r} for r in found]}  # fmt: skip

        prefetch: dict[str, dict[str, Any] | None] = {
            "medicationStatements": bundle("MedicationStatement"),
            "medicationRequests": bundle("MedicationRequest"),
        }
        value = extract(prefetch, today).values.get("bp_treated")
    assert value is None or isinstance(value, float)
    return value


def _training(
    folder: Path, resources: list[dict[str, Any]] | None, index_date: date
) -> float | None:
    """bp_treated from a FHIR Bulk export (both medication files when there are meds)."""
    folder.mkdir(parents=True, exist_ok=True)
    patient = {"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1960-01-01"}
    (folder / "Patient.ndjson").write_text(json.dumps(patient) + "\n", encoding="utf-8")
    if resources is not None:
        for kind in ("MedicationStatement", "MedicationRequest", "Medication"):
            lines = [json.dumps(r) + "\n" for r in resources if r["resourceType"] == kind]
            (folder / f"{kind}.ndjson").write_text("".join(lines), encoding="utf-8")
    table = build_feature_table(folder, index_date=index_date)
    value = float(table.loc[0, "bp_treated"])
    return None if np.isnan(value) else value


@pytest.mark.parametrize(
    ("resources", "expected"),
    [pytest.param(r, e, id=case) for case, r, e in CASES]
    + [pytest.param(None, None, id="no medication data: unknown, not 0")],
)
def test_training_and_serving_agree(
    tmp_path: Path, resources: list[dict[str, Any]] | None, expected: float | None
) -> None:
    assert _serving(resources, D) == expected
    assert _training(tmp_path / "bulk", resources, D) == expected


def test_status_set_after_the_index_date_is_not_read_in_training(tmp_path: Path) -> None:
    """On amlodipine at D, stopped in 2027 without an end date (perhaps because of the
    outcome): the 2028 export says ``stopped``. Reading that status would leak the
    future; the dates decide, as serving on D would have seen the record (active)."""
    exported = _ms("s", "stopped", effectivePeriod={"start": "2024-01-01"},
                   meta={"lastUpdated": "2027-03-01T08:00:00Z"})  # fmt: skip
    as_on_d = {**exported, "status": "active", "meta": BEFORE}
    assert _serving([as_on_d], D) == 1.0
    assert _training(tmp_path / "a", [exported], D) == 1.0
    # Once the status is known to hold (an index date after the change), it applies.
    assert _training(tmp_path / "b", [exported], date(2027, 6, 1)) == 0.0
    # Without meta.lastUpdated the status cannot be placed in time at all.
    undated = {k: v for k, v in exported.items() if k != "meta"}
    assert _training(tmp_path / "c", [undated], D) == 1.0
    # entered-in-error is void whenever it was set: the record never described the patient.
    wrong = {**exported, "status": "entered-in-error"}
    assert _training(tmp_path / "d", [wrong], D) == 0.0


def test_training_index_dates_per_patient_and_issues(tmp_path: Path) -> None:
    """One export, two index dates: the same order counts only at the one it covers;
    a BP drug record without any date is reported, not silently dropped."""
    folder = tmp_path / "bulk"
    folder.mkdir()
    patients = [
        {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1965-05-05"}
        for pid in ("p1", "p2")
    ]
    (folder / "Patient.ndjson").write_text(
        "".join(json.dumps(p) + "\n" for p in patients), encoding="utf-8"
    )
    orders = [
        _mr("r1", authoredOn="2020-06-01"),
        {**_mr("r2", authoredOn="2020-06-01"), "subject": {"reference": "Patient/p2"}},
        {**_mr("r3"), "subject": {"reference": "Patient/p2"}},  # no date
    ]
    (folder / "MedicationRequest.ndjson").write_text(
        "".join(json.dumps(o) + "\n" for o in orders), encoding="utf-8"
    )
    report = BuildReport()
    table = build_feature_table(
        folder, index_date={"p1": date(2020, 7, 1), "p2": date(2022, 7, 1)}, report=report
    ).set_index("patient_id")
    assert table.loc["p1", "bp_treated"] == 1.0
    assert table.loc["p2", "bp_treated"] == 0.0  # two years on, no renewal
    assert report.counts() == {"bp_treated:medication record without a start date": 1}


def test_counts_at_is_the_rule_both_paths_call() -> None:
    use = medication_use(_mr("r", authoredOn="2026-01-01"))
    assert use.reference == "MedicationRequest/r"
    assert counts_at(use, date(2026, 1, 1), status_read_on=None)
    assert counts_at(use, date(2027, 1, 1), status_read_on=None)  # RECENT_DAYS later
    assert not counts_at(use, date(2027, 1, 2), status_read_on=None)
    assert not counts_at(use, date(2025, 12, 31), status_read_on=None)  # not yet written
    stopped = medication_use(_mr("r", "stopped", authoredOn="2026-01-01"))
    assert counts_at(stopped, date(2026, 2, 1), status_read_on=None)  # read later: ignored
    assert not counts_at(stopped, date(2026, 2, 1), status_read_on=date(2026, 2, 1))
    assert RECENT_DAYS == 365
    assert bp_treated([], D, status_read_on=D, complete=False) == (None, None)
    assert bp_treated([], D, status_read_on=D, complete=True) == (0.0, None)
    with pytest.raises(ValueError, match="'Observation' is not one of"):
        medication_use({"resourceType": "Observation"})


def test_prefetch_asks_for_what_the_rule_can_count() -> None:
    """Read today, a status other than active never counts, so the templates may ask
    for active records only; the dates are judged after the search (templates cannot
    do date arithmetic). The referenced Medication comes with the search."""
    for key, kind in (("medicationStatements", "MedicationStatement"),
                      ("medicationRequests", "MedicationRequest")):  # fmt: skip
        assert TEMPLATES[key].startswith(f"{kind}?patient={{{{context.patientId}}}}&")
        assert "&status=active&" in TEMPLATES[key]
        assert f"_include={kind}:medication" in TEMPLATES[key]
    for status in ("stopped", "completed", "cancelled", "on-hold", "draft", "unknown"):
        assert _serving([_mr("r", status, authoredOn="2026-11-01")], D) == 0.0
