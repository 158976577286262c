"""What the imaging routes and the PACS study routes share: finding the imaging state,
authenticating the caller, reading the body with a limit, and committing the audit row
of each answer (a new read in the same transaction) before it is sent.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serving.imaging.analysis import CannotAssess
from serving.imaging.results import Analysed, CxrResult
from serving.imaging.state import ImagingState

__all__ = [
    "LinkHolder",
    "NotReady",
    "audit_row",
    "authenticate",
    "caller_tenant",
    "imaging_state",
    "not_ready",
    "read_body",
    "refuse",
]

logger = logging.getLogger(__name__)


class NotReady(Exception):
    """No chest X-ray model is configured, or it is not loaded yet."""


def imaging_state(request: Request) -> ImagingState:
    """The imaging state of the running app.

    Raises:
        NotReady: no CXR model is configured or it is not loaded.
    """
    runtime = getattr(request.app.state, "runtime", None)
    state = getattr(runtime, "imaging", None)
    if not isinstance(state, ImagingState) or not state.warmed:
        raise NotReady
    return state


def not_ready() -> JSONResponse:
    """503: the imaging service cannot answer yet."""
    return JSONResponse(
        {"error": "imaging-unavailable", "message": "no chest X-ray model is loaded"},
        status_code=503,
    )


async def authenticate(state: ImagingState, request: Request) -> Any | Response:
    """The REST caller (API key; :mod:`serving.http.identify`), or the refusal to send:
    the one 401 body, or 503 when the key store cannot be reached (decided in one place,
    :func:`serving.http.identify.refusal`; counted, no audit row)."""
    from serving.auth import AuthError
    from serving.http.identify import api_key_caller, refusal
    from serving.http.pipeline import route_of

    try:
        return api_key_caller(state.authenticator, request, dev=state.dev)
    except AuthError as exc:
        return refusal(exc, route_of(request))


def _caller_field(caller: Any, name: str) -> str | None:
    value = caller.get(name) if isinstance(caller, dict) else getattr(caller, name, None)
    return None if value is None else str(value)


def caller_tenant(caller: Any) -> str | None:
    """The tenant of an authenticated caller (None when it has none)."""
    return _caller_field(caller, "tenant")


@dataclass(frozen=True)
class LinkHolder:
    """Whoever opens a signed link: it was minted for a read of ``tenant``."""

    tenant: str
    iss: str = "signed-link"
    sub: str | None = None


def audit_row(
    state: ImagingState,
    *,
    request_id: str,
    service_id: str,
    outcome: str,
    started: float,
    caller: Any,
    reason: str | None = None,
    result: CxrResult | None = None,
    analysed: Analysed | None = None,
    input_sha256: str | None = None,
    patient_ref: str | None = None,
    hook_instance: str | None = None,
    card_ids: list[str] | None = None,
) -> None:
    """Commit one audit row (C4) for a request and count its outcome (``/metrics``);
    raises if the store cannot commit it.

    ``analysed``: a new read, stored for the caller's tenant in the same transaction
    (it then also stands for ``result``). ``result``: a stored read the answer shows.
    """
    from serving.audit.records import AuditRecord
    from serving.metrics import count_outcome, observe_answer, observe_read

    if analysed is not None:
        result = analysed.result
    identity = result.model if result is not None else state.analyser.identity

    tenant = caller_tenant(caller)
    try:
        row = AuditRecord(
            request_id=request_id,
            hook_instance=hook_instance,
            service_id=service_id,
            card_ids=card_ids or [],
            caller_iss=_caller_field(caller, "iss"),
            caller_sub=_caller_field(caller, "sub"),
            caller_tenant=tenant,
            model_name=identity.name,
            model_version=identity.version,
            model_sha256=identity.sha256,
            input_sha256=result.input_sha256 if result else input_sha256,
            outcome=outcome,  # type: ignore[arg-type]
            reason=reason,
            patient_ref=(result.patient_ref if result else patient_ref),
            latency_ms=(time.perf_counter() - started) * 1000,
            imaging_result=(None if analysed is None else state.store.record(analysed, tenant)),
        )
        state.audit.record(row)
    except Exception:
        count_outcome(service_id, "error", "audit-unavailable")
        raise
    count_outcome(service_id, outcome, reason)
    observe_answer(row)
    if analysed is not None and analysed.monitored:
        observe_read(service_id, state.analyser.reference, analysed.monitored)


async def refuse(
    state: ImagingState,
    service_id: str,
    started: float,
    status: int,
    body: dict[str, Any],
    caller: Any = None,
    hook_instance: str | None = None,
    *,
    outcome: str = "refused",
    reason: str | None = None,
    patient_ref: str | None = None,
    request_id: str | None = None,
) -> Response:
    """A 4xx/5xx answer without advice, after its audit row (outcome ``refused`` and
    reason ``body["error"]`` unless given); 503 when that row cannot be committed."""
    request_id = request_id or uuid.uuid4().hex
    try:
        await run_in_threadpool(
            audit_row,
            state,
            request_id=request_id,
            service_id=service_id,
            outcome=outcome,
            started=started,
            caller=caller,
            reason=reason or body["error"],
            patient_ref=patient_ref,
            hook_instance=hook_instance,
        )
    except Exception:
        logger.exception("audit store unavailable for a refused %s call", service_id)
        return JSONResponse({"error": "audit-unavailable"}, status_code=503)
    return JSONResponse(body, status_code=status, headers={"x-request-id": request_id})


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it grows past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise CannotAssess("too-large", "the image is larger than allowed", status=413)
        chunks.append(chunk)
    return b"".join(chunks)
