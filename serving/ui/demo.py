"""The demo EHR's synthetic patients, as FHIR R4 resources, and its tiny FHIR search.

A real EHR answers a CDS service's prefetch templates from its own FHIR store; the
demo EHR does the same over the synthetic patients in ``demo_patients.json`` (dates
are days before today, so the demo data never go stale). :func:`prefetch` evaluates
the templates a service advertises in discovery (``Patient/{{context.patientId}}``,
``Observation?patient=...&code=system|code,...&_sort=-date&_count=1``,
``Condition?patient=...``): the same requests Tonle would send to a FHIR server.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DemoPatient", "fhir_resources", "patient", "patients", "prefetch", "search"]

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ATC = "http://www.whocc.no/atc"
# feature -> (LOINC code, display, UCUM unit)
_OBSERVATIONS: dict[str, tuple[str, str, str]] = {
    "sbp": ("8480-6", "Systolic blood pressure", "mm[Hg]"),
    "dbp": ("8462-4", "Diastolic blood pressure", "mm[Hg]"),
    "total_chol": ("2093-3", "Cholesterol [Moles/volume] in Serum or Plasma", "mmol/L"),
    "hdl": ("2085-9", "HDL cholesterol [Moles/volume] in Serum or Plasma", "mmol/L"),
    "hba1c": ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%"),
    "bmi": ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2"),
}
_SMOKING = {
    "current": ("77176002", "Smoker"),
    "former": ("8517006", "Ex-smoker"),
    "never": ("266919005", "Never smoked tobacco"),
}


class DemoPatient(BaseModel):
    """One synthetic patient (compact form; see the JSON file's ``_about``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    name_km: str
    sex: str
    age: int
    site: str
    obs: dict[str, tuple[float | str, int]] = Field(description="name -> (value, days ago).")
    diabetes: tuple[bool, int]
    meds: list[tuple[str, str, int]] = Field(
        default_factory=list, description="Active drugs: (ATC code, display, days since started)."
    )
    note: str = ""
    xray: str | None = None


@cache
def patients() -> tuple[DemoPatient, ...]:
    """The demo cohort."""
    raw = json.loads(
        resources.files(__package__ or "serving.ui")
        .joinpath("demo_patients.json")
        .read_text(encoding="utf-8")
    )
    return tuple(DemoPatient.model_validate(p) for p in raw["patients"])


def patient(patient_id: str) -> DemoPatient:
    """One demo patient.

    Raises:
        KeyError: no demo patient with that id.
    """
    for p in patients():
        if p.id == patient_id:
            return p
    raise KeyError(patient_id)


def _birth_date(p: DemoPatient, today: date) -> date:
    # Half a year before the birthday, so the age in years is exactly p.age today.
    return (today - timedelta(days=round(365.25 * (p.age + 0.5)))).replace(day=1)


def fhir_resources(p: DemoPatient, today: date | None = None) -> list[dict[str, Any]]:
    """The patient's Patient, Observation, Condition and MedicationStatement resources."""
    today = today or datetime.now(UTC).date()
    family, given = p.name.split(" ", 1)
    out: list[dict[str, Any]] = [
        {
            "resourceType": "Patient",
            "id": p.id,
            "name": [{"family": family, "given": [given], "text": p.name}],
            "gender": p.sex,
            "birthDate": _birth_date(p, today).isoformat(),
        }
    ]
    subject = {"reference": f"Patient/{p.id}"}
    for name, (value, days) in p.obs.items():
        when = (today - timedelta(days=days)).isoformat()
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "id": f"{p.id}-{name.replace('_', '-')}",  # a FHIR id has no "_"
            "status": "final",
            "subject": subject,
            "effectiveDateTime": when,
        }
        if name == "smoking":
            code, display = _SMOKING[str(value)]
            obs["code"] = {"coding": [{"system": LOINC, "code": "72166-2"}]}
            obs["valueCodeableConcept"] = {
                "coding": [{"system": SNOMED, "code": code, "display": display}]
            }
        else:
            loinc, display, unit = _OBSERVATIONS[name]
            obs["code"] = {"coding": [{"system": LOINC, "code": loinc, "display": display}]}
            obs["valueQuantity"] = {
                "value": float(value),
                "unit": unit,
                "system": "http://unitsofmeasure.org",
                "code": unit,
            }
        out.append(obs)
    has_diabetes, days = p.diabetes
    if has_diabetes:
        out.append(
            {
                "resourceType": "Condition",
                "id": f"{p.id}-diabetes",
                "subject": subject,
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {
                    "coding": [{"system": SNOMED, "code": "44054006", "display": "Type 2 diabetes"}]
                },
                "onsetDateTime": (today - timedelta(days=days)).isoformat(),
            }
        )
    for i, (atc, display, days) in enumerate(p.meds):
        out.append(
            {
                "resourceType": "MedicationStatement",
                "id": f"{p.id}-med-{i}",
                "status": "active",
                "subject": subject,
                "medicationCodeableConcept": {
                    "coding": [{"system": ATC, "code": atc, "display": display}],
                    "text": display,
                },
                "effectivePeriod": {"start": (today - timedelta(days=days)).isoformat()},
            }
        )
    return out


def _codes_match(resource: dict[str, Any], wanted: list[tuple[str | None, str]]) -> bool:
    for coding in resource.get("code", {}).get("coding", []):
        for system, code in wanted:
            if coding.get("code") == code and system in (None, coding.get("system")):
                return True
    return False


def search(p: DemoPatient, query: str, today: date | None = None) -> dict[str, Any] | None:
    """Answer one FHIR read or search over a demo patient's resources.

    Supports ``Type/id`` reads and ``Type?patient=&subject=&code=&_sort=-date&_count=``
    searches; other parameters are ignored (as a lenient server would).

    Returns:
        The resource, a ``searchset`` Bundle, or None for a read of another patient.
    """
    resources_ = fhir_resources(p, today)
    if "?" not in query:
        kind, _, rid = query.partition("/")
        found = [r for r in resources_ if r["resourceType"] == kind and r["id"] == rid]
        return found[0] if found else None
    kind, _, params_text = query.partition("?")
    params = dict(parse_qsl(params_text, keep_blank_values=True))
    matches = [r for r in resources_ if r["resourceType"] == kind]
    who = params.get("patient") or params.get("subject")
    if who is not None and who.removeprefix("Patient/") != p.id:
        matches = []
    if "code" in params:
        wanted: list[tuple[str | None, str]] = []
        for item in params["code"].split(","):
            system, bar, code = item.partition("|")
            wanted.append((system or None, code) if bar else (None, system))
        matches = [r for r in matches if _codes_match(r, wanted)]
    if params.get("_sort", "").lstrip("-") == "date":
        matches.sort(
            key=lambda r: r.get("effectiveDateTime", r.get("onsetDateTime", "")),
            reverse=params["_sort"].startswith("-"),
        )
    if params.get("_count", "").isdigit():
        matches = matches[: int(params["_count"])]
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(matches),
        "entry": [
            {"fullUrl": f"urn:demo:{r['resourceType']}/{r['id']}", "resource": r} for r in matches
        ],
    }


def prefetch(
    p: DemoPatient, templates: dict[str, str], today: date | None = None
) -> dict[str, dict[str, Any] | None]:
    """Fill a service's prefetch templates for a demo patient, as an EHR would."""
    out: dict[str, dict[str, Any] | None] = {}
    for key, template in templates.items():
        query = template.replace("{{context.patientId}}", p.id).replace(
            "{{context.userId}}", "Practitioner/demo-clinician"
        )
        out[key] = search(p, query, today)
    return out
