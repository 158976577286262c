"""Typed rows of the audit store: what crosses the boundary between serving and storage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "OPERATOR_SERVICES",
    "ApiKeyInfo",
    "AuditRecord",
    "ExplanationRecord",
    "FeedbackRecord",
    "ImagingResultRecord",
    "Mode",
    "Outcome",
    "OverrideReason",
]

# "read": something stored was shown again (an imaging result, its images or FHIR, an
# explanation page, a study list); "discovery": the CDS Hooks discovery document;
# "feedback": clinician feedback on cards, stored with the row (AuditRecord.feedback).
Outcome = Literal["advice", "no-advice", "refused", "error", "read", "discovery", "feedback"]
Mode = Literal["live", "silent"]

OPERATOR_SERVICES = frozenset({"metrics", "readiness-detail", "ui-monitor"})
"""The service ids of the operators' reads (``/metrics``, ``/readyz/detail``,
``/ui/monitor``): audited like every answer, but not calls of the service's users, so
monitoring leaves them out (the live answer counters, the weekly report) and the FHIR
export gives them the purpose of system administration, not treatment."""


def _now() -> datetime:
    return datetime.now(UTC)


class ExplanationRecord(BaseModel):
    """What a card's explanation page shows, kept until ``expires`` (then purged).

    ``content`` is the page's JSON (model identity, risks, the values used with their
    dates): no names and no identifiers; the audit row holds the patient reference.
    """

    model_config = ConfigDict(extra="forbid")

    card_uuid: str = Field(min_length=1, max_length=64)
    service_id: str = Field(min_length=1, max_length=128)
    created: datetime = Field(default_factory=_now)
    expires: datetime
    content: str = Field(description="JSON text of the explanation.")
    band: str | None = Field(
        default=None,
        exclude=True,
        description="The risk band the card showed (in ``content`` too), for monitoring "
        "without parsing ``content``; not stored.",
    )


class ImagingResultRecord(BaseModel):
    """A chest X-ray read as stored, committed in the transaction of its audit row.

    ``result`` and ``heatmap`` are encoded by :mod:`serving.imaging.results` in the
    layout numbered ``format``; ``tenant`` is the creating caller's ("" for none).
    ``pixels`` (format 4+) is the reader's copy of the original, inserted into
    ``imaging_pixels`` in the same transaction: kept for the site's retention only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    result_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    tenant: str = Field(max_length=128)
    patient_ref: str | None = Field(default=None, max_length=256)
    sop_instance_uid: str | None = Field(default=None, max_length=64)
    created: datetime
    format: int = Field(ge=1)
    result: str = Field(description="JSON text of the read.")
    heatmap: bytes = Field(description="What the heatmap PNGs are drawn from.")
    pixels: bytes | None = Field(
        default=None, description="The reader's copy (None: none kept); not a result column."
    )


class OverrideReason(BaseModel):
    """The coded reason a clinician gave for overriding a card."""

    model_config = ConfigDict(extra="forbid")

    system: str | None = Field(default=None, max_length=512)
    code: str | None = Field(default=None, max_length=128)
    display: str | None = Field(default=None, max_length=512)


class FeedbackRecord(BaseModel):
    """One CDS Hooks feedback entry, linked to the card and the request that made it."""

    model_config = ConfigDict(extra="forbid")

    card_uuid: str = Field(min_length=1, max_length=64)
    request_id: str | None = Field(
        default=None, max_length=64, description="Request whose response carried the card."
    )
    service_id: str = Field(min_length=1, max_length=128)
    outcome: Literal["accepted", "overridden"]
    accepted_suggestions: list[str] = Field(default_factory=list)
    override_reason: OverrideReason | None = None
    comment: str | None = Field(default=None, max_length=4000)
    outcome_timestamp: datetime | None = None
    caller_iss: str | None = Field(default=None, max_length=512)
    caller_sub: str | None = Field(default=None, max_length=512)
    caller_tenant: str | None = Field(default=None, max_length=128)
    created: datetime = Field(default_factory=_now)


class AuditRecord(BaseModel):
    """One row per request, committed before the response is sent.

    Holds no PHI beyond ``patient_ref`` (a FHIR reference such as ``Patient/123``),
    which is needed to link clinician feedback to the advice it concerns.
    """

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=64, description="Id minted by Tonle.")
    hook_instance: str | None = Field(default=None, max_length=128)
    service_id: str = Field(min_length=1, max_length=128, description="CDS service or route.")
    card_ids: list[str] = Field(default_factory=list, description="Uuids of the cards returned.")
    caller_iss: str | None = Field(default=None, max_length=512)
    caller_sub: str | None = Field(default=None, max_length=512)
    caller_tenant: str | None = Field(default=None, max_length=128)
    model_name: str | None = Field(default=None, max_length=128)
    model_version: str | None = Field(default=None, max_length=64)
    model_sha256: str | None = Field(default=None, max_length=64)
    input_sha256: str | None = Field(
        default=None, max_length=64, description="sha256 of the canonical model input."
    )
    outcome: Outcome
    reason: str | None = Field(
        default=None, max_length=512, description="Machine-readable reason code (no PHI)."
    )
    patient_ref: str | None = Field(default=None, max_length=256)
    latency_ms: float = Field(ge=0)
    created: datetime = Field(default_factory=_now)
    mode: Mode = Field(
        default="live",
        description="'silent': the service ran and stored its cards (card_ids) but the EHR "
        "got cards: [] (serving config `silent`).",
    )
    explanation: ExplanationRecord | None = Field(
        default=None,
        exclude=True,
        description="Committed with this row, in the same transaction; not an audit column.",
    )
    imaging_result: ImagingResultRecord | None = Field(
        default=None,
        exclude=True,
        description="A new chest X-ray read committed with this row; not an audit column.",
    )
    feedback: list[FeedbackRecord] = Field(
        default_factory=list,
        exclude=True,
        description="Clinician feedback committed with this row (outcome 'feedback'), in "
        "its transaction; not an audit column.",
    )


class ApiKeyInfo(BaseModel):
    """An API key as listed: never the secret, never its hash."""

    key_id: str
    tenant: str
    name: str
    created: datetime
    revoked: datetime | None = None
