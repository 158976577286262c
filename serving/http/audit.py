"""The one audit-row builder: the facts of a call, gathered while it is handled."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from serving.audit.records import (
    AuditRecord,
    ExplanationRecord,
    FeedbackRecord,
    ImagingResultRecord,
    Mode,
    Outcome,
)
from serving.http.caller import Caller

if TYPE_CHECKING:
    from serving.runtime import Runtime

__all__ = ["Exchange", "ModelRef", "commit"]

logger = logging.getLogger(__name__)


class ModelRef(Protocol):
    """The identity of the model that answered (``ModelMetadata`` or an imaging model)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def sha256(self) -> str: ...


@dataclass
class Exchange:
    """One call: who called, what was asked and what was answered, for its audit row.

    Attributes:
        service_id: the CDS service or route (``rest:...``) called.
        request_id: minted here, returned as ``X-Request-Id``.
        caller: set once authenticated.
        model: the model that answered or would have answered.
        mode: ``silent`` when the cards were kept from the EHR (serving config ``silent``).
        explanation: an NCD card's explanation, stored with an ``advice`` row only.
        imaging_result: a new chest X-ray read, stored with an ``advice`` row only: in
            its transaction, so a read exists exactly when its audit row does.
        feedback: clinician feedback on cards, stored with a ``feedback`` row only, in
            its transaction: feedback exists exactly when the row of its call does.
        after_advice: run once an ``advice`` row is committed (e.g. counting a new
            read's drift bins), never for a row that was not.
    """

    service_id: str
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.perf_counter)
    caller: Caller | None = None
    hook_instance: str | None = None
    patient_ref: str | None = None
    card_ids: list[str] = field(default_factory=list)
    model: ModelRef | None = None
    input_sha256: str | None = None
    explanation: ExplanationRecord | None = None
    imaging_result: ImagingResultRecord | None = None
    mode: Mode = "live"
    feedback: list[FeedbackRecord] = field(default_factory=list)
    after_advice: list[Callable[[], None]] = field(default_factory=list)

    def row(self, outcome: Outcome, reason: str | None) -> AuditRecord:
        """The audit row of this call ending in ``outcome`` (with ``reason``)."""
        caller, model = self.caller, self.model
        return AuditRecord(
            request_id=self.request_id,
            hook_instance=self.hook_instance,
            service_id=self.service_id,
            card_ids=self.card_ids,
            caller_iss=caller.iss if caller else None,
            caller_sub=caller.sub if caller else None,
            caller_tenant=caller.tenant if caller else None,
            model_name=model.name if model else None,
            model_version=model.version if model else None,
            model_sha256=model.sha256 if model else None,
            input_sha256=self.input_sha256,
            outcome=outcome,
            reason=reason[:512] if reason else None,
            patient_ref=self.patient_ref,
            latency_ms=(time.perf_counter() - self.started) * 1000.0,
            mode=self.mode,
            explanation=self.explanation if outcome == "advice" else None,
            imaging_result=self.imaging_result if outcome == "advice" else None,
            feedback=self.feedback if outcome == "feedback" else [],
        )


async def commit(runtime: Runtime, row: AuditRecord) -> bool:
    """Commit ``row`` durably; False when the store is unavailable (answer 503)."""
    if runtime.audit is None:
        return False
    try:
        await runtime.audit.record_async(row)
    except Exception:  # any storage failure: no response may leave without its row
        logger.exception("audit store unavailable; refusing to answer request %s", row.request_id)
        return False
    return True
