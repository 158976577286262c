"""``POST /v1/imaging/studies/{study}/analyse``: analyse a study held by the PACS.

QIDO-RS finds the study's CR/DX instances (optionally one series given as
``{"series_uid": ...}`` in the JSON body), WADO-RS retrieves each, the pipeline
analyses it, and STOW-RS writes back a Comprehensive SR and a secondary-capture
heatmap per assessable image (when ``imaging.pacs.write_back``). Images the model
cannot assess are listed with their reason code; nothing is written back for them.

Idempotent per instance and tenant: an instance the caller's tenant already had
analysed is answered from the store (with an audit row of its own, outcome ``read``)
and not written back again. This matters because the PACS calls this route when a
study becomes stable (:func:`orthanc_on_stable_study_lua`), and our own write-back
makes the study change again. A new read is stored in the transaction of its audit
row, before anything about it leaves the service.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.background import BackgroundTask
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
from serving.imaging.dicomweb import DicomWebClient, DicomWebError, check_uid, tag_value
from serving.imaging.exchange import (
    NotReady,
    audit_row,
    authenticate,
    caller_tenant,
    imaging_state,
    read_body,
)
from serving.imaging.results import Analysed
from serving.imaging.state import ImagingState
from serving.ui import links

__all__ = [
    "MAX_INSTANCES",
    "analyse_study",
    "analyse_study_sync",
    "list_studies",
    "orthanc_on_stable_study_lua",
]

logger = logging.getLogger(__name__)

MAX_INSTANCES = 8
_IMAGE_MODALITIES = {"CR", "DX"}


# audit(entry, analysed): commit the entry's audit row, with its new read if any.
StudyAudit = Callable[[dict[str, Any], Analysed | None], None]


def analyse_study_sync(
    state: ImagingState,
    client: DicomWebClient,
    study: str,
    series: str | None,
    audit: StudyAudit,
    tenant: str | None,
) -> dict[str, Any]:
    """Retrieve, analyse and write back one study for ``tenant`` (blocking; run it in a thread).

    ``audit`` is called with each entry (and a new read, which it stores) before
    anything about it leaves the service, the write-back to the PACS included; if it
    raises, nothing more is done.

    Raises:
        DicomWebError: the PACS could not be searched, read or written.
    """
    instances = [
        i
        for i in client.search_instances(study, series)
        if i.modality is None or i.modality in _IMAGE_MODALITIES
    ][:MAX_INSTANCES]
    analysed: list[dict[str, Any]] = []
    for instance in instances:
        entry: dict[str, Any] = {"series_uid": instance.series, "sop_instance_uid": instance.sop}
        previous = state.store.for_instance(instance.sop, tenant=tenant)
        if previous is not None:  # stored with its audit row and written back then
            entry.update(assessable=True, result=previous.model_dump(mode="json"), repeat=True)
            audit(entry, None)
            analysed.append(entry)
            continue
        data = client.retrieve_instance(instance)
        try:
            read = state.analyser.analyse(data, "application/dicom")
        except CannotAssess as refusal:
            entry.update(assessable=False, reason=refusal.reason)
            audit(entry, None)
            analysed.append(entry)
            continue
        entry.update(assessable=True, result=read.result.model_dump(mode="json"))
        audit(entry, read)
        if state.config.pacs is not None and state.config.pacs.write_back:
            source = read_header(data)
            sr = structured_report(source, read.result)
            sc = heatmap_secondary_capture(source, read.result, read.heatmap.overlay_png())
            client.store(study, [to_bytes(sr), to_bytes(sc)])
            entry["written_back"] = {
                "sr_sop_instance_uid": str(sr.SOPInstanceUID),
                "heatmap_sop_instance_uid": str(sc.SOPInstanceUID),
            }
        analysed.append(entry)
    return {"study_uid": study, "instances": analysed}


def _run_study(
    state: ImagingState, caller: Any, study: str, series: str | None, started: float
) -> tuple[int, dict[str, Any]]:
    """The whole study analysis with auditing; returns (HTTP status, JSON body)."""
    assert state.config.pacs is not None
    request_id = uuid.uuid4().hex

    def audit(entry: dict[str, Any], read: Analysed | None) -> None:
        result = entry.get("result")
        outcome = "read" if entry.get("repeat") else "advice" if result else "no-advice"
        audit_row(
            state,
            request_id=uuid.uuid4().hex,
            service_id="imaging-study",
            outcome=outcome,
            started=started,
            caller=caller,
            reason=entry.get("reason"),
            analysed=read,
            input_sha256=result["input_sha256"] if result else None,
            patient_ref=result["patient_ref"] if result else None,
        )

    client = DicomWebClient(state.config.pacs)
    try:
        answer = analyse_study_sync(state, client, study, series, audit, caller_tenant(caller))
    except DicomWebError as exc:
        return 502, {"error": exc.reason, "request_id": request_id}
    except Exception:
        logger.exception("study analysis failed; no advice")
        return 503, {"error": "audit-or-analysis-unavailable", "request_id": request_id}
    finally:
        client.close()
    if not answer["instances"]:
        return 404, {"error": "no-images", "message": "no CR/DX instances in that study"}
    answer["request_id"] = request_id
    return 200, answer


async def analyse_study(request: Request) -> Response:
    """Analyse the CR/DX images of a PACS study and write the results back.

    With ``Prefer: respond-async`` (RFC 7240) the answer is ``202 Accepted`` at once
    and the work runs after the response: a PACS calling from its own event hook
    (Orthanc's Lua ``OnStableStudy``) must not wait on requests back to itself.
    """
    started = time.perf_counter()
    try:
        state = imaging_state(request)
    except NotReady:
        return JSONResponse({"error": "imaging-unavailable"}, status_code=503)
    caller = await authenticate(state, request)
    if isinstance(caller, Response):
        return caller
    if state.config.pacs is None:
        return JSONResponse(
            {"error": "no-pacs", "message": "imaging.pacs is not configured"}, status_code=409
        )
    series: str | None = None
    try:
        raw = await read_body(request, 4096)
        study = check_uid(str(request.path_params["study_uid"]), "study")
        if raw.strip():
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body must be an object")
            value = body.get("series_uid")
            series = check_uid(str(value), "series_uid") if value is not None else None
    except CannotAssess:
        return JSONResponse({"error": "too-large"}, status_code=413)
    except (ValueError, DicomWebError):
        return JSONResponse({"error": "invalid-request"}, status_code=400)
    if "respond-async" in request.headers.get("prefer", "").lower():

        async def later() -> None:
            status, _ = await run_in_threadpool(_run_study, state, caller, study, series, started)
            logger.info("background study analysis finished with status %d", status)

        return JSONResponse(
            {"status": "accepted", "study_uid": study},
            status_code=202,
            background=BackgroundTask(later),
        )
    status, answer = await run_in_threadpool(_run_study, state, caller, study, series, started)
    signer = links.signer(request.app.state.runtime)
    for entry in answer.get("instances", []):
        if "result" in entry:  # browsers open it without credentials: a signed link
            path = entry["result"]["heatmap_url"]
            entry["result"]["heatmap_url"] = f"{state.public_url.rstrip('/')}{signer.sign(path)}"
    return JSONResponse(answer, status_code=status)


_PATIENT_ID = re.compile(r"^[A-Za-z0-9\-._^]{1,64}$")


def _list_sync(
    state: ImagingState, caller: Any, patient: str, started: float
) -> list[dict[str, Any]]:
    """The patient's PACS studies with the caller's tenant's reads, after the audit row."""
    assert state.config.pacs is not None
    client = DicomWebClient(state.config.pacs)
    try:
        found = client.search_studies(PatientID=patient, includefield="00080061")
    finally:
        client.close()
    reads = state.store.for_patient(patient, tenant=caller_tenant(caller))
    analysed = {r.study.study_uid: r for r in reversed(reads)}  # the newest read wins
    studies: list[dict[str, Any]] = []
    for item in found:
        uid = tag_value(item, "0020000D")
        if not uid:
            continue
        modalities = [str(m) for m in item.get("00080061", {}).get("Value", [])]
        read = analysed.get(uid)
        studies.append(
            {
                "study_uid": uid,
                "study_date": tag_value(item, "00080020"),
                "modalities": modalities,
                "chest_xray": bool({"CR", "DX"} & set(modalities)),
                "result_id": read.id if read else None,
                "flagged": read.flagged if read else None,
            }
        )
    audit_row(
        state,
        request_id=uuid.uuid4().hex,
        service_id="imaging-studies",
        outcome="read",
        started=started,
        caller=caller,
        patient_ref=patient,
    )
    return sorted(studies, key=lambda s: s["study_date"] or "", reverse=True)


async def list_studies(request: Request) -> Response:
    """``GET /v1/imaging/studies?patient=ID``: the patient's studies in the PACS (QIDO-RS),
    with the id of the read the caller's tenant had made of each one it analysed."""
    started = time.perf_counter()
    try:
        state = imaging_state(request)
    except NotReady:
        return JSONResponse({"error": "imaging-unavailable"}, status_code=503)
    caller = await authenticate(state, request)
    if isinstance(caller, Response):
        return caller
    if state.config.pacs is None:
        return JSONResponse({"error": "no-pacs"}, status_code=409)
    patient = request.query_params.get("patient", "")
    if not _PATIENT_ID.match(patient):
        return JSONResponse({"error": "invalid-request", "field": "patient"}, status_code=400)
    try:
        studies = await run_in_threadpool(_list_sync, state, caller, patient, started)
    except DicomWebError as exc:
        return JSONResponse({"error": exc.reason}, status_code=502)
    except Exception:
        logger.exception("audit store unavailable; withholding a study list")
        return JSONResponse({"error": "audit-unavailable"}, status_code=503)
    return JSONResponse({"studies": studies})


def orthanc_on_stable_study_lua(service_url: str, api_key_env: str = "TONLE_API_KEY") -> str:
    """An Orthanc Lua script that asks Tonle to analyse each study once it is stable.

    Install it with Orthanc's ``LuaScripts`` option (and a ``StableAge`` of a few
    seconds), so studies are analysed when they arrive and the ``cxr-triage`` CDS
    service has a read to show. The API key comes from the environment variable
    ``api_key_env`` of the Orthanc process, never from the script.

    Args:
        service_url: Tonle's base URL as seen from the PACS.
        api_key_env: environment variable holding Tonle's API key.
    """
    base = json.dumps(service_url.rstrip("/") + "/v1/imaging/studies/")
    return f"""-- Written by Tonle (serving.imaging.studies): analyse chest X-rays on arrival.
function OnStableStudy(studyId, tags, metadata)
  local uid = tags['StudyInstanceUID']
  if uid == nil or not string.match(uid, '^[0-9.]+$') then
    return
  end
  local headers = {{
    ['Content-Type'] = 'application/json',
    ['Prefer'] = 'respond-async',
    ['X-API-Key'] = os.getenv({json.dumps(api_key_env)}) or ''
  }}
  local ok = pcall(HttpPost, {base} .. uid .. '/analyse', '{{}}', headers)
  if not ok then
    print('Tonle analysis request failed for study ' .. studyId)
  end
end
"""
