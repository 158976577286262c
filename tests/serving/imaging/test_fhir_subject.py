"""A DICOM PatientID never becomes a FHIR reference path (``Patient/../Patient/x``)."""

from __future__ import annotations

import pytest

from serving.imaging.fhir import result_bundle
from tests.serving.imaging.results_fixtures import make_result


def _subject(patient: str) -> dict[str, object]:
    bundle = result_bundle(make_result(patient=patient)).model_dump(mode="json")
    report = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DiagnosticReport"
    )
    subject: dict[str, object] = report["subject"]
    return subject


@pytest.mark.parametrize("patient", ["P-1", "Patient/P-1", "abc.123"])
def test_fhir_ids_are_references(patient: str) -> None:
    assert _subject(patient) == {"reference": f"Patient/{patient.removeprefix('Patient/')}"}


@pytest.mark.parametrize("patient", ["../Patient/x", "Patient/../x", "12/345", "A B", "x" * 65])
def test_other_patient_ids_are_identifiers(patient: str) -> None:
    subject = _subject(patient)
    assert "reference" not in subject
    assert subject["identifier"] == {"value": patient}
