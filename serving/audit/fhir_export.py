"""Audit rows as FHIR R4 ``AuditEvent`` resources, following IHE Basic Audit Log Patterns.

Each row becomes one event: the calling EHR is the requesting agent (source role),
Tonle the destination agent and the observer; the patient, the model (by sha256) and
the request (with hook instance, card ids and input hash) are the entities. Its
purpose is treatment, except for the operators' reads of the service's own figures
(:data:`~serving.audit.records.OPERATOR_SERVICES`): system administration.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from serving.audit.records import OPERATOR_SERVICES, AuditRecord

__all__ = ["audit_event", "write_ndjson"]

_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_OUTCOME = {
    "advice": "0",
    "no-advice": "0",
    "read": "0",
    "discovery": "0",
    "feedback": "0",
    "refused": "4",
    "error": "8",
}
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
_TREATMENT = {"system": _ACT_REASON, "code": "TREAT", "display": "treatment"}
_SYSTEM_ADMINISTRATION = {
    "system": _ACT_REASON,
    "code": "HSYSADMIN",
    "display": "health system administration",
}


def _system_object() -> dict[str, str]:
    return {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"}


def _detail(name: str, value: str | None) -> list[dict[str, str]]:
    return [] if value in (None, "") else [{"type": name, "valueString": str(value)}]


def audit_event(row: AuditRecord) -> dict[str, Any]:
    """One audit row as a FHIR R4 ``AuditEvent`` (a JSON-ready dict)."""
    event_id = (
        row.request_id
        if _FHIR_ID.fullmatch(row.request_id)
        else hashlib.sha256(row.request_id.encode()).hexdigest()[:64]
    )
    requester: dict[str, Any] = {
        "type": {"coding": [{"system": _DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": {
            "identifier": {
                "system": row.caller_iss or "urn:tonle:unauthenticated",
                "value": row.caller_sub or "unknown",
            }
        },
        "requestor": True,
    }
    entities: list[dict[str, Any]] = []
    if row.patient_ref:
        entities.append(
            {
                "what": {"reference": row.patient_ref},
                "type": {"system": _ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": _OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    if row.model_name:
        entities.append(
            {
                "what": {
                    "identifier": {"system": "urn:tonle:model-sha256", "value": row.model_sha256}
                    if row.model_sha256
                    else None,
                    "display": f"{row.model_name} {row.model_version or ''}".strip(),
                },
                "type": _system_object(),
                "name": f"{row.model_name}:{row.model_version or 'unknown'}",
                "description": "model that produced the advice",
            }
        )
    operator = row.service_id in OPERATOR_SERVICES
    entities.append(
        {
            "what": {"identifier": {"system": "urn:tonle:request-id", "value": row.request_id}},
            "type": _system_object(),
            "description": f"{'operator' if operator else 'CDS'} request to {row.service_id}",
            "detail": [
                *_detail("hookInstance", row.hook_instance),
                *_detail("cardIds", ",".join(row.card_ids)),
                *_detail("inputSha256", row.input_sha256),
                *_detail("tenant", row.caller_tenant),
                *_detail("latencyMs", f"{row.latency_ms:.3f}"),
            ],
        }
    )
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": event_id,
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [
            {
                "system": "http://hl7.org/fhir/restful-interaction",
                "code": "operation",
                "display": "operation",
            },
            {"system": "urn:tonle:cds-service", "code": row.service_id},
        ],
        "action": "E",
        "recorded": row.created.isoformat(),
        "outcome": _OUTCOME[row.outcome],
        "outcomeDesc": row.outcome + (f": {row.reason}" if row.reason else ""),
        "purposeOfEvent": [{"coding": [_SYSTEM_ADMINISTRATION if operator else _TREATMENT]}],
        "agent": [
            requester,
            {
                "type": {
                    "coding": [{"system": _DCM, "code": "110152", "display": "Destination Role ID"}]
                },
                "who": {"display": "Tonle"},
                "requestor": False,
            },
        ],
        "source": {
            "observer": {"display": "Tonle"},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
        "entity": entities,
    }
    result: dict[str, Any] = _drop_none(event)
    return result


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None and v != []}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def write_ndjson(rows: Iterable[AuditRecord], path: Path) -> int:
    """Write one ``AuditEvent`` per line to ``path``; returns how many were written."""
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(audit_event(row), ensure_ascii=False, separators=(",", ":")))
            handle.write("\n")
            count += 1
    return count
