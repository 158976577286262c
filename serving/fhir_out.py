"""FHIR R4 resources Tonle writes: RiskAssessment, the model's Device, and Provenance.

Built as plain JSON (they travel inside CDS Hooks actions and REST answers); the
tests validate every shape with the ``fhir.resources.R4B`` models.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any, Literal

from models.metadata import ModelMetadata
from serving.assess import Advice
from serving.protocol import Proposal, ProtocolRow
from serving.synthetic import DEMO_NOTE, trained_on_synthetic

__all__ = [
    "ADVISORY_NOTE",
    "OUTCOME_TEXT",
    "device",
    "device_id",
    "follow_up_task",
    "proposal_resource",
    "provenance",
    "risk_assessment",
]

ADVISORY_NOTE = (
    "Advisory, not a diagnosis: produced by a machine-learning model; verify clinically."
)
OUTCOME_TEXT = {
    "cvd": "Fatal or non-fatal myocardial infarction or stroke within 10 years",
    "diabetes": "Type 2 diabetes within 10 years",
}
_OUTCOME_SNOMED = {
    "cvd": ("49601007", "Disorder of cardiovascular system"),
    "diabetes": ("44054006", "Diabetes mellitus type 2"),
}
_TONLE_MODEL_SYSTEM = "urn:tonle:model"
_SHA256_SYSTEM = "urn:tonle:model-sha256"
_UCUM = "http://unitsofmeasure.org"


def device_id(meta: ModelMetadata) -> str:
    """A stable FHIR id for a model version, e.g. ``tonle-cvd-risk-1.0.0``."""
    return f"tonle-{meta.name}-{meta.version}".replace("+", "-")[:64]


def device(meta: ModelMetadata) -> dict[str, Any]:
    """The FHIR ``Device`` for one model version (sha256 as identifier)."""
    return {
        "resourceType": "Device",
        "id": device_id(meta),
        "identifier": [
            {"system": _TONLE_MODEL_SYSTEM, "value": meta.tag},
            {"system": _SHA256_SYSTEM, "value": meta.sha256},
        ],
        "status": "active",
        "manufacturer": "Tonle (open source)",
        "deviceName": [{"name": f"Tonle {meta.name}", "type": "model-name"}],
        "type": {"text": "Software: machine-learning risk model (advisory)"},
        "version": [{"value": meta.version}],
        "note": _notes(meta),
    }


def _notes(meta: ModelMetadata) -> list[dict[str, str]]:
    """The advisory note, and the demo note first for a synthetic-trained model."""
    demo = [{"text": DEMO_NOTE}] if trained_on_synthetic(meta) else []
    return [*demo, {"text": ADVISORY_NOTE}]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def risk_assessment(
    advice: Advice,
    *,
    resource_id: str,
    patient_id: str,
    encounter_id: str | None = None,
    lead: Literal["chart", "model", "none"] = "model",
) -> dict[str, Any]:
    """A ``RiskAssessment`` of the leading estimate, with Tonle's ``Device`` as performer.

    ``lead="chart"`` records the WHO chart cell the patient falls in (method: the WHO
    2019 chart); otherwise the model's estimate. ``basis`` lists the Observations (and
    Conditions) the values came from.
    """
    meta = advice.metadata
    cell = advice.who_cell if lead == "chart" else None
    code, display = _OUTCOME_SNOMED.get(advice.outcome, ("", advice.outcome))
    outcome: dict[str, Any] = {"text": OUTCOME_TEXT.get(advice.outcome, advice.outcome)}
    if code:
        outcome["coding"] = [{"system": "http://snomed.info/sct", "code": code, "display": display}]
    resource: dict[str, Any] = {
        "resourceType": "RiskAssessment",
        "id": resource_id,
        "contained": [device(meta)],
        "status": "preliminary",
        "method": {
            "coding": [{"system": _TONLE_MODEL_SYSTEM, "code": meta.tag}],
            "text": f"Tonle {meta.name} {meta.version} (ONNX, sha256 {meta.sha256[:12]})",
        }
        if cell is None
        else {"text": f"WHO 2019 CVD risk chart ({advice.who.model if advice.who else ''})"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "occurrenceDateTime": _now(),
        "performer": {"reference": f"#{device_id(meta)}", "display": f"Tonle {meta.tag}"},
        "prediction": [
            {
                "outcome": outcome,
                "probabilityDecimal": round(advice.risk, 4)
                if cell is None
                else cell.percent / 100.0,
                "qualitativeRisk": {"text": advice.band if cell is None else cell.band},
                "whenRange": {
                    "low": {"value": 0, "unit": "years", "system": _UCUM, "code": "a"},
                    "high": {"value": 10, "unit": "years", "system": _UCUM, "code": "a"},
                },
            }
        ],
        "note": _notes(meta),
    }
    if encounter_id:
        resource["encounter"] = {"reference": f"Encounter/{encounter_id}"}
    basis = sorted(set(advice.sources.values()))
    if basis:
        resource["basis"] = [{"reference": ref} for ref in basis]
    return resource


def provenance(advice: Advice, *, target_id: str, resource_id: str) -> dict[str, Any]:
    """A ``Provenance`` saying the model (as a Device) made the RiskAssessment from its basis."""
    meta = advice.metadata
    result: dict[str, Any] = {
        "resourceType": "Provenance",
        "id": resource_id,
        "contained": [device(meta)],
        "target": [{"reference": f"RiskAssessment/{target_id}"}],
        "recorded": _now(),
        "activity": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                    "code": "CREATE",
                }
            ]
        },
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "assembler",
                        }
                    ]
                },
                "who": {"reference": f"#{device_id(meta)}", "display": f"Tonle {meta.tag}"},
            }
        ],
    }
    basis = sorted(set(advice.sources.values()))
    if basis:
        result["entity"] = [{"role": "source", "what": {"reference": ref}} for ref in basis]
    return result


def _rule_note(rows: list[ProtocolRow], version: str) -> list[dict[str, str]]:
    cited = "; ".join(f"{row.id} ({row.source.document}: {row.source.section})" for row in rows)
    return [{"text": f"Proposed by Tonle protocol {version}, rule {cited}. {ADVISORY_NOTE}"}]


def proposal_resource(
    proposal: Proposal,
    row: ProtocolRow,
    *,
    version: str,
    lang: str,
    patient_id: str,
    encounter_id: str | None,
) -> dict[str, Any]:
    """A draft ``MedicationRequest`` or ``ServiceRequest`` (intent ``proposal``) for one
    protocol proposal, naming the rule that proposed it."""
    concept: dict[str, Any] = {"text": proposal.text.get(lang)}
    if proposal.system and proposal.code:
        concept["coding"] = [{"system": proposal.system, "code": proposal.code}]
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest" if proposal.kind == "medication" else "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "subject": {"reference": f"Patient/{patient_id}"},
        "note": _rule_note([row], version),
    }
    if proposal.kind == "medication":
        resource["medicationCodeableConcept"] = concept
    else:
        resource["code"] = concept
    if encounter_id:
        resource["encounter"] = {"reference": f"Encounter/{encounter_id}"}
    return resource


def follow_up_task(
    months: int,
    rows: list[ProtocolRow],
    *,
    version: str,
    description: str,
    patient_id: str,
    today: date,
) -> dict[str, Any]:
    """A draft follow-up ``Task`` (intent ``proposal``) due within ``months``."""
    month = today.month - 1 + months
    year, month = today.year + month // 12, month % 12 + 1
    due = date(year, month, min(today.day, 28))
    return {
        "resourceType": "Task",
        "status": "draft",
        "intent": "proposal",
        "priority": "routine",
        "description": description,
        "for": {"reference": f"Patient/{patient_id}"},
        "authoredOn": _now(),
        "restriction": {"period": {"end": due.isoformat()}},
        "note": _rule_note(rows, version),
    }
