"""Typed CDS Hooks 2.0 payloads: requests, cards, responses and feedback.

Requests tolerate unknown keys (CDS Hooks 1.0 clients and EHR extensions send them);
what we emit is built from these models only, never ad-hoc dicts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "Action",
    "Card",
    "CdsRequest",
    "CdsResponse",
    "CdsService",
    "Coding",
    "Discovery",
    "FeedbackItem",
    "FeedbackRequest",
    "FhirAuthorization",
    "Link",
    "OverrideReason",
    "PatientViewContext",
    "Source",
    "Suggestion",
]

SUMMARY_MAX = 139  # the spec: "<140 characters"


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FhirAuthorization(_In):
    """OAuth 2.0 token the EHR lends us to read its FHIR server. Never logged."""

    access_token: str = Field(min_length=1, max_length=8192, repr=False)
    token_type: Literal["Bearer", "bearer"]
    expires_in: int = Field(ge=0)
    scope: str = Field(max_length=4096)
    subject: str = Field(max_length=1024)
    patient: str | None = Field(default=None, max_length=256)


class PatientViewContext(_In):
    """``patient-view`` context."""

    # Required by CDS Hooks 2.0; 1.0 clients sent a top-level ``user`` instead.
    userId: str | None = Field(default=None, min_length=1, max_length=256)
    patientId: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9\-.]{1,64}$")
    encounterId: str | None = Field(
        default=None, max_length=64, pattern=r"^[A-Za-z0-9\-.]{1,64}$"
    )  # a FHIR id: it goes into the Encounter reference we write


class CdsRequest(_In):
    """A CDS Hooks service call."""

    hook: str = Field(min_length=1, max_length=64)
    user: str | None = Field(default=None, max_length=256, description="CDS Hooks 1.0.")
    hookInstance: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9\-]{1,64}$")
    fhirServer: str | None = Field(default=None, max_length=2048)
    fhirAuthorization: FhirAuthorization | None = None
    context: PatientViewContext
    prefetch: dict[str, dict[str, Any] | None] = Field(default_factory=dict)

    @field_validator("prefetch")
    @classmethod
    def _few_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > 32:
            raise ValueError(f"prefetch has {len(value)} keys; at most 32 are accepted")
        return value


class Coding(_Out):
    """A FHIR Coding."""

    system: str
    code: str
    display: str | None = None


class OverrideReason(_Out):
    """``overrideReasons`` entries are Codings."""

    system: str
    code: str
    display: str


class Source(_Out):
    """Who produced the card."""

    label: str
    url: str | None = None
    topic: Coding | None = None


class Action(_Out):
    """A suggestion's action."""

    type: Literal["create", "update", "delete"]
    description: str
    resource: dict[str, Any] | None = None
    resourceId: str | None = None


class Suggestion(_Out):
    """A suggestion the clinician may accept."""

    label: str
    uuid: str
    isRecommended: bool = False
    actions: list[Action] = Field(default_factory=list)


class Link(_Out):
    """A link shown on the card."""

    label: str
    url: str
    type: Literal["absolute", "smart"] = "absolute"
    appContext: str | None = None


class Card(_Out):
    """A CDS Hooks card."""

    uuid: str
    summary: str = Field(max_length=SUMMARY_MAX)
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] = Field(default_factory=list)
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[OverrideReason] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list)


class CdsResponse(_Out):
    """The answer to a service call; ``cards: []`` means no advice."""

    cards: list[Card] = Field(default_factory=list)
    systemActions: list[Action] = Field(default_factory=list)


class CdsService(_Out):
    """One entry of the discovery document."""

    hook: str
    id: str
    title: str
    description: str
    prefetch: dict[str, str]
    usageRequirements: str | None = None


class Discovery(_Out):
    """``GET /cds-services``."""

    services: list[CdsService]


class _OverrideIn(_In):
    reason: dict[str, Any] | None = None
    userComment: str | None = Field(default=None, max_length=2000)


class _Accepted(_In):
    id: str = Field(max_length=64)


class FeedbackItem(_In):
    """One card's outcome, as the EHR reports it."""

    card: str = Field(min_length=1, max_length=64)
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[_Accepted] = Field(default_factory=list, max_length=16)
    overrideReason: _OverrideIn | None = None
    outcomeTimestamp: str = Field(max_length=64)


class FeedbackRequest(_In):
    """``POST /cds-services/{id}/feedback``."""

    feedback: list[FeedbackItem] = Field(min_length=1, max_length=32)
