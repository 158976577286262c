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

Every route is a :func:`serving.http.pipeline.endpoint`: the caller is authenticated
first (API key; a signed link for the heatmap), and every answer, advice or not, leaves
after its committed audit row; a new read is stored in the same transaction as that
row (:attr:`serving.http.audit.Exchange.imaging_result`), so a failed commit (503)
leaves nothing behind. ``GET /v1/imaging/results/{id}`` (and ``/fhir``) find only reads
made by the caller's tenant (404 otherwise, the same answer as for an unknown id, and
audited as refused); every answer that shows a stored read is audited as ``read``.
"""

from __future__ import annotations

import logging
import re
import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from serving.audit.records import Outcome
from serving.http.audit import Exchange
from serving.http.caller import link_caller
from serving.http.pipeline import Answer, endpoint
from serving.imaging.analysis import CannotAssess
from serving.imaging.exchange import (
    NotReady,
    imaging_state,
    new_read,
    not_ready,
    read_body,
    shown_read,
)
from serving.imaging.results import Analysed, CxrResult
from serving.imaging.state import ImagingState
from serving.imaging.studies import analyse_study, list_studies
from serving.ui import links

__all__ = [
    "SERVICE_ID",
    "analyse_bytes",
    "analyse_image",
    "found_read",
    "get_fhir",
    "get_heatmap",
    "get_result",
    "routes",
    "store_unavailable",
]

logger = logging.getLogger(__name__)

SERVICE_ID = "imaging-cxr"
_PATIENT = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # as CDS Hooks context.patientId
NOT_FOUND = "not-found"


async def _analyse_image(request: Request, exchange: Exchange) -> Answer:
    """``POST /v1/imaging/cxr``: analyse one raw DICOM or PNG body."""
    try:
        state = imaging_state(request)
    except NotReady:
        return not_ready()
    exchange.model = state.analyser.identity
    patient = request.query_params.get("patient")
    content_type = request.headers.get("content-type", "")
    declared = request.headers.get("content-length")
    if patient is not None and not _PATIENT.match(patient):
        bad = CannotAssess("invalid-patient", "patient must be 1-64 of A-Z a-z 0-9 - .", 400)
        return _cannot_assess(exchange, bad)
    exchange.patient_ref = patient
    try:
        if declared is not None and not declared.isdigit():
            raise CannotAssess("bad-request", "Content-Length is not a number", 400)
        if declared is not None and int(declared) > state.config.max_body_bytes:
            raise CannotAssess("too-large", "the image is larger than allowed", status=413)
        body = await read_body(request, state.config.max_body_bytes)
        analysed = await analyse_bytes(state, body, content_type, patient)
    except CannotAssess as refusal:
        return _cannot_assess(exchange, refusal)
    new_read(exchange, analysed)  # stored with the row, or (503) not at all
    result = analysed.result
    heatmap_url = _heatmap_link(request, state, result)

    def committed(store_ms: float) -> Response:
        answer = result.model_dump(mode="json")
        answer["timings"]["store_ms"] = store_ms
        answer["request_id"] = exchange.request_id
        answer["heatmap_url"] = heatmap_url
        return JSONResponse(answer)

    return Answer(committed, "advice")


def _analysis_failed(exchange: Exchange) -> Answer:
    """A defect: still no advice, an audited error and a reason."""
    return _cannot_assess(exchange, CannotAssess("internal-error", "the analysis failed", 500))


analyse_image = endpoint("api-key", SERVICE_ID, _analyse_image, on_error=_analysis_failed)


def _heatmap_link(request: Request, state: ImagingState, result: CxrResult) -> str:
    """The absolute, signed heatmap URL (opened from browsers without credentials)."""
    signed = links.signer(request.app.state.runtime).sign(result.heatmap_url)
    return f"{state.public_url.rstrip('/')}{signed}"


async def analyse_bytes(
    state: ImagingState, body: bytes, content_type: str, patient: str | None
) -> Analysed:
    """Analyse one image, sending the model call through the batcher when there is one.

    Nothing is stored: put the read on the call's exchange (:func:`new_read`), which
    commits it with its audit row.

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


