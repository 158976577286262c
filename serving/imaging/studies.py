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
makes the study change again.

Both routes are :func:`serving.http.pipeline.endpoint` s (API key): the call itself
has one audit row (``imaging-study`` / ``imaging-studies``), committed before the
answer. Each image of a study also has its own row (``imaging-study-instance``:
``advice``, ``no-advice`` or ``read``), committed by
:func:`serving.http.pipeline.record_now` as soon as it is analysed, with its new read
in the same transaction, before anything about it leaves the service (the write-back
to the PACS included).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from serving.audit.records import Outcome
from serving.http.audit import Exchange
from serving.http.caller import Caller
from serving.http.identify import runtime_of
from serving.http.pipeline import Answer, endpoint, record_now
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
    imaging_state,
    new_read,
    not_ready,
    read_body,
    shown_read,
)
from serving.imaging.results import Analysed, CxrResult
from serving.imaging.state import ImagingState
from serving.ui import links

if TYPE_CHECKING:
    from serving.runtime import Runtime

__all__ = [
    "INSTANCE_SERVICE_ID",
    "MAX_INSTANCES",
    "analyse_study",
    "analyse_study_sync",
    "list_studies",
    "orthanc_on_stable_study_lua",
]

logger = logging.getLogger(__name__)

MAX_INSTANCES = 8
INSTANCE_SERVICE_ID = "imaging-study-instance"
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
    runtime: Runtime, caller: Caller, study: str, series: str | None
) -> tuple[int, dict[str, Any]]:
    """The whole study analysis, each image audited (blocking); returns (HTTP status,
    JSON body).

    Raises:
        DicomWebError: the PACS could not be searched, read or written.
        Exception: an image's audit row could not be committed (nothing more is done).
    """
    state = runtime.imaging
    assert state is not None
    assert state.config.pacs is not None

    def audit(entry: dict[str, Any], read: Analysed | None) -> None:
        exchange = Exchange(INSTANCE_SERVICE_ID, caller=caller, model=state.analyser.identity)
        result = entry.get("result")
        if read is not None:
            new_read(exchange, read)
        elif result is not None:
            shown_read(exchange, CxrResult.model_validate(result))
        outcome: Outcome = "read" if entry.get("repeat") else "advice" if result else "no-advice"
        record_now(runtime, exchange, outcome, entry.get("reason"))

    client = DicomWebClient(state.config.pacs)
    try:
        answer = analyse_study_sync(state, client, study, series, audit, caller.tenant)
    finally:
        client.close()
    if not answer["instances"]:
        return 404, {"error": "no-images", "message": "no CR/DX instances in that study"}
    return 200, answer


def _study_outcome(status: int, answer: dict[str, Any]) -> tuple[Outcome, str | None]:
    """The study call's own outcome: ``advice`` when an image got a new read, ``read``
    when it showed only stored ones, else ``no-advice`` with why."""
    if status != 200:
        return "no-advice", str(answer.get("error"))
    entries = answer["instances"]
    if any(e.get("assessable") and not e.get("repeat") for e in entries):
        return "advice", None
    if any(e.get("repeat") for e in entries):
        return "read", None
    return "no-advice", "not-assessable"


