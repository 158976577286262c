"""A chest X-ray result as FHIR R4: DiagnosticReport + one Observation per finding.

The bundle (type ``collection``) holds the ``Device`` (the model: name, version,
sha256 identifier), one ``Observation`` per label (probability, threshold applied
and its source, flag), and the ``DiagnosticReport`` that references them, the
``ImagingStudy`` (by Study Instance UID) and the heatmap as ``presentedForm``.
Everything is validated with ``fhir.resources.R4B`` before it leaves.
"""

from __future__ import annotations

import re
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from serving.fhir_in import FHIR_ID
from serving.imaging.results import CxrResult

__all__ = ["LABEL_SYSTEM", "result_bundle"]

LABEL_SYSTEM = "urn:tonle:cxr-triage:label"
_SHA256_SYSTEM = "urn:tonle:model-sha256"
_DICOM_UID = "urn:dicom:uid"
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_LABEL_TEXT = {
    "abnormal": "Chest X-ray abnormality (AI triage)",
    "tb": "Findings consistent with tuberculosis (AI triage)",
    "nodule": "Pulmonary nodule (AI triage)",
    "consolidation": "Consolidation (AI triage)",
    "effusion": "Pleural effusion (AI triage)",
}


def _subject(result: CxrResult) -> dict[str, Any] | None:
    """``Patient/<id>`` only for a valid FHIR id; any other patient identifier (a DICOM
    PatientID such as ``../Patient/x`` or ``12/345``) is a logical reference by
    identifier, never pasted into a reference path."""
    if not result.patient_ref:
        return None
    ref = result.patient_ref.removeprefix("Patient/")
    if re.fullmatch(FHIR_ID, ref):
        return {"reference": f"Patient/{ref}"}
    return {"identifier": {"value": result.patient_ref}}


def result_bundle(result: CxrResult, base_url: str = "") -> Bundle:
    """The FHIR collection bundle for one stored result.

    Args:
        result: a stored chest X-ray result.
        base_url: public base URL, to make the heatmap link absolute.

    Returns:
        A validated R4B ``Bundle``.
    """
    device_id = f"device-{result.model.name}-{result.model.version}".replace(".", "-")
    device = {
        "resourceType": "Device",
        "id": device_id,
        "identifier": [{"system": _SHA256_SYSTEM, "value": result.model.sha256}],
        "deviceName": [{"name": result.model.name, "type": "model-name"}],
        "version": [{"value": result.model.version}],
        "manufacturer": "Tonle",
        "note": [{"text": result.advisory}],
    }
    subject = _subject(result)
    observations: list[dict[str, Any]] = []
    for finding in result.findings:
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "id": f"{result.id}-{finding.label}",
            "status": "preliminary",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "imaging",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [{"system": LABEL_SYSTEM, "code": finding.label}],
                "text": _LABEL_TEXT.get(finding.label, finding.label),
            },
            "issued": result.created.isoformat(),
            "valueQuantity": {
                "value": round(finding.probability, 6),
                "unit": "probability",
                "system": "http://unitsofmeasure.org",
                "code": "1",
            },
            "interpretation": [
                {
                    "coding": [
                        {
                            "system": _INTERPRETATION,
                            "code": "POS" if finding.flagged else "NEG",
                        }
                    ],
                    "text": (
                        f"{'at or above' if finding.flagged else 'below'} threshold "
                        f"{finding.threshold:g} ({finding.threshold_source}: "
                        f"{finding.threshold_chosen_on})"
                    ),
                }
            ],
            "device": {"reference": f"Device/{device_id}"},
            "note": [{"text": result.advisory}],
        }
        if subject:
            obs["subject"] = subject
        observations.append(obs)
    flagged = ", ".join(result.flagged) or "none"
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": result.id,
        "status": "preliminary",
        "category": [
            {
                "coding": [
                    {"system": "http://loinc.org", "code": "LP29684-5", "display": "Radiology"}
                ]
            }
        ],
        "code": {
            "coding": [
                {
                    "system": "http://loinc.org",
                    "code": "18748-4",
                    "display": "Diagnostic imaging study",
                }
            ],
            "text": "AI chest X-ray triage (advisory)",
        },
        "issued": result.created.isoformat(),
        "performer": [{"reference": f"Device/{device_id}", "display": "Tonle AI (unverified)"}],
        "result": [{"reference": f"Observation/{obs['id']}"} for obs in observations],
        "conclusion": f"{result.advisory} Flagged: {flagged}.",
        "presentedForm": [
            {
                "contentType": "image/png",
                "url": f"{base_url.rstrip('/')}{result.heatmap_url}",
                "title": f"Activation map for {result.heatmap_label}",
            }
        ],
    }
    if subject:
        report["subject"] = subject
    if result.study.study_uid:
        report["imagingStudy"] = [
            {
                "identifier": {"system": _DICOM_UID, "value": f"urn:oid:{result.study.study_uid}"},
                "display": "Analysed chest X-ray study",
            }
        ]
    entries = [device, *observations, report]
    return Bundle.model_validate(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "timestamp": result.created.isoformat(),
            "entry": [{"fullUrl": f"urn:uuid:{_urn(r)}", "resource": r} for r in entries],
        }
    )


def _urn(resource: dict[str, Any]) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{resource['resourceType']}/{resource['id']}"))