def _cannot_assess(exchange: Exchange, refusal: CannotAssess) -> Answer:
    """No AI read (4xx, or 5xx for a failure of ours), with its reason code."""
    body = {
        "assessable": False,
        "reason": refusal.reason,
        "detail": refusal.detail,
        "request_id": exchange.request_id,
        "advisory": "No AI read: the image cannot be assessed by this model.",
    }
    outcome: Outcome = "error" if refusal.status >= 500 else "no-advice"
    return Answer(JSONResponse(body, status_code=refusal.status), outcome, refusal.reason)


async def found_read(
    request: Request, exchange: Exchange, *, by_link: bool = False
) -> tuple[ImagingState, CxrResult] | Answer:
    """The stored read the path's ``result_id`` names, with its facts on ``exchange``
    (answer it as ``read``), or the answer without it.

    An authenticated caller finds only its tenant's reads: another tenant's read is
    ``not-found`` (404) like an unknown id. A signed link (``by_link``, checked by the
    pipeline before this lookup) names one read, whoever made it; the link's holder is
    audited under that read's tenant.
    """
    try:
        state = imaging_state(request)
    except NotReady:
        return not_ready()
    exchange.model = state.analyser.identity
    result_id = str(request.path_params["result_id"])
    try:
        if by_link:
            found = await run_in_threadpool(state.store.by_link, result_id)
            exchange.caller = link_caller(found.tenant or None)
            result = found.result
        else:
            tenant = exchange.caller.tenant if exchange.caller else None
            result = await run_in_threadpool(state.store.get, result_id, tenant=tenant)
    except KeyError:
        missing = JSONResponse({"error": NOT_FOUND}, status_code=404)
        return Answer(missing, "refused", NOT_FOUND)
    shown_read(exchange, result)
    return state, result


def store_unavailable(exchange: Exchange) -> Answer:
    """503: a stored read (or its images) could not be read; nothing is shown."""
    unavailable = JSONResponse({"error": "audit-unavailable"}, status_code=503)
    return Answer(unavailable, "error", "store-unavailable")


async def _get_result(request: Request, exchange: Exchange) -> Answer:
    """``GET /v1/imaging/results/{id}``: a stored result, with a fresh signed heatmap link."""
    found = await found_read(request, exchange)
    if isinstance(found, Answer):
        return found
    state, result = found
    body = result.model_dump(mode="json")
    body["heatmap_url"] = _heatmap_link(request, state, result)
    return Answer(JSONResponse(body), "read")


async def _get_heatmap(request: Request, exchange: Exchange) -> Answer:
    """``GET /v1/imaging/results/{id}/heatmap.png``: the overlay image.

    Opened from EHR cards in a browser (no credentials): the link must be signed
    (:mod:`serving.ui.links`); 403 / 410 otherwise, before any lookup. Drawn from the
    stored map on each request; the browser keeps it (the read never changes).
    """
    found = await found_read(request, exchange, by_link=True)
    if isinstance(found, Answer):
        return found
    state, result = found
    png = await run_in_threadpool(state.store.heatmap, result.id)
    headers = {"cache-control": "private, max-age=3600", "etag": f'"{result.id}"'}
    return Answer(Response(png, media_type="image/png", headers=headers), "read")


async def _get_fhir(request: Request, exchange: Exchange) -> Answer:
    """``GET /v1/imaging/results/{id}/fhir``: DiagnosticReport + Observations bundle."""
    from serving.imaging.fhir import result_bundle

    found = await found_read(request, exchange)
    if isinstance(found, Answer):
        return found
    state, result = found
    signed = links.signer(request.app.state.runtime).sign(result.heatmap_url)
    bundle = result_bundle(result.model_copy(update={"heatmap_url": signed}), state.public_url)
    fhir = Response(bundle.model_dump_json(), media_type="application/fhir+json")
    return Answer(fhir, "read")


get_result = endpoint("api-key", "imaging-result", _get_result, on_error=store_unavailable)
get_heatmap = endpoint("link", "imaging-heatmap", _get_heatmap, on_error=store_unavailable)
get_fhir = endpoint("api-key", "imaging-result-fhir", _get_fhir, on_error=store_unavailable)


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
