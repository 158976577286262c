"""FHIR medication resources for the tests of the shared feature rules
(``models.bp_treatment``, ``models.diabetes_status``); each test file binds its own
default drug with :func:`functools.partial`."""

from __future__ import annotations

from typing import Any

ATC = "http://www.whocc.no/atc"


def drug(code: str, system: str = ATC) -> dict[str, Any]:
    """A CodeableConcept with one coding (ATC unless ``system`` says otherwise)."""
    return {"coding": [{"system": system, "code": code}]}


def statement(rid: str, status: str = "active", *, code: str, **extra: Any) -> dict[str, Any]:
    """A MedicationStatement of patient p1 for the drug ``code``."""
    return {
        "resourceType": "MedicationStatement", "id": rid, "status": status,
        "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": drug(code),
        **extra,
    }  # fmt: skip


def request(
    rid: str, status: str = "active", *, code: str, intent: str = "order", **extra: Any
) -> dict[str, Any]:
    """A MedicationRequest of patient p1 for the drug ``code``."""
    return {
        "resourceType": "MedicationRequest", "id": rid, "status": status, "intent": intent,
        "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": drug(code),
        **extra,
    }  # fmt: skip
