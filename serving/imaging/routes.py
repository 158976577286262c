"""HTTP routes for chest X-ray analysis (contract C5: ``routes() -> list[BaseRoute]``).

``POST /v1/imaging/cxr`` takes the raw image as the body (``application/dicom`` or
``image/png``; raw rather than multipart, which costs 20-30 ms per docs/performance.md).
Answers:

* 200 with a :class:`~serving.imaging.results.CxrResult` (``assessable: true``).
* 422 ``{"assessable": false, "reason": code, "detail": ...}`` when the image is not
  what the model was built for or cannot be read (quality-gate reason codes).
  A 4xx rather than a 200 so that no client can mistake it for a read.
* 415 unsupported media type or compressed without a decoder; 413 too large.
* 401 without valid credentials; 503 when the audit row could not be committed
  (no advice leaves without its audit row).

Every answer, advice or not, writes one audit row first; a new read is stored in the
same transaction as its audit row (:mod:`serving.imaging.results`), so a failed commit
leaves nothing behind. ``GET /v1/imaging/results/{id}`` (and ``/fhir``) find only reads
made by the caller's tenant (404 otherwise, as for an unknown id); every read that
returns a stored result commits an audit row with outcome ``read`` first.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from serving.imaging.analysis import CannotAssess
from serving.imaging.exchange import (
    LinkHolder,
    NotReady,
    audit_row,
    authenticate,
    caller_tenant,
    imaging_state,
    not_ready,
    read_body,
    refuse,
)
from serving.imaging.results import Analysed, CxrResult, StoredResult
from serving.imaging.state import ImagingState
from serving.imaging.studies import analyse_study, list_studies
from serving.ui import links

__all__ = ["SERVICE_ID", "link_check", "routes", "stored_read"]

logger = logging.getLogger(__name__)

SERVICE_ID = "imaging-cxr"
_PATIENT = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # as CDS Hooks context.patientId


async def analyse_image(request: Request) -> Response:
    """``POST /v1/imaging/cxr``: analyse one raw DICOM or PNG body."""
    started = time.perf_counter()
    try:
        state = imaging_state(request)
    except NotReady:
        return not_ready()
    caller = await authenticate(state, request)
    if isinstance(caller, Response):
        return caller
    request_id = uuid.uuid4().hex
    patient = request.query_params.get("patient")
    content_type = request.headers.get("content-type", "")
    declared = request.headers.get("content-length")
    if patient is not None and not _PATIENT.match(patient):
        bad = CannotAssess("invalid-patient", "patient must be 1-64 of A-Z a-z 0-9 - .", 400)
        return await _refused(state, bad, request_id, started, caller, None)
    try:
        if declared is not None and not declared.isdigit():
            raise CannotAssess("bad-request", "Content-Length is not a number", 400)
        if declared is not None and int(declared) > state.config.max_body_bytes:
            raise CannotAssess("too-large", "the image is larger than allowed", status=413)
        body = await read_body(request, state.config.max_body_bytes)
        analysed = await analyse_bytes(state, body, content_type, patient)
    except CannotAssess as refusal:
        return await _refused(state, refusal, request_id, started, caller, patient)
    except Exception:  # a defect: still no advice, an audit row and a reason
        logger.exception("imaging request %s failed", request_id)
        failure = CannotAssess("internal-error", "the analysis failed", 500)
        return await _refused(state, failure, request_id, started, caller, patient)
    committing = time.perf_counter()
    try:
        await run_in_threadpool(
            audit_row,
            state,
            request_id=request_id,
            service_id=SERVICE_ID,
            outcome="advice",
            started=started,
            caller=caller,
            analysed=analysed,
        )
    except Exception:
        # The read was in the same transaction: nothing is stored, nothing shown later.
        logger.exception("audit store unavailable; withholding result %s", analysed.result.id)
        return JSONResponse({"error": "audit-unavailable"}, status_code=503)
    result = analysed.result
    body_json = result.model_dump(mode="json")
    body_json["timings"]["store_ms"] = (time.perf_counter() - committing) * 1000
    body_json["request_id"] = request_id
    body_json["heatmap_url"] = _heatmap_link(request, state, result)
    return JSONResponse(body_json, headers={"x-request-id": request_id})


def _heatmap_link(request: Request, state: ImagingState, result: CxrResult) -> str:
    """The absolute, signed heatmap URL (opened from browsers without credentials)."""
    signed = links.signer(request.app.state.runtime).sign(result.heatmap_url)
    return f"{state.public_url.rstrip('/')}{signed}"


async def analyse_bytes(
    state: ImagingState, body: bytes, content_type: str, patient: str | None
) -> Analysed:
    """Analyse one image, sending the model call through the batcher when there is one.

    Nothing is stored: commit the read with its audit row (``audit_row(analysed=...)``).

    Raises:
        CannotAssess: the image cannot be assessed.
    """
    analyser = state.analyser
    if state.infer is None:
        return await run_in_threadpool(analyser.analyse, body, content_type, patient)
    prepared = await run_in_threadpool(analyser.prepare, body, content_type, patient)
    t0 = time.perf_counter()
    out = await state.infer(prepared.model_input[None, ...])
    model_ms = (time.perf_counter() - t0) * 1000
    return await run_in_threadpool(
        analyser.finish, prepared, out.probs[0], out.cams[0], model_ms, out.batch_size
    )


async def _refused(
    state: ImagingState,
    refusal: CannotAssess,
    request_id: str,
    started: float,
    caller: Any,
    patient: str | None,
) -> Response:
    body = {
        "assessable": False,
        "reason": refusal.reason,
        "detail": refusal.detail,
        "request_id": request_id,
        "advisory": "No AI read: the image cannot be assessed by this model.",
    }
    outcome = "error" if refusal.status >= 500 else "no-advice"
    return await refuse(
        state, SERVICE_ID, started, refusal.status, body, caller,
        outcome=outcome, reason=refusal.reason, patient_ref=patient, request_id=request_id,
    )  # fmt: skip


Check = Callable[[ImagingState, Request], Awaitable[Response | Any]]


async def stored_read(
    request: Request, check: Check, service_id: str
) -> tuple[ImagingState, StoredResult] | Response:
    """The requested read, after ``check`` let the request through, with its audit row.

    ``check`` answers a refusal, or the caller (whose tenant scopes the lookup) or
    None for a signed link (which names one read). Refusing first (401 / 403 / 410)
    means a caller without access learns nothing about which result ids exist; another
    tenant's read is answered 404 like an unknown id. The ``read`` audit row is
    committed before the read is returned (503 when it cannot be).
    """
    started = time.perf_counter()
    try:
        state = imaging_state(request)
    except NotReady:
        return not_ready()
    caller = await check(state, request)
    if isinstance(caller, Response):
        return caller
    result_id = str(request.path_params["result_id"])
    try:
        if caller is None:
            found = await run_in_threadpool(state.store.by_link, result_id)
            caller = LinkHolder(found.tenant)
        else:
            tenant = caller_tenant(caller)
            result = await run_in_threadpool(state.store.get, result_id, tenant=tenant)
            found = StoredResult(tenant or "", result)
        await run_in_threadpool(
            audit_row,
            state,
            request_id=uuid.uuid4().hex,
            service_id=service_id,
            outcome="read",
            started=started,
            caller=caller,
            result=found.result,
        )
    except KeyError:
        return JSONResponse({"error": "not-found"}, status_code=404)
    except Exception:  # the audit store (or the result store in it) is unavailable
        logger.exception("audit store unavailable; withholding a stored read")
        return JSONResponse({"error": "audit-unavailable"}, status_code=503)
    return state, found


async def _caller_check(state: ImagingState, request: Request) -> Response | Any:
    return await authenticate(state, request)


async def link_check(state: ImagingState, request: Request) -> Response | None:
    """None when the request carries a valid signed link, else its refusal."""
    verdict = await run_in_threadpool(links.verdict, request)
    return None if verdict == "ok" else links.refusal(verdict)


async def get_result(request: Request) -> Response:
    """``GET /v1/imaging/results/{id}``: a stored result, with a fresh signed heatmap link."""
    found = await stored_read(request, _caller_check, "imaging-result")
    if isinstance(found, Response):
        return found
    state, stored = found
    body = stored.result.model_dump(mode="json")
    body["heatmap_url"] = _heatmap_link(request, state, stored.result)
    return JSONResponse(body)


async def get_heatmap(request: Request) -> Response:
    """``GET /v1/imaging/results/{id}/heatmap.png``: the overlay image.

    Opened from EHR cards in a browser (no credentials): the link must be signed
    (:mod:`serving.ui.links`); 403 / 410 otherwise, before any lookup. Drawn from the
    stored map on each request; the browser keeps it (the read never changes).
    """
    found = await stored_read(request, link_check, "imaging-heatmap")
    if isinstance(found, Response):
        return found
    state, stored = found
    try:
        png = await run_in_threadpool(state.store.heatmap, stored.result.id)
    except Exception:
        logger.exception("stored heatmap of a read could not be drawn")
        return JSONResponse({"error": "audit-unavailable"}, status_code=503)
    return Response(
        png,
        media_type="image/png",
        headers={"cache-control": "private, max-age=3600", "etag": f'"{stored.result.id}"'},
    )


async def get_fhir(request: Request) -> Response:
    """``GET /v1/imaging/results/{id}/fhir``: DiagnosticReport + Observations bundle."""
    from serving.imaging.fhir import result_bundle

    found = await stored_read(request, _caller_check, "imaging-result-fhir")
    if isinstance(found, Response):
        return found
    state, stored = found
    result = stored.result
    signed = links.signer(request.app.state.runtime).sign(result.heatmap_url)
    bundle = result_bundle(result.model_copy(update={"heatmap_url": signed}), state.public_url)
    return Response(bundle.model_dump_json(), media_type="application/fhir+json")


def routes() -> list[BaseRoute]:
    """The imaging routes, for ``create_app()``."""
    return [
        Route("/v1/imaging/cxr", analyse_image, methods=["POST"]),
        Route("/v1/imaging/results/{result_id}", get_result, methods=["GET"]),
        Route("/v1/imaging/results/{result_id}/heatmap.png", get_heatmap, methods=["GET"]),
        Route("/v1/imaging/results/{result_id}/fhir", get_fhir, methods=["GET"]),
        Route("/v1/imaging/studies", list_studies, methods=["GET"]),
        Route("/v1/imaging/studies/{study_uid}/analyse", analyse_study, methods=["POST"]),
    ]