async def _analyse_study(request: Request, exchange: Exchange) -> Answer:
    """Analyse the CR/DX images of a PACS study and write the results back.

    With ``Prefer: respond-async`` (RFC 7240) the answer is ``202 Accepted`` at once
    and the work runs after the response: a PACS calling from its own event hook
    (Orthanc's Lua ``OnStableStudy``) must not wait on requests back to itself. Each
    image is then audited when it is analysed, as in a synchronous call.
    """
    try:
        state = imaging_state(request)
    except NotReady:
        return not_ready()
    exchange.model = state.analyser.identity
    if state.config.pacs is None:
        body = {"error": "no-pacs", "message": "imaging.pacs is not configured"}
        return Answer(JSONResponse(body, status_code=409), "refused", "no-pacs")
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
        return Answer(JSONResponse({"error": "too-large"}, status_code=413), "refused", "too-large")
    except (ValueError, DicomWebError):
        invalid = JSONResponse({"error": "invalid-request"}, status_code=400)
        return Answer(invalid, "refused", "invalid-request")
    runtime, caller = runtime_of(request), exchange.caller
    assert caller is not None
    if "respond-async" in request.headers.get("prefer", "").lower():

        async def later() -> None:
            try:
                status, _ = await run_in_threadpool(_run_study, runtime, caller, study, series)
            except Exception:
                logger.exception("background study analysis failed; no advice")
                return
            logger.info("background study analysis finished with status %d", status)

        accepted = JSONResponse(
            {"status": "accepted", "study_uid": study, "request_id": exchange.request_id},
            status_code=202,
            background=BackgroundTask(later),
        )
        return Answer(accepted, "no-advice", "accepted")
    try:
        status, answer = await run_in_threadpool(_run_study, runtime, caller, study, series)
    except DicomWebError as exc:
        failed = JSONResponse({"error": exc.reason, "request_id": exchange.request_id}, 502)
        return Answer(failed, "error", exc.reason)
    signer = links.signer(runtime)
    for entry in answer.get("instances", []):
        if "result" in entry:  # browsers open it without credentials: a signed link
            path = entry["result"]["heatmap_url"]
            entry["result"]["heatmap_url"] = f"{state.public_url.rstrip('/')}{signer.sign(path)}"
    answer["request_id"] = exchange.request_id
    outcome, reason = _study_outcome(status, answer)
    return Answer(JSONResponse(answer, status_code=status), outcome, reason)


def _study_failed(exchange: Exchange) -> Answer:
    """An image's audit row or its analysis failed: 503, no advice (each image already
    answered was audited; nothing unaudited was stored or written back)."""
    body = {"error": "audit-or-analysis-unavailable", "request_id": exchange.request_id}
    return Answer(JSONResponse(body, status_code=503), "error", "audit-or-analysis-unavailable")


analyse_study = endpoint("api-key", "imaging-study", _analyse_study, on_error=_study_failed)

_PATIENT_ID = re.compile(r"^[A-Za-z0-9\-._^]{1,64}$")


def _list_sync(state: ImagingState, tenant: str | None, patient: str) -> list[dict[str, Any]]:
    """The patient's PACS studies with ``tenant``'s reads of them."""
    assert state.config.pacs is not None
    client = DicomWebClient(state.config.pacs)
    try:
        found = client.search_studies(PatientID=patient, includefield="00080061")
    finally:
        client.close()
    reads = state.store.for_patient(patient, tenant=tenant)
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
    return sorted(studies, key=lambda s: s["study_date"] or "", reverse=True)


async def _list_studies(request: Request, exchange: Exchange) -> Answer:
    """``GET /v1/imaging/studies?patient=ID``: the patient's studies in the PACS (QIDO-RS),
    with the id of the read the caller's tenant had made of each one it analysed
    (audited as ``read``)."""
    try:
        state = imaging_state(request)
    except NotReady:
        return not_ready()
    exchange.model = state.analyser.identity
    if state.config.pacs is None:
        return Answer(JSONResponse({"error": "no-pacs"}, status_code=409), "refused", "no-pacs")
    patient = request.query_params.get("patient", "")
    if not _PATIENT_ID.match(patient):
        invalid = JSONResponse({"error": "invalid-request", "field": "patient"}, status_code=400)
        return Answer(invalid, "refused", "invalid-request")
    exchange.patient_ref = patient
    tenant = exchange.caller.tenant if exchange.caller else None
    try:
        studies = await run_in_threadpool(_list_sync, state, tenant, patient)
    except DicomWebError as exc:
        return Answer(JSONResponse({"error": exc.reason}, status_code=502), "error", exc.reason)
    return Answer(JSONResponse({"studies": studies}), "read")


def _list_failed(exchange: Exchange) -> Answer:
    unavailable = JSONResponse({"error": "audit-unavailable"}, status_code=503)
    return Answer(unavailable, "error", "store-unavailable")


list_studies = endpoint("api-key", "imaging-studies", _list_studies, on_error=_list_failed)


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
