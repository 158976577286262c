"""``POST /v1/imaging/studies/{study}/analyse``: analyse a study held by the PACS.

QIDO-RS finds the study's CR/DX instances (optionally one series given as
``{"series_uid": ...}`` in the JSON body), WADO-RS retrieves each, the pipeline
analyses it, and STOW-RS writes back a Comprehensive SR and a secondary-capture
heatmap per assessable image (when ``imaging.pacs.write_back``). Images the model
cannot assess are listed with their reason code; nothing is written back for them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serving.imaging.analysis import CannotAssess
from serving.imaging.dicom_out import (
    heatmap_secondary_capture,
    read_header,
    structured_report,
    to_bytes,
)
from serving.imaging.dicomweb import DicomWebClient, DicomWebError, check_uid
from serving.imaging.state import ImagingState

__all__ = ["MAX_INSTANCES", "analyse_study", "analyse_study_sync"]

logger = logging.getLogger(__name__)

MAX_INSTANCES = 8
_IMAGE_MODALITIES = {"CR", "DX"}


def analyse_study_sync(
    state: ImagingState, client: DicomWebClient, study: str, series: str | None
) -> dict[str, Any]:
    """Retrieve, analyse and write back one study (blocking; run it in a thread).

    Raises:
        DicomWebError: the PACS could not be searched or read.
    """
    instances = [
        i
        for i in client.search_instances(study, series)
        if i.modality is None or i.modality in _IMAGE_MODALITIES
    ][:MAX_INSTANCES]
    analysed: list[dict[str, Any]] = []
    for instance in instances:
        data = client.retrieve_instance(instance)
        entry: dict[str, Any] = {"series_uid": instance.series, "sop_instance_uid": instance.sop}
        try:
            result = state.analyser.analyse(data, "application/dicom")
        except CannotAssess as refusal:
            entry.update(assessable=False, reason=refusal.reason)
            analysed.append(entry)
            continue
        entry.update(assessable=True, result=result.model_dump(mode="json"))
        if state.config.pacs is not None and state.config.pacs.write_back:
            source = read_header(data)
            sr = structured_report(source, result)
            sc = heatmap_secondary_capture(source, result, state.store.heatmap(result.id))
            client.store(study, [to_bytes(sr), to_bytes(sc)])
            entry["written_back"] = {
                "sr_sop_instance_uid": str(sr.SOPInstanceUID),
                "heatmap_sop_instance_uid": str(sc.SOPInstanceUID),
            }
        analysed.append(entry)
    return {"study_uid": study, "instances": analysed}


async def analyse_study(request: Request) -> Response:
    """Analyse the CR/DX images of a PACS study and write the results back."""
    from serving.imaging.routes import _NotReady, audit_row, authenticate, imaging_state

    started = time.perf_counter()
    try:
        state = imaging_state(request)
    except _NotReady:
        return JSONResponse({"error": "imaging-unavailable"}, status_code=503)
    caller = await authenticate(state, request)
    if caller is None:
        return JSONResponse({"error": "unauthorized"}, status_code=401)
    if state.config.pacs is None:
        return JSONResponse(
            {"error": "no-pacs", "message": "imaging.pacs is not configured"}, status_code=409
        )
    raw = await request.body()
    series: str | None = None
    try:
        study = check_uid(str(request.path_params["study_uid"]), "study")
        if raw.strip():
            if len(raw) > 4096:
                raise ValueError("body too large")
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body must be an object")
            value = body.get("series_uid")
            series = check_uid(str(value), "series_uid") if value is not None else None
    except (ValueError, DicomWebError):
        return JSONResponse({"error": "invalid-request"}, status_code=400)
    client = DicomWebClient(state.config.pacs)
    request_id = uuid.uuid4().hex
    try:
        answer = await run_in_threadpool(analyse_study_sync, state, client, study, series)
    except DicomWebError as exc:
        return JSONResponse({"error": exc.reason, "request_id": request_id}, status_code=502)
    finally:
        client.close()
    if not answer["instances"]:
        return JSONResponse(
            {"error": "no-images", "message": "no CR/DX instances in that study"},
            status_code=404,
        )
    for entry in answer["instances"]:
        result = entry.get("result")
        try:
            await run_in_threadpool(
                audit_row,
                state,
                request_id=uuid.uuid4().hex,
                service_id="imaging-study",
                outcome="advice" if result else "no-advice",
                started=started,
                caller=caller,
                reason=entry.get("reason"),
                input_sha256=result["input_sha256"] if result else None,
                patient_ref=result["patient_ref"] if result else None,
            )
        except Exception:
            logger.exception("audit store unavailable; withholding study results")
            return JSONResponse({"error": "audit-unavailable"}, status_code=503)
    answer["request_id"] = request_id
    return JSONResponse(answer)
